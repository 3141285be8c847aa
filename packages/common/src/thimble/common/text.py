"""Text from outside (a request, a record, a file) made safe to show in a message, an answer or a log."""

from __future__ import annotations

# What a terminal would act on rather than show: C0 and C1 controls (line breaks, escape sequences), DEL,
# line and paragraph separators, and the bidi marks, embeddings, overrides and isolates that reorder a line.
TERMINAL_CONTROLS: tuple[int, ...] = (
    *range(0x20),
    0x7F,
    *range(0x80, 0xA0),
    0x061C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)
_ESCAPED = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in TERMINAL_CONTROLS}
_ESCAPED |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
_ESCAPED_KEEP_LINES = {c: v for c, v in _ESCAPED.items() if c != ord("\n")}


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every character a terminal acts on written as an escape (``\\n``, ``\\x1b``,
    ``\\u202e``), so it can neither forge a line nor rewrite the screen; ``keep_newlines`` keeps ``\\n``."""
    return text.translate(_ESCAPED_KEEP_LINES if keep_newlines else _ESCAPED)


def cut(text: str, limit: int = 60, *, count: bool = False) -> str:
    """``text`` on one line, cut after ``limit`` characters and escaped (:func:`escape_controls`); short
    plain text comes back unchanged.

    The one rule for outside text shown cut: the cut ends ``…``, and with ``count`` it also says how much
    was left out (``… (12000 more characters)``), for long text such as an error's message, where the
    size is part of the story; names and keys are cut with ``…`` alone.
    """
    if len(text) <= limit:
        return escape_controls(text)
    rest = f" ({len(text) - limit} more characters)" if count else ""
    return escape_controls(text[:limit]) + "…" + rest

"""Outside text shown in messages: one line, nothing a terminal acts on, cut; config and validation problems use it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from thimble.common import ConfigError, Section, ThimbleSettings, load_settings
from thimble.common.text import TERMINAL_CONTROLS, cut, escape_controls
from thimble.common.validation import validation_problems

pytestmark = pytest.mark.unit

HOSTILE = "a\nb\r\x1b[31m\u202eevil\u2028\x9b\x00"


@given(st.text())
def test_escaped_text_holds_nothing_a_terminal_acts_on(text: str) -> None:
    shown = escape_controls(text)
    assert not any(ord(c) in TERMINAL_CONTROLS for c in shown)
    assert escape_controls(text, keep_newlines=True).count("\n") == text.count("\n")


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Zl", "Zp"))))
def test_plain_text_is_shown_as_it_is(text: str) -> None:
    assert escape_controls(text) == text
    assert cut(text, len(text)) == text


def test_cut_names_what_it_cut() -> None:
    assert cut("x" * 1000, 10) == "x" * 10 + "…"
    assert cut("x" * 1000, 10, count=True) == "x" * 10 + "… (990 more characters)"
    assert cut("x" * 10, 10, count=True) == "x" * 10
    assert cut(HOSTILE, 100) == "a\\nb\\r\\x1b[31m\\u202eevil\\u2028\\x9b\\x00"
    assert cut(HOSTILE, 3, count=True) == "a\\nb… (14 more characters)"  # cut first, then escaped


@given(st.text(), st.integers(0, 50), st.booleans())
def test_cut_text_is_one_safe_line_that_keeps_its_start(text: str, limit: int, count: bool) -> None:
    shown = cut(text, limit, count=count)
    assert not any(ord(c) in TERMINAL_CONTROLS for c in shown)
    assert shown.startswith(escape_controls(text[:limit]))
    assert shown.endswith("…" if not count else " more characters)") or len(text) <= limit


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: float

    @field_validator("amount")
    @classmethod
    def positive(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be positive, got {value} " + "x" * 10_000 + HOSTILE)
        return value


def test_validation_problems_cut_the_keys_and_messages_that_came_from_outside() -> None:
    with pytest.raises(ValidationError) as caught:
        Row.model_validate({"amount": -1, "k" * 100_000 + HOSTILE: 1})
    problems = validation_problems(caught.value, Row)
    assert len(problems) == 2
    for problem in problems:
        assert len(problem) < 500
        assert not any(ord(c) in TERMINAL_CONTROLS for c in problem)
    assert problems[0].startswith("amount: must be positive, got -1.0 ")
    assert problems[1].endswith("…: unknown key")


def test_a_config_file_with_a_hostile_key_is_one_short_line(tmp_path: Path) -> None:
    class Settings(ThimbleSettings):
        app: Section = Section()

    config = tmp_path / "thimble.yaml"
    config.write_text(f'app:\n  "{"k" * 50_000}\\e[2J\\u202e": 1\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(Settings, config_file=config)
    message = str(caught.value)
    assert str(config) in message
    assert len(message) < 1_000
    assert "\x1b" not in message
    assert "\u202e" not in message

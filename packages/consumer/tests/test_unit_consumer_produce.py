"""``produce`` reads its lines before it touches the broker: JSON lines, or bytes as they are with --raw."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from thimble.consumer.cli import app as cli
from thimble.consumer.cli import records_from_lines
from thimble.consumer.errors import ConsumerError

pytestmark = pytest.mark.unit


def test_json_lines_are_checked_and_keyed() -> None:
    data = b'{"id": 7, "x": 1}\n\n  \n{"id": 8}\r\n'
    assert records_from_lines(data, key_field="id") == [(b"7", b'{"id": 7, "x": 1}'), (b"8", b'{"id": 8}')]
    with pytest.raises(ConsumerError, match=r"line 2: not valid JSON .*pass --raw"):
        records_from_lines(b'{"id": 1}\n{truncated\n')


def test_raw_lines_are_sent_as_they_are() -> None:
    data = b'{truncated\n\xff\xfe\n"text"\n'
    assert records_from_lines(data, raw=True) == [
        (None, b"{truncated"),
        (None, b"\xff\xfe"),
        (None, b'"text"'),
    ]


def test_raw_and_a_key_field_do_not_mix() -> None:
    result = CliRunner().invoke(cli, ["produce", "t", "--raw", "--key-field", "id"])
    assert result.exit_code == 2  # a usage error
    assert "--key-field reads a JSON field; it cannot be used with --raw" in result.output


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b'{"id": null}', "null"),
        (b'{"id": true}', "a bool"),
        (b'{"id": {"a": 1}}', "an object"),
        (b'{"id": [1]}', "an array"),
    ],
)
def test_a_key_field_that_is_not_a_string_or_a_number_is_refused_naming_its_line(
    line: bytes, kind: str
) -> None:
    with pytest.raises(
        ConsumerError, match=f"line 2: key field 'id' is {kind}; a key is a string or a number"
    ):
        records_from_lines(b'{"id": "c1"}\n' + line, key_field="id")
    assert records_from_lines(b'{"id": "c1"}\n{"id": 1.5}', key_field="id") == [
        (b"c1", b'{"id": "c1"}'),
        (b"1.5", b'{"id": 1.5}'),
    ]

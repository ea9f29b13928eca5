"""Go-style duration parsing and formatting (pure logic, no Consul)."""

from __future__ import annotations

import math

import pytest

from locksmith._durations import format_duration, from_nanoseconds, parse_duration, to_seconds
from locksmith._exceptions import ValidationError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("1h", 3600.0),
        ("1h2m3s", 3723.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("-1s", -1.0),
        ("+2s", 2.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("100us", 1e-4),
        ("100µs", 1e-4),
        ("100μs", 1e-4),
        ("10ns", 1e-8),
        (" 24h ", 86400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert math.isclose(parse_duration(text), seconds, rel_tol=1e-12, abs_tol=1e-15)


@pytest.mark.parametrize("text", ["", "15", "s", "1d", "1.5.5s", "abc", "1s2", "--1s", "1 s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_duration(text, field="ttl")
    assert info.value.field == "ttl"
    assert str(info.value).startswith("ttl:")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0, "0s"),
        (15, "15s"),
        (90, "90s"),
        (86400, "86400s"),
        (1.5, "1500ms"),
        (0.25, "250ms"),
        (1e-4, "100us"),
        (1.5e-8, "15ns"),
        (-1, "-1s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.001, 0.5, 1, 10, 59.999, 61.25, 3600, 86400, 1e-9])
def test_format_parse_round_trip(seconds: float) -> None:
    assert math.isclose(parse_duration(format_duration(seconds)), seconds, rel_tol=1e-12)


def test_from_nanoseconds() -> None:
    assert from_nanoseconds(15_000_000_000) == 15.0
    assert from_nanoseconds(0) == 0.0
    assert from_nanoseconds(1.5e10) == 15.0
    assert from_nanoseconds("15s") == 15.0
    assert from_nanoseconds("") == 0.0


@pytest.mark.parametrize("value", [None, True, [1], {"a": 1}])
def test_from_nanoseconds_rejects(value: object) -> None:
    with pytest.raises(ValidationError, match="LockDelay"):
        from_nanoseconds(value, field="LockDelay")


def test_to_seconds() -> None:
    assert to_seconds(10) == 10.0
    assert to_seconds(2.5) == 2.5
    assert to_seconds("1m") == 60.0


@pytest.mark.parametrize("value", [True, None, b"10s", float("inf"), float("nan"), "1x"])
def test_to_seconds_rejects(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        to_seconds(value, field="wait")  # type: ignore[arg-type]
    assert info.value.field == "wait"

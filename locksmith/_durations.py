"""Go-style durations: parse ``"1m30s"``/``"250ms"``, format seconds back, read nanoseconds.

Consul speaks Go's ``time.Duration``: strings like ``"15s"`` in requests and either
strings (``TTL``) or integer nanoseconds (``LockDelay``) in responses. locksmith keeps
durations as float seconds everywhere and converts only at the wire.
"""

from __future__ import annotations

import math
import re

from locksmith._exceptions import ValidationError

__all__ = ["Duration", "format_duration", "from_nanoseconds", "parse_duration", "to_seconds"]

#: What locksmith accepts wherever a duration is expected: seconds as a number, or a Go string.
Duration = float | int | str

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts both micro signs
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str, *, field: str = "duration") -> float:
    """Parse a Go duration string into seconds.

    Args:
        text: For example ``"15s"``, ``"1m30s"``, ``"250ms"``, ``"1h"``, ``"0"``, ``"-1s"``.
        field: The name reported in a :class:`ValidationError`.

    Returns:
        The duration in seconds.

    Raises:
        ValidationError: The string is not a Go duration (e.g. ``"15"``, a missing unit).
    """
    s = text.strip()
    if not s:
        raise ValidationError(field, "empty duration string")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValidationError(
                field,
                f"invalid duration {text!r}: expected a number with a unit "
                "(ns, us, ms, s, m, h), e.g. '15s' or '1m30s'",
            )
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValidationError(field, f"invalid duration {text!r}")
    return sign * total


def to_seconds(value: Duration, *, field: str = "duration") -> float:
    """Accept seconds (int/float) or a Go duration string and return float seconds.

    Raises:
        ValidationError: Not a number or a duration string, or not finite.
    """
    if isinstance(value, bool):
        raise ValidationError(field, f"expected seconds or a duration string, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_duration(value, field=field)
    else:
        raise ValidationError(
            field, f"expected seconds or a duration string, got {type(value).__name__}"
        )
    if not math.isfinite(seconds):
        raise ValidationError(field, f"duration must be finite, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Format seconds as the shortest exact Go duration string.

    Whole seconds become ``"90s"`` style strings (Consul's own form), fractions use ``ms``
    or smaller units: ``1.5`` -> ``"1500ms"``, ``0`` -> ``"0s"``.
    """
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    ns = round(abs(seconds) * 1e9)
    for unit, size in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns % size == 0:
            return f"{sign}{ns // size}{unit}"
    return f"{sign}{ns}ns"


def from_nanoseconds(value: object, *, field: str = "duration") -> float:
    """Convert a duration as Consul returns it (integer nanoseconds, or a string) to seconds.

    Raises:
        ValidationError: The value is neither a number nor a duration string.
    """
    if isinstance(value, bool) or value is None:
        raise ValidationError(field, f"expected nanoseconds, got {value!r}")
    if isinstance(value, int | float):
        return float(value) / 1e9
    if isinstance(value, str):
        return parse_duration(value, field=field) if value else 0.0
    raise ValidationError(field, f"expected nanoseconds, got {type(value).__name__}")

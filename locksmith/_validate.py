"""Input validation shared by the client, the manager and the CLI.

Every check runs before any request is sent and raises :class:`ValidationError` naming
the field and what is allowed. The ranges are the ones a Consul server enforces
(see ``docs/concepts.md``), checked here so that a mistake never costs a round trip or
leaves half-made state behind.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Literal

from locksmith._durations import Duration, format_duration, to_seconds
from locksmith._exceptions import ValidationError

__all__ = [
    "MAX_TXN_BODY_BYTES",
    "MAX_TXN_VALUE_BYTES",
    "MAX_VALUE_BYTES",
    "Behavior",
    "Consistency",
    "check_behavior",
    "check_callback",
    "check_checks",
    "check_consistency",
    "check_index",
    "check_key",
    "check_lock_delay",
    "check_name",
    "check_path_segment",
    "check_prefix",
    "check_session_id",
    "check_timeout",
    "check_ttl",
    "check_txn_value",
    "check_value",
    "check_wait",
]

Behavior = Literal["release", "delete"]
Consistency = Literal["default", "consistent", "stale"]

#: Consul's limit on a KV value (``kv_max_value_size`` default).
MAX_VALUE_BYTES = 512 * 1024
#: Consul's limit on a ``/v1/txn`` request body (``txn_max_req_len`` default). Measured on
#: 1.8.7: the limit is on the whole body, not per value: a body of 524288 bytes passes (also
#: when padded with spaces), 524289 bytes answer 413 "Request body(524289 bytes) too large".
MAX_TXN_BODY_BYTES = 512 * 1024
#: Consul 1.8's limit on the operations of one ``/v1/txn``.
MAX_TXN_OPS = 64
#: The largest value a one-operation txn ``lock`` (``kv.lock``) carries whatever the key and
#: flags. Values travel base64-encoded (4 bytes per 3) in a body limited to
#: MAX_TXN_BODY_BYTES, next to the JSON-escaped key, the flags and the session. Measured on
#: 1.8.7 with locksmith's encoding: key ``k`` and flags 0 take at most 393129 bytes (body
#: 524286; 393130 answer 413); the longest legal key (4096 UTF-8 bytes of 2-byte characters,
#: 12288 bytes once escaped as ``\uXXXX``) with flags 2**64-1 leaves exactly 383901 bytes (body
#: 524288 accepted; 383902 make 524292: 413). Each further operation of a txn takes more.
MAX_TXN_VALUE_BYTES = 383_901
MIN_TTL = 10.0
MAX_TTL = 86400.0
MAX_LOCK_DELAY = 60.0
MAX_WAIT = 600.0

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def check_ttl(value: Duration | None, field: str = "ttl") -> float | None:
    """Return the TTL in seconds, or None for "no TTL" (``None``, ``0``, ``"0s"``).

    Raises:
        ValidationError: Outside 10s..86400s.
    """
    if value is None:
        return None
    seconds = to_seconds(value, field=field)
    if seconds == 0:
        return None
    if not MIN_TTL <= seconds <= MAX_TTL:
        raise ValidationError(
            field,
            f"{_show(value)} is out of range: a session TTL must be 0 (none) or between "
            "10s and 86400s",
        )
    return seconds


def check_lock_delay(value: Duration, field: str = "lock_delay") -> float:
    """Return the lock-delay in seconds (0 allowed and sent as a real 0).

    Raises:
        ValidationError: Negative or above 60s (Consul silently caps above 60s).
    """
    seconds = to_seconds(value, field=field)
    if not 0 <= seconds <= MAX_LOCK_DELAY:
        raise ValidationError(
            field, f"{_show(value)} is out of range: lock-delay must be between 0s and 60s"
        )
    return seconds


def check_behavior(value: object, field: str = "behavior") -> Behavior:
    """Return ``"release"`` or ``"delete"`` (exactly; Consul is case-sensitive)."""
    if value not in ("release", "delete"):
        raise ValidationError(field, f"must be 'release' or 'delete', got {value!r}")
    return value


def check_consistency(value: object, field: str = "consistency") -> Consistency:
    """Return a consistency mode: ``"default"``, ``"consistent"`` or ``"stale"``."""
    if value not in ("default", "consistent", "stale"):
        raise ValidationError(field, f"must be 'default', 'consistent' or 'stale', got {value!r}")
    return value


def check_session_id(value: object, field: str = "session_id") -> str:
    """Return a UUID-shaped session ID."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, f"must be a non-empty session ID string, got {value!r}")
    if not _UUID.match(value):
        raise ValidationError(
            field, f"{value!r} is not a session ID (expected a 36-character UUID)"
        )
    return value


def check_name(value: object, field: str) -> str:
    """Return a non-empty string without control characters (node, check, dc names)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, f"must be a non-empty string, got {value!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(field, f"{value!r} contains control characters")
    return value


def check_path_segment(value: object, field: str) -> str:
    """Return a name that goes into a URL path as one segment (a node name): no ``/``."""
    name = check_name(value, field)
    if "/" in name:
        raise ValidationError(field, f"{name!r} must not contain '/'")
    return name


def check_checks(values: Iterable[str] | None, field: str) -> tuple[str, ...] | None:
    """Return health-check IDs as a tuple (None stays None: the server default)."""
    if values is None:
        return None
    if isinstance(values, str | bytes):
        raise ValidationError(field, "must be a list of check IDs, not a single string")
    return tuple(check_name(v, f"{field}[{i}]") for i, v in enumerate(values))


def check_key(value: object, field: str = "key") -> str:
    """Return a KV key that Consul's HTTP API can address.

    A key is a non-empty string of at most 4096 UTF-8 bytes without control characters or
    a leading ``/``, and without ``.`` or ``..`` segments or empty segments (``a//b``):
    Consul's HTTP router redirects such paths (HTTP 301) instead of serving them. A trailing
    ``/`` (``dir/``) is legal; dots inside a segment (``.a``, ``a.``, ``a..b``) are too.
    """
    if not isinstance(value, str) or not value:
        raise ValidationError(field, f"must be a non-empty string, got {value!r}")
    if value.startswith("/"):
        raise ValidationError(field, f"{value!r} must not start with '/'")
    _check_path(value, field)
    if len(value.encode("utf-8")) > 4096:
        raise ValidationError(field, "is longer than 4096 bytes")
    return value


def check_prefix(value: object, field: str = "prefix") -> str:
    """Return a KV prefix (``""`` for every key), with the rules of :func:`check_key`."""
    if not isinstance(value, str) or value.startswith("/"):
        raise ValidationError(field, f"must be a string not starting with '/', got {value!r}")
    if value:
        _check_path(value, field)
    return value


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _check_path(value: str, field: str) -> None:
    """Refuse control characters and the segments Consul's HTTP router redirects (301)."""
    if _CONTROL.search(value):
        raise ValidationError(field, f"{value!r} contains control characters")
    if "//" not in value and "." not in value and not value.startswith("/"):
        return  # (the common case: no empty, "." or ".." segment is possible)
    segments = value.split("/")
    if segments[-1] == "" and len(segments) > 1:
        segments.pop()  # "dir/": a trailing slash is part of a legal key
    for segment in segments:
        if segment in {"", ".", ".."}:
            shown = "an empty segment ('//')" if not segment else f"a {segment!r} segment"
            raise ValidationError(
                field,
                f"{value!r} has {shown}: Consul's HTTP API redirects such paths (HTTP 301) "
                "instead of serving the key",
            )


def check_value(value: object, field: str = "value") -> bytes:
    """Return a KV value as bytes (str is UTF-8 encoded), at most 512 KiB."""
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        raise ValidationError(field, f"must be bytes or str, got {type(value).__name__}")
    if len(data) > MAX_VALUE_BYTES:
        raise ValidationError(
            field, f"is {len(data)} bytes; Consul accepts at most {MAX_VALUE_BYTES} (512 KiB)"
        )
    return data


def check_txn_value(value: object, field: str = "value") -> bytes:
    """Return a value that a one-operation transaction (``kv.lock``) can carry.

    Like :func:`check_value`, but at most :data:`MAX_TXN_VALUE_BYTES`: in ``/v1/txn`` the
    value travels base64-encoded in a body Consul limits to 512 KiB.
    """
    data = check_value(value, field)
    if len(data) > MAX_TXN_VALUE_BYTES:
        raise ValidationError(
            field,
            f"is {len(data)} bytes; a value written in a transaction (a lock acquire) may be "
            f"at most {MAX_TXN_VALUE_BYTES} bytes (MAX_TXN_VALUE_BYTES: Consul limits the "
            "transaction body to 512 KiB and values travel base64-encoded)",
        )
    return data


def check_wait(value: Duration | None, field: str = "wait") -> float | None:
    """Return a blocking-query wait in seconds (0 < wait <= 600s), or None."""
    if value is None:
        return None
    seconds = to_seconds(value, field=field)
    if not 0 < seconds <= MAX_WAIT:
        raise ValidationError(field, f"{_show(value)} is out of range: must be in (0s, 600s]")
    return seconds


def check_index(value: object, field: str = "index") -> int | None:
    """Return a blocking-query index (an int >= 0), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(field, f"must be an integer >= 0, got {value!r}")
    return value


def check_timeout(value: object, field: str = "timeout") -> float | None:
    """Return a timeout in seconds (>= 0; inf allowed), or None for "no timeout"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, f"must be seconds or None, got {value!r}")
    if math.isnan(value) or value < 0:
        raise ValidationError(field, f"must be >= 0, got {value!r}")
    return float(value)


def check_callback(value: object, field: str = "callback") -> None:
    """Raise unless ``value`` is callable."""
    if not callable(value):
        raise ValidationError(field, f"must be callable, got {value!r}")


def _show(value: Duration) -> str:
    return repr(value) if isinstance(value, str) else format_duration(float(value))

"""Input validation: each bad input names its field and range, before any request."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from locksmith._client import Consul, ServiceCheck
from locksmith._exceptions import ConfigurationError, LocksmithError, ValidationError
from locksmith._validate import (
    MAX_TXN_BODY_BYTES,
    MAX_TXN_VALUE_BYTES,
    MAX_VALUE_BYTES,
    check_behavior,
    check_checks,
    check_consistency,
    check_index,
    check_key,
    check_lock_delay,
    check_name,
    check_path_segment,
    check_prefix,
    check_session_id,
    check_ttl,
    check_txn_value,
    check_value,
    check_wait,
)

SID = "adf4238a-882b-9ddc-4a9d-5b6758e4159e"


# -- the check functions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), (0, None), ("0s", None), ("0", None), (10, 10.0), ("10s", 10.0),
     ("1m", 60.0), (86400, 86400.0), ("24h", 86400.0), (10.5, 10.5)],
)  # fmt: skip
def test_ttl_accepted(value: Any, seconds: float | None) -> None:
    assert check_ttl(value) == seconds


@pytest.mark.parametrize("value", [9.999, "9s", 1, "86401s", "25h", -10, "-10s"])
def test_ttl_out_of_range(value: Any) -> None:
    with pytest.raises(ValidationError, match=r"ttl: .*10s and 86400s") as info:
        check_ttl(value)
    assert info.value.field == "ttl"


@pytest.mark.parametrize("value", ["15", "ten", True, [10]])
def test_ttl_malformed(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        check_ttl(value)
    assert info.value.field == "ttl"


@pytest.mark.parametrize(
    ("value", "seconds"), [(0, 0.0), ("0s", 0.0), (15, 15.0), ("250ms", 0.25), ("60s", 60.0)]
)
def test_lock_delay_accepted(value: Any, seconds: float) -> None:
    assert check_lock_delay(value) == seconds


@pytest.mark.parametrize("value", [-1, "-1s", 60.001, "61s", "2m"])
def test_lock_delay_out_of_range(value: Any) -> None:
    with pytest.raises(ValidationError, match=r"lock_delay: .*between 0s and 60s") as info:
        check_lock_delay(value)
    assert info.value.field == "lock_delay"


def test_behavior() -> None:
    assert check_behavior("release") == "release"
    assert check_behavior("delete") == "delete"
    for bad in ("Delete", "RELEASE", "", None, "destroy"):
        with pytest.raises(ValidationError, match=r"behavior: must be 'release' or 'delete'"):
            check_behavior(bad)


def test_consistency() -> None:
    for mode in ("default", "consistent", "stale"):
        assert check_consistency(mode) == mode
    with pytest.raises(ValidationError, match=r"consistency: must be 'default', 'consistent'"):
        check_consistency("leader")


@pytest.mark.parametrize("value", [SID, SID.upper()])
def test_session_id_accepted(value: str) -> None:
    assert check_session_id(value) == value


@pytest.mark.parametrize(
    "value", ["", None, 42, "not-a-uuid", SID[:-1], SID + "0", SID.replace("-", ""), "g" * 36]
)
def test_session_id_rejected(value: Any) -> None:
    with pytest.raises(ValidationError, match="session_id") as info:
        check_session_id(value)
    assert info.value.field == "session_id"


@pytest.mark.parametrize("value", ["", "   ", None, 3, "a\nb", "a\x7fb"])
def test_name_rejected(value: Any) -> None:
    with pytest.raises(ValidationError, match=r"^name: "):
        check_name(value, "name")


def test_path_segment() -> None:
    assert check_path_segment("node-1", "node") == "node-1"
    with pytest.raises(ValidationError, match=r"node: .*'/'"):
        check_path_segment("a/b", "node")


def test_checks() -> None:
    assert check_checks(None, "checks") is None
    assert check_checks([], "checks") == ()
    assert check_checks(["a", "b"], "checks") == ("a", "b")
    with pytest.raises(ValidationError, match="not a single string"):
        check_checks("serfHealth", "checks")
    with pytest.raises(ValidationError, match=r"^node_checks\[1\]: "):
        check_checks(["ok", ""], "node_checks")


@pytest.mark.parametrize("value", ["", None, "/lead", "a\x00b", "x" * 4097])
def test_key_rejected(value: Any) -> None:
    with pytest.raises(ValidationError, match=r"^key: "):
        check_key(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [("a//b", "an empty segment"), ("a//", "an empty segment"), ("a/./b", "a '.' segment"),
     (".", "a '.' segment"), ("./a", "a '.' segment"), ("a/.", "a '.' segment"),
     ("a/../b", "a '..' segment"), ("..", "a '..' segment"), ("a/..", "a '..' segment"),
     ("../a", "a '..' segment"), ("a/b/../", "a '..' segment")],
)  # fmt: skip
def test_key_with_a_segment_consul_redirects(value: str, why: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_key(value)
    assert info.value.field == "key"
    assert str(info.value).startswith(f"key: {value!r} has {why}")
    assert "HTTP 301" in str(info.value)


@pytest.mark.parametrize(
    "value", [".a", "a.", "a..b", "...", "a/.../b", "dir/", "a/b/", ".hidden/x", "a.b/c..d/e."]
)
def test_key_with_dots_inside_segments_is_legal(value: str) -> None:
    assert check_key(value) == value


def test_prefix() -> None:
    for ok in ("", "a", "a/", "a/.b", "x."):
        assert check_prefix(ok) == ok
    for bad in ("/a", "a//", "a/./", "a/../", 5):
        with pytest.raises(ValidationError, match=r"^prefix: "):
            check_prefix(bad)
    with pytest.raises(ValidationError, match=r"^key: "):
        check_prefix("a//", "key")


def test_txn_value_limit() -> None:
    assert len(check_txn_value(b"x" * MAX_TXN_VALUE_BYTES)) == MAX_TXN_VALUE_BYTES
    assert check_txn_value("é") == "é".encode()
    with pytest.raises(
        ValidationError,
        match=rf"value: is {MAX_TXN_VALUE_BYTES + 1} bytes; .*at most {MAX_TXN_VALUE_BYTES} bytes",
    ):
        check_txn_value(b"x" * (MAX_TXN_VALUE_BYTES + 1))
    with pytest.raises(ValidationError, match="value: must be bytes or str"):
        check_txn_value(12)


def test_txn_value_limit_is_what_the_longest_lock_op_leaves() -> None:
    """The constant follows from the body limit and kv.lock's encoding of its worst case."""
    op = {
        "KV": {
            "Verb": "lock",
            "Key": "é" * 2048,  # 4096 UTF-8 bytes, 6 bytes of JSON each
            "Value": "",
            "Flags": 2**64 - 1,
            "Session": SID,
        }
    }
    overhead = len(json.dumps([op]))
    assert MAX_TXN_BODY_BYTES == 512 * 1024
    assert (MAX_TXN_BODY_BYTES - overhead) // 4 * 3 == MAX_TXN_VALUE_BYTES


def test_value() -> None:
    assert check_value("é") == "é".encode()
    assert check_value(bytearray(b"ab")) == b"ab"
    assert len(check_value(b"x" * MAX_VALUE_BYTES)) == MAX_VALUE_BYTES
    with pytest.raises(ValidationError, match=r"value: is 524289 bytes; .*512 KiB"):
        check_value(b"x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(ValidationError, match="value: must be bytes or str"):
        check_value(12)


def test_wait() -> None:
    assert check_wait(None) is None
    assert check_wait("1s") == 1.0
    assert check_wait(600) == 600.0
    for bad in (0, -1, "601s", "11m"):
        with pytest.raises(ValidationError, match=r"wait: .*\(0s, 600s\]"):
            check_wait(bad)


def test_index() -> None:
    assert check_index(None) is None
    assert check_index(0) == 0
    assert check_index(7) == 7
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValidationError, match="index: must be an integer >= 0"):
            check_index(bad)


def test_validation_error_is_a_configuration_and_value_error() -> None:
    err = ValidationError("ttl", "bad")
    assert isinstance(err, ConfigurationError)
    assert isinstance(err, ValueError)
    assert isinstance(err, LocksmithError)
    assert err.field == "ttl"


# -- the client validates before sending anything -------------------------------------------


@pytest.fixture
def offline() -> Iterator[Consul]:
    """A client aimed at a bound, non-listening port: any request would fail to connect.

    A ValidationError (instead of ConsulUnavailable) proves the input was refused first.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        with Consul(f"127.0.0.1:{port}", timeout=2) as consul:
            yield consul
    finally:
        sock.close()


CLIENT_CASES: list[tuple[str, Callable[[Consul], object], str]] = [
    ("ttl-low", lambda c: c.sessions.create(ttl="5s"), "ttl"),
    ("ttl-high", lambda c: c.sessions.create(ttl=86401), "ttl"),
    ("ttl-unitless", lambda c: c.sessions.create(ttl="15"), "ttl"),
    ("lock-delay-high", lambda c: c.sessions.create(lock_delay="61s"), "lock_delay"),
    ("lock-delay-negative", lambda c: c.sessions.create(lock_delay=-1), "lock_delay"),
    ("behavior", lambda c: c.sessions.create(behavior="Delete"), "behavior"),  # type: ignore[arg-type]
    ("name-empty", lambda c: c.sessions.create(name=""), "name"),
    ("node-empty", lambda c: c.sessions.create(node=""), "node"),
    ("checks-string", lambda c: c.sessions.create(checks="serfHealth"), "checks"),
    ("node-checks-empty-id", lambda c: c.sessions.create(node_checks=[""]), "node_checks[0]"),
    ("service-checks-string", lambda c: c.sessions.create(service_checks="x"), "service_checks"),
    (
        "service-check-empty-id",
        lambda c: c.sessions.create(service_checks=[ServiceCheck(id="")]),
        "service_checks[0]",
    ),
    ("dc-empty", lambda c: c.sessions.create(dc=""), "dc"),
    ("destroy-empty", lambda c: c.sessions.destroy(""), "session_id"),
    ("destroy-not-uuid", lambda c: c.sessions.destroy("abc"), "session_id"),
    ("renew-not-uuid", lambda c: c.sessions.renew("abc"), "session_id"),
    ("info-not-uuid", lambda c: c.sessions.info("abc"), "session_id"),
    ("info-index", lambda c: c.sessions.info(SID, index=-1), "index"),
    ("info-wait", lambda c: c.sessions.info(SID, index=1, wait="11m"), "wait"),
    ("info-consistency", lambda c: c.sessions.info(SID, consistency="x"), "consistency"),  # type: ignore[arg-type]
    ("list-wait", lambda c: c.sessions.list(index=1, wait=0), "wait"),
    ("list-consistency", lambda c: c.sessions.list(consistency="y"), "consistency"),  # type: ignore[arg-type]
    ("node-empty-read", lambda c: c.sessions.node(""), "node"),
    ("node-slash", lambda c: c.sessions.node("a/b"), "node"),
    ("node-index", lambda c: c.sessions.node("n", index="5"), "index"),  # type: ignore[arg-type]
    ("kv-get-key", lambda c: c.kv.get("/abs"), "key"),
    ("kv-list-prefix", lambda c: c.kv.list("/abs"), "prefix"),
    ("kv-put-big", lambda c: c.kv.put("k", b"x" * (MAX_VALUE_BYTES + 1)), "value"),
    ("kv-put-flags", lambda c: c.kv.put("k", flags=-1), "flags"),
    ("kv-put-flags-big", lambda c: c.kv.put("k", flags=2**64), "flags"),
    ("kv-put-acquire", lambda c: c.kv.put("k", acquire="nope"), "acquire"),
    ("kv-put-release", lambda c: c.kv.put("k", release=""), "release"),
    ("kv-put-cas", lambda c: c.kv.put("k", cas=-1), "cas"),
    ("kv-put-acquire-cas", lambda c: c.kv.put("k", acquire=SID, cas=0), "cas+acquire"),
    ("kv-put-acq-rel", lambda c: c.kv.put("k", acquire=SID, release=SID), "acquire+release"),
    ("kv-delete-key", lambda c: c.kv.delete(""), "key"),
    ("kv-delete-prefix", lambda c: c.kv.delete("/x", recurse=True), "key"),
    ("kv-lock-big", lambda c: c.kv.lock("k", b"x" * (MAX_VALUE_BYTES + 1), SID), "value"),
    ("kv-lock-txn-big", lambda c: c.kv.lock("k", b"x" * (MAX_TXN_VALUE_BYTES + 1), SID), "value"),
    ("kv-lock-dots", lambda c: c.kv.lock("a/../k", b"", SID), "key"),
    ("kv-get-empty-segment", lambda c: c.kv.get("a//k"), "key"),
    ("kv-put-dot-segment", lambda c: c.kv.put("a/./k"), "key"),
    ("kv-list-dot-prefix", lambda c: c.kv.list("a/./"), "prefix"),
    ("kv-delete-prefix-dots", lambda c: c.kv.delete("a/../", recurse=True), "key"),
    (
        "kv-txn-too-big",
        lambda c: c.kv.txn(
            [{"KV": {"Verb": "set", "Key": "k", "Value": "A" * MAX_TXN_BODY_BYTES}}]
        ),
        "ops",
    ),
    ("kv-lock-session", lambda c: c.kv.lock("k", b"", "nope"), "session_id"),
    ("kv-lock-flags", lambda c: c.kv.lock("k", b"", SID, flags=-5), "flags"),
]


@pytest.mark.parametrize(
    ("call", "field"), [(c[1], c[2]) for c in CLIENT_CASES], ids=[c[0] for c in CLIENT_CASES]
)
def test_client_validates_before_any_request(
    offline: Consul, call: Callable[[Consul], object], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        call(offline)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert offline.open_connections == 0

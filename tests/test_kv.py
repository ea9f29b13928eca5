"""The KV and transaction calls against a real Consul agent: reads, writes, locks, fencing."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from locksmith._client import Consul, KVEntry
from locksmith._exceptions import ProtocolError, SessionNotFound, ValidationError
from locksmith._models import QueryResult
from locksmith._validate import MAX_TXN_BODY_BYTES, MAX_TXN_VALUE_BYTES, MAX_VALUE_BYTES

WOKEN_WITHIN = 30.0
CONSUL_LOCK_FLAGS = 0x2DDCCBC058A50C18


def test_get_missing_key_is_none_with_an_index(consul: Consul, prefix: str) -> None:
    result = consul.kv.get_with_meta(f"{prefix}/missing")
    assert result.value is None
    assert result.meta.index > 0  # a 404 still carries X-Consul-Index
    assert consul.kv.get(f"{prefix}/missing") is None


def test_list_missing_prefix_is_empty(consul: Consul, prefix: str) -> None:
    result = consul.kv.list_with_meta(f"{prefix}/")
    assert result.value == []
    assert result.meta.index > 0


def test_put_get_list_delete(consul: Consul, prefix: str) -> None:
    assert consul.kv.put(f"{prefix}/a", b"\x00bytes\xff", flags=7) is True
    assert consul.kv.put(f"{prefix}/b", "text é") is True
    assert consul.kv.put(f"{prefix}/c") is True
    a = consul.kv.get(f"{prefix}/a")
    assert a is not None
    assert (a.key, a.value, a.flags, a.session, a.lock_index) == (
        f"{prefix}/a",
        b"\x00bytes\xff",
        7,
        None,
        0,
    )
    assert a.modify_index >= a.create_index > 0
    entries = consul.kv.list(f"{prefix}/")
    assert [e.key for e in entries] == [f"{prefix}/a", f"{prefix}/b", f"{prefix}/c"]
    assert entries[1].value == "text é".encode()
    assert entries[2].value == b""
    assert consul.kv.delete(f"{prefix}/a") is True
    assert consul.kv.get(f"{prefix}/a") is None
    assert consul.kv.delete(f"{prefix}/a") is True  # deleting a missing key succeeds
    assert consul.kv.delete(f"{prefix}/", recurse=True) is True
    assert consul.kv.list(f"{prefix}/") == []


@pytest.mark.parametrize("mode", ["default", "consistent", "stale"])
def test_reads_in_each_consistency_mode(consul: Consul, prefix: str, mode: Any) -> None:
    consul.kv.put(f"{prefix}/k", b"v")
    got = consul.kv.get_with_meta(f"{prefix}/k", consistency=mode)
    assert got.value is not None
    assert got.value.value == b"v"
    assert got.meta.known_leader is True
    listed = consul.kv.list_with_meta(f"{prefix}/", consistency=mode)
    assert [e.key for e in listed.value] == [f"{prefix}/k"]


def test_unicode_and_special_keys(consul: Consul, prefix: str) -> None:
    key = f"{prefix}/spaces and ?query#hash%25/ünï"
    assert consul.kv.put(key, b"x")
    entry = consul.kv.get(key)
    assert entry is not None
    assert entry.key == key


def test_value_at_the_limit_is_stored(consul: Consul, prefix: str) -> None:
    data = b"v" * MAX_VALUE_BYTES
    assert consul.kv.put(f"{prefix}/big", data)
    entry = consul.kv.get(f"{prefix}/big")
    assert entry is not None
    assert entry.value == data


def test_value_over_512_kib_is_rejected_before_sending(consul: Consul, prefix: str) -> None:
    with pytest.raises(ValidationError, match="512 KiB") as info:
        consul.kv.put(f"{prefix}/too-big", b"v" * (MAX_VALUE_BYTES + 1))
    assert info.value.field == "value"
    assert consul.kv.get(f"{prefix}/too-big") is None


@pytest.mark.parametrize("tail", ["a//b", "a//", "./a", "a/.", "a/./b", "a/../b", "..", "."])
def test_keys_the_http_router_redirects_are_refused(
    consul_addr: str, consul: Consul, prefix: str, new_session: Callable[..., str], tail: str
) -> None:
    """Consul answers 301 for such paths; a txn would even write them (its keys are in the body)."""
    key = f"{prefix}/{tail}"
    sid = new_session()
    with Consul(consul_addr) as fresh:
        for call in (
            lambda: fresh.kv.put(key, b"x"),
            lambda: fresh.kv.get(key),
            lambda: fresh.kv.delete(key),
            lambda: fresh.kv.lock(key, b"x", sid),
        ):
            with pytest.raises(ValidationError, match="HTTP 301") as info:
                call()
            assert info.value.field == "key"
            assert repr(key) in str(info.value)
        assert fresh.open_connections == 0  # refused before any request
    assert consul.kv.list(f"{prefix}/") == []


@pytest.mark.parametrize("prefix_tail", ["a//", "a/./", "a/../"])
def test_prefixes_the_http_router_redirects_are_refused(
    consul_addr: str, prefix: str, prefix_tail: str
) -> None:
    with Consul(consul_addr) as fresh:
        with pytest.raises(ValidationError, match="HTTP 301") as info:
            fresh.kv.list(f"{prefix}/{prefix_tail}")
        assert info.value.field == "prefix"
        with pytest.raises(ValidationError, match="HTTP 301") as info:
            fresh.kv.delete(f"{prefix}/{prefix_tail}", recurse=True)
        assert info.value.field == "key"
        assert fresh.open_connections == 0


@pytest.mark.parametrize("tail", [".a", "a.", "a..b", "dir/", "a/.../b", "a/.b/c", "x/b./c"])
def test_dots_inside_segments_and_a_trailing_slash_are_legal(
    consul: Consul, prefix: str, new_session: Callable[..., str], tail: str
) -> None:
    key = f"{prefix}/{tail}"
    assert consul.kv.put(key, b"x") is True
    entry = consul.kv.get(key)
    assert entry is not None
    assert (entry.key, entry.value) == (key, b"x")
    assert [e.key for e in consul.kv.list(f"{prefix}/")] == [key]
    locked = consul.kv.lock(key, b"y", new_session())
    assert locked is not None
    assert locked.key == key
    assert consul.kv.delete(key) is True


def _longest_key() -> str:
    """A unique legal key that takes the most room in a txn body: 4096 UTF-8 bytes, all of
    2-byte characters, each escaped to 6 bytes (``\\u0101``) by JSON: 12288 bytes."""
    unique_part = "".join(chr(0x100 + int(h, 16)) for h in uuid.uuid4().hex)
    key = unique_part + "\u00e9" * (2048 - len(unique_part))
    assert len(key.encode()) == 4096
    assert len(json.dumps(key)) == 12288 + 2
    return key


def test_lock_value_limit_holds_for_the_longest_key(
    consul_addr: str, consul: Consul, new_session: Callable[..., str]
) -> None:
    """MAX_TXN_VALUE_BYTES fits with the worst key and flags; one byte more is refused."""
    key = _longest_key()
    sid = new_session(lock_delay=0)
    data = bytes(range(256)) * (MAX_TXN_VALUE_BYTES // 256) + b"z" * (MAX_TXN_VALUE_BYTES % 256)
    assert len(data) == MAX_TXN_VALUE_BYTES
    try:
        locked = consul.kv.lock(key, data, sid, flags=2**64 - 1)
        assert locked is not None
        stored = consul.kv.get(key)
        assert stored is not None
        assert stored.value == data
        assert stored.session == sid
    finally:
        consul.kv.delete(key)
    with Consul(consul_addr) as fresh:
        with pytest.raises(ValidationError, match=f"at most {MAX_TXN_VALUE_BYTES} bytes") as info:
            fresh.kv.lock(key, data + b"z", sid, flags=2**64 - 1)
        assert info.value.field == "value"
        assert fresh.open_connections == 0  # refused before any request
    assert consul.kv.get(key) is None


def test_lock_value_over_the_txn_limit_is_refused_before_sending(
    consul_addr: str, consul: Consul, prefix: str, new_session: Callable[..., str]
) -> None:
    """A value a plain PUT takes but a txn cannot: refused, not sent to fail with a 413."""
    key = f"{prefix}/big-lock"
    sid = new_session()
    big = b"v" * (MAX_TXN_VALUE_BYTES + 1)
    assert consul.kv.put(f"{prefix}/plain", big) is True  # fine outside a transaction
    with Consul(consul_addr) as fresh:
        with pytest.raises(ValidationError, match="MAX_TXN_VALUE_BYTES") as info:
            fresh.kv.lock(key, big, sid)
        assert info.value.field == "value"
        assert fresh.open_connections == 0
    assert consul.kv.get(key) is None


def test_txn_body_limit_is_consuls(consul_addr: str, consul: Consul, prefix: str) -> None:
    """A txn body of exactly MAX_TXN_BODY_BYTES is accepted; one byte more is refused here."""
    empty = len(json.dumps([{"KV": {"Verb": "set", "Key": "", "Value": ""}}]))
    encoded = 4 * ((MAX_TXN_BODY_BYTES - empty - len(prefix) - 100) // 4)
    value = base64.b64encode(b"w" * (encoded // 4 * 3)).decode()
    assert len(value) == encoded
    key = f"{prefix}/" + "k" * (MAX_TXN_BODY_BYTES - empty - encoded - len(prefix) - 1)

    def ops(k: str) -> list[dict[str, Any]]:
        return [{"KV": {"Verb": "set", "Key": k, "Value": value}}]

    assert len(json.dumps(ops(key))) == MAX_TXN_BODY_BYTES
    assert consul.kv.txn(ops(key)).ok is True
    stored = consul.kv.get(key)
    assert stored is not None
    assert len(stored.value) == encoded // 4 * 3
    with Consul(consul_addr) as fresh:
        with pytest.raises(ValidationError, match=f"at most {MAX_TXN_BODY_BYTES}") as info:
            fresh.kv.txn(ops(key + "k"))
        assert info.value.field == "ops"
        assert fresh.open_connections == 0
    assert consul.kv.get(key + "k") is None


def test_cas(consul: Consul, prefix: str) -> None:
    key = f"{prefix}/cas"
    assert consul.kv.put(key, b"1", cas=0) is True  # 0: only if it does not exist
    assert consul.kv.put(key, b"2", cas=0) is False
    entry = consul.kv.get(key)
    assert entry is not None
    assert consul.kv.put(key, b"3", cas=entry.modify_index + 1) is False
    assert consul.kv.put(key, b"3", cas=entry.modify_index) is True
    assert consul.kv.delete(key, cas=entry.modify_index) is False  # index moved on
    latest = consul.kv.get(key)
    assert latest is not None
    assert latest.value == b"3"
    assert consul.kv.delete(key, cas=latest.modify_index) is True
    assert consul.kv.get(key) is None


def test_acquire_and_release(consul: Consul, prefix: str, new_session: Callable[..., str]) -> None:
    key = f"{prefix}/lock"
    mine, other = new_session(lock_delay=0), new_session()
    assert consul.kv.put(key, b"held", acquire=mine, flags=CONSUL_LOCK_FLAGS) is True
    held = consul.kv.get(key)
    assert held is not None
    assert (held.session, held.lock_index, held.value, held.flags) == (
        mine,
        1,
        b"held",
        CONSUL_LOCK_FLAGS,
    )
    assert consul.kv.put(key, b"x", acquire=other) is False
    assert consul.kv.put(key, b"x", release=other) is False  # not the holder
    assert consul.kv.put(key, b"free", release=mine) is True
    free = consul.kv.get(key)
    assert free is not None
    assert free.session is None
    assert free.value == b"free"
    assert free.modify_index > held.modify_index
    # A clean release starts no lock-delay.
    assert consul.kv.put(key, b"next", acquire=other) is True
    taken = consul.kv.get(key)
    assert taken is not None
    assert (taken.session, taken.value, taken.lock_index) == (other, b"next", 2)
    assert taken.create_index == held.create_index


def test_acquire_with_destroyed_session(consul: Consul, prefix: str) -> None:
    sid = consul.sessions.create()
    consul.sessions.destroy(sid)
    with pytest.raises(SessionNotFound, match="invalid session") as info:
        consul.kv.put(f"{prefix}/k", b"", acquire=sid)
    assert info.value.operation == "kv.put"
    assert info.value.resource == f"{prefix}/k"


def test_lock_delay_after_destroy(
    consul: Consul, prefix: str, new_session: Callable[..., str]
) -> None:
    key = f"{prefix}/delayed"
    holder = consul.sessions.create(lock_delay="15s")
    assert consul.kv.lock(key, b"v", holder) is not None
    consul.sessions.destroy(holder)
    waiter = new_session()
    entry = consul.kv.get(key)
    assert entry is not None
    assert entry.session is None  # looks free ...
    assert consul.kv.put(key, b"w", acquire=waiter) is False  # ... but lock-delay holds it
    assert consul.kv.lock(key, b"w", waiter) is None


def test_behavior_delete_removes_the_key(consul: Consul, prefix: str) -> None:
    key = f"{prefix}/ephemeral"
    sid = consul.sessions.create(behavior="delete")
    assert consul.kv.put(key, b"here", acquire=sid)
    consul.sessions.destroy(sid)
    assert consul.kv.get(key) is None


def test_lock_returns_the_fencing_index(
    consul: Consul, prefix: str, new_session: Callable[..., str]
) -> None:
    key = f"{prefix}/fenced"
    first, second = new_session(), new_session()
    locked = consul.kv.lock(key, b"owner-1", first, flags=CONSUL_LOCK_FLAGS)
    assert locked is not None
    stored = consul.kv.get(key)
    assert stored is not None
    assert locked.modify_index == stored.modify_index
    assert locked == stored
    assert (locked.session, locked.value, locked.flags) == (first, b"owner-1", CONSUL_LOCK_FLAGS)
    assert consul.kv.lock(key, b"owner-2", second) is None
    # Re-locking by the holder succeeds; a changed value moves the index forward.
    again = consul.kv.lock(key, b"owner-1b", first)
    assert again is not None
    assert again.modify_index > locked.modify_index
    assert consul.kv.put(key, b"", release=first)
    taken = consul.kv.lock(key, b"owner-2", second)
    assert taken is not None
    assert taken.session == second
    assert taken.modify_index > again.modify_index


def test_lock_with_destroyed_session(consul: Consul, prefix: str) -> None:
    sid = consul.sessions.create()
    consul.sessions.destroy(sid)
    with pytest.raises(SessionNotFound, match="invalid session"):
        consul.kv.lock(f"{prefix}/k", b"", sid)


def test_txn_success_and_rollback(consul: Consul, prefix: str) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    ok = consul.kv.txn(
        [
            {"KV": {"Verb": "set", "Key": f"{prefix}/t1", "Value": b64(b"one")}},
            {"KV": {"Verb": "set", "Key": f"{prefix}/t2", "Value": b64(b"two"), "Flags": 3}},
            {"KV": {"Verb": "get", "Key": f"{prefix}/t1"}},
        ]
    )
    assert ok.ok is True
    assert ok.errors == ()
    assert len(ok.entries) == 3
    read = ok.entries[2]
    assert read is not None
    assert (read.key, read.value) == (f"{prefix}/t1", b"one")
    assert ok.entries[1] is not None
    assert ok.entries[1].flags == 3
    t2 = consul.kv.get(f"{prefix}/t2")
    assert t2 is not None
    failed = consul.kv.txn(
        [
            {"KV": {"Verb": "set", "Key": f"{prefix}/t3", "Value": b64(b"three")}},
            {
                "KV": {
                    "Verb": "cas",
                    "Key": f"{prefix}/t2",
                    "Value": "",
                    "Index": t2.modify_index + 99,
                }
            },
        ]
    )
    assert failed.ok is False
    assert failed.entries == ()
    assert failed.errors
    assert any("index" in e.lower() for e in failed.errors)
    assert consul.kv.get(f"{prefix}/t3") is None  # rolled back


def test_blocking_get_woken_by_a_write(consul: Consul, prefix: str) -> None:
    key = f"{prefix}/watched"
    consul.kv.put(key, b"before")
    first = consul.kv.get_with_meta(key)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(consul.kv.get_with_meta, key, index=first.meta.index, wait="60s")
        consul.kv.put(key, b"after")
        woken = future.result(timeout=WOKEN_WITHIN)
    assert woken.meta.index > first.meta.index
    assert woken.value is not None
    assert woken.value.value == b"after"


def test_blocking_list_woken_by_a_new_key(consul: Consul, prefix: str) -> None:
    first = consul.kv.list_with_meta(f"{prefix}/")

    def watch() -> QueryResult[list[KVEntry]]:
        # An empty prefix's index is the store's: a write anywhere else (another test on
        # the same agent) may wake the query first, with nothing new; a watcher asks again.
        index = first.meta.index
        while True:
            res = consul.kv.list_with_meta(f"{prefix}/", index=index, wait="60s")
            assert res.meta.index > first.meta.index
            if res.value:
                return res
            index = res.meta.index

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(watch)
        consul.kv.put(f"{prefix}/new", b"1")
        woken = future.result(timeout=WOKEN_WITHIN)
    assert [e.key for e in woken.value] == [f"{prefix}/new"]


def test_kv_entry_from_json_rejects_bad_objects() -> None:
    with pytest.raises(ProtocolError):
        KVEntry.from_json({"Value": "AA=="})
    with pytest.raises(ProtocolError):
        KVEntry.from_json({"Key": "k", "Value": "not base64!"})

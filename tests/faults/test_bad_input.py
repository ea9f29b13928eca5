# This file passes wrong types on purpose:
# mypy: disable-error-code="arg-type,dict-item,misc"
"""Bad input at every public entry point: a clear locksmith error, and nothing left behind.

Each row feeds one entry point a bad argument (invalid key, duration, oversized value, wrong type,
unknown or malformed session ID) and expects a :class:`~locksmith.LocksmithError` subclass whose
message names the problem. Before and after each row the real agent's sessions and keys are
listed: a rejected call must not leave a session or a key behind. A fake HTTP server of the test's
own then answers garbage, 403 and 500: each client call must raise a locksmith error too.
"""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import locksmith
from locksmith import (
    ACLNotFound,
    ConfigurationError,
    Consul,
    ConsulError,
    ConsulUnavailable,
    LockLost,
    LockManager,
    LocksmithError,
    LockTimeout,
    NotHeld,
    PermissionDenied,
    ProtocolError,
    SessionNotFound,
    ValidationError,
)

BIG = b"x" * (512 * 1024 + 1)
UNKNOWN_SID = str(uuid.UUID(int=0x5EED))


@dataclass
class Env:
    """What a row may use; managers it makes are closed before the leftovers are checked."""

    consul: Consul
    key: str
    before: tuple[set[str], set[str]] = (set(), set())
    managers: list[LockManager] = field(default_factory=list)
    allowed_keys: set[str] = field(default_factory=set)

    def leftovers(self) -> tuple[set[str], set[str]]:
        """Close the row's managers; return (new sessions, new keys) on the agent."""
        for m in self.managers:
            m.close()
        sessions, keys = _snapshot(self.consul)
        return sessions - self.before[0], keys - self.before[1] - self.allowed_keys

    def mgr(self, **kw: Any) -> LockManager:
        kw.setdefault("ttl", 10)
        kw.setdefault("lock_delay", 0)
        kw.setdefault("name", "bad-input")
        m = LockManager(self.consul, **kw)
        self.managers.append(m)
        return m


Row = Callable[[Env], object]


def _held_lock(env: Env) -> locksmith.Lock:
    """A lock the row holds legitimately (its released key may stay: Consul keeps it)."""
    env.allowed_keys.add(env.key)
    lock = env.mgr().lock(env.key)
    assert lock.acquire(timeout=10) is not None
    return lock


# (id, call, expected exception, text the message must contain)
ROWS: list[tuple[str, Row, type[BaseException], str]] = [
    # ---- Consul(...)
    ("consul-address-int", lambda e: Consul(8500), ConfigurationError, "address"),
    ("consul-address-garbage", lambda e: Consul("http://"), ConfigurationError, "address"),
    ("consul-address-port", lambda e: Consul("127.0.0.1:http"), ConfigurationError, "port"),
    ("consul-scheme", lambda e: Consul("127.0.0.1:1", scheme="ftp"), ConfigurationError, "scheme"),
    ("consul-token-type", lambda e: Consul("127.0.0.1:1", token=5), ConfigurationError, "token"),
    (
        "consul-token-file",
        lambda e: Consul("127.0.0.1:1", token_file="/nonexistent/locksmith-token"),
        ConfigurationError,
        "token file",
    ),
    (
        "consul-timeout-neg",
        lambda e: Consul("127.0.0.1:1", timeout=-1),
        ConfigurationError,
        "timeout",
    ),
    (
        "consul-timeout-str",
        lambda e: Consul("127.0.0.1:1", timeout="5"),
        ConfigurationError,
        "timeout",
    ),
    (
        "consul-timeout-nan",
        lambda e: Consul("127.0.0.1:1", timeout=float("nan")),
        ConfigurationError,
        "timeout",
    ),
    # ---- sessions.create
    ("create-ttl-short", lambda e: e.consul.sessions.create(ttl="5s"), ValidationError, "ttl"),
    ("create-ttl-long", lambda e: e.consul.sessions.create(ttl="86401s"), ValidationError, "ttl"),
    ("create-ttl-neg", lambda e: e.consul.sessions.create(ttl=-10), ValidationError, "ttl"),
    ("create-ttl-word", lambda e: e.consul.sessions.create(ttl="forever"), ValidationError, "ttl"),
    ("create-ttl-list", lambda e: e.consul.sessions.create(ttl=[10]), ValidationError, "ttl"),
    ("create-ttl-bool", lambda e: e.consul.sessions.create(ttl=True), ValidationError, "ttl"),
    (
        "create-ttl-nan",
        lambda e: e.consul.sessions.create(ttl=float("nan")),
        ValidationError,
        "ttl",
    ),
    (
        "create-delay-61",
        lambda e: e.consul.sessions.create(lock_delay="61s"),
        ValidationError,
        "lock_delay",
    ),
    (
        "create-delay-neg",
        lambda e: e.consul.sessions.create(lock_delay=-1),
        ValidationError,
        "lock_delay",
    ),
    (
        "create-behavior",
        lambda e: e.consul.sessions.create(behavior="Delete"),
        ValidationError,
        "behavior",
    ),
    ("create-name-empty", lambda e: e.consul.sessions.create(name=""), ValidationError, "name"),
    ("create-name-int", lambda e: e.consul.sessions.create(name=5), ValidationError, "name"),
    ("create-name-ctrl", lambda e: e.consul.sessions.create(name="a\nb"), ValidationError, "name"),
    (
        "create-checks-str",
        lambda e: e.consul.sessions.create(checks="serfHealth"),
        ValidationError,
        "checks",
    ),
    (
        "create-svc-str",
        lambda e: e.consul.sessions.create(service_checks="web"),
        ValidationError,
        "service_checks",
    ),
    (
        "create-node-unknown",
        lambda e: e.consul.sessions.create(node="no-such-node-xyz", ttl=10),
        ConsulError,
        "node",
    ),
    (
        "create-check-unknown",
        lambda e: e.consul.sessions.create(node_checks=["no-such-check"], ttl=10),
        ConsulError,
        "no-such-check",
    ),
    # ---- sessions.destroy / renew / info / node / list
    (
        "destroy-malformed",
        lambda e: e.consul.sessions.destroy("not-a-uuid"),
        ValidationError,
        "session_id",
    ),
    ("destroy-int", lambda e: e.consul.sessions.destroy(42), ValidationError, "session_id"),
    (
        "renew-malformed",
        lambda e: e.consul.sessions.renew("../../v1/kv/x"),
        ValidationError,
        "session_id",
    ),
    ("renew-unknown", lambda e: e.consul.sessions.renew(UNKNOWN_SID), SessionNotFound, UNKNOWN_SID),
    ("info-malformed", lambda e: e.consul.sessions.info("x"), ValidationError, "session_id"),
    ("node-empty", lambda e: e.consul.sessions.node(""), ValidationError, "node"),
    ("node-slash", lambda e: e.consul.sessions.node("a/b"), ValidationError, "node"),
    ("list-index-neg", lambda e: e.consul.sessions.list(index=-1), ValidationError, "index"),
    (
        "list-wait-long",
        lambda e: e.consul.sessions.list(index=1, wait="601s"),
        ValidationError,
        "wait",
    ),
    (
        "list-consistency",
        lambda e: e.consul.sessions.list(consistency="eventual"),
        ValidationError,
        "consistency",
    ),
    # ---- kv.*
    ("get-empty", lambda e: e.consul.kv.get(""), ValidationError, "key"),
    ("get-slash", lambda e: e.consul.kv.get("/abs"), ValidationError, "key"),
    ("get-ctrl", lambda e: e.consul.kv.get("a\x00b"), ValidationError, "key"),
    ("get-none", lambda e: e.consul.kv.get(None), ValidationError, "key"),
    ("get-long", lambda e: e.consul.kv.get("k" * 5000), ValidationError, "key"),
    ("get-index-str", lambda e: e.consul.kv.get(e.key, index="3"), ValidationError, "index"),
    ("get-wait-zero", lambda e: e.consul.kv.get(e.key, index=1, wait=0), ValidationError, "wait"),
    ("list-prefix-int", lambda e: e.consul.kv.list(5), ValidationError, "prefix"),
    ("put-big", lambda e: e.consul.kv.put(e.key, BIG), ValidationError, "value"),
    ("put-value-int", lambda e: e.consul.kv.put(e.key, 5), ValidationError, "value"),
    ("put-value-dict", lambda e: e.consul.kv.put(e.key, {"a": 1}), ValidationError, "value"),
    (
        "put-acquire-malformed",
        lambda e: e.consul.kv.put(e.key, b"", acquire="nope"),
        ValidationError,
        "acquire",
    ),
    (
        "put-acquire-unknown",
        lambda e: e.consul.kv.put(e.key, b"", acquire=UNKNOWN_SID),
        SessionNotFound,
        "session",
    ),
    (
        "put-release-malformed",
        lambda e: e.consul.kv.put(e.key, b"", release="x"),
        ValidationError,
        "release",
    ),
    ("put-cas-neg", lambda e: e.consul.kv.put(e.key, b"", cas=-1), ValidationError, "cas"),
    ("put-flags-neg", lambda e: e.consul.kv.put(e.key, b"", flags=-1), ValidationError, "flags"),
    ("put-flags-big", lambda e: e.consul.kv.put(e.key, b"", flags=2**64), ValidationError, "flags"),
    (
        "put-acq-rel",
        lambda e: e.consul.kv.put(e.key, b"", acquire=UNKNOWN_SID, release=UNKNOWN_SID),
        ValidationError,
        "mutually exclusive",
    ),
    ("delete-empty", lambda e: e.consul.kv.delete(""), ValidationError, "key"),
    (
        "delete-recurse-slash",
        lambda e: e.consul.kv.delete("/x", recurse=True),
        ValidationError,
        "key",
    ),
    (
        "lock-malformed-sid",
        lambda e: e.consul.kv.lock(e.key, b"", "nope"),
        ValidationError,
        "session_id",
    ),
    (
        "lock-unknown-sid",
        lambda e: e.consul.kv.lock(e.key, b"", UNKNOWN_SID),
        SessionNotFound,
        "session",
    ),
    ("lock-big", lambda e: e.consul.kv.lock(e.key, BIG, UNKNOWN_SID), ValidationError, "value"),
    (
        "lock-flags",
        lambda e: e.consul.kv.lock(e.key, b"", UNKNOWN_SID, flags=-2),
        ValidationError,
        "flags",
    ),
    # ---- LockManager(...)
    ("mgr-ttl-short", lambda e: LockManager(e.consul, ttl="5s"), ValidationError, "ttl"),
    # No TTL: no lease deadline; refused for locks unless the unsafe opt-in is given.
    ("mgr-ttl-none", lambda e: LockManager(e.consul, ttl=None), ValidationError, "ttl"),
    ("mgr-ttl-zero", lambda e: LockManager(e.consul, ttl="0s"), ValidationError, "ttl"),
    (
        "mgr-no-ttl-optin-str",
        lambda e: LockManager(e.consul, ttl=None, unsafe_no_ttl="yes"),
        ValidationError,
        "unsafe_no_ttl",
    ),
    ("mgr-watch-budget", lambda e: LockManager(e.consul, watch_budget=0), ValidationError, "watch"),
    ("mgr-ttl-word", lambda e: LockManager(e.consul, ttl="soon"), ValidationError, "ttl"),
    ("mgr-ttl-list", lambda e: LockManager(e.consul, ttl=[15]), ValidationError, "ttl"),
    ("mgr-delay-61", lambda e: LockManager(e.consul, lock_delay=61), ValidationError, "lock_delay"),
    (
        "mgr-delay-neg",
        lambda e: LockManager(e.consul, lock_delay="-1s"),
        ValidationError,
        "lock_delay",
    ),
    (
        "mgr-delay-none",
        lambda e: LockManager(e.consul, lock_delay=None),
        ValidationError,
        "lock_delay",
    ),
    (
        "mgr-behavior",
        lambda e: LockManager(e.consul, behavior="DELETE"),
        ValidationError,
        "behavior",
    ),
    ("mgr-name", lambda e: LockManager(e.consul, name=""), ValidationError, "name"),
    (
        "mgr-checks-str",
        lambda e: LockManager(e.consul, checks="serfHealth"),
        ValidationError,
        "checks",
    ),
    ("mgr-node", lambda e: LockManager(e.consul, node=""), ValidationError, "node"),
    (
        "mgr-session-malformed",
        lambda e: LockManager(e.consul, session_id="abc"),
        ValidationError,
        "session_id",
    ),
    (
        "mgr-renew-fraction",
        lambda e: LockManager(e.consul, renew_fraction=1),
        ValidationError,
        "renew_fraction",
    ),
    ("mgr-consul-str", lambda e: LockManager("127.0.0.1:8500"), ValidationError, "consul"),
    ("mgr-clock", lambda e: LockManager(e.consul, clock=object()), ValidationError, "clock"),
    (
        "mgr-session-unknown",
        lambda e: e.mgr(session_id=UNKNOWN_SID).lock(e.key).acquire(timeout=5),
        SessionNotFound,
        UNKNOWN_SID,
    ),
    (
        "mgr-node-unknown",
        lambda e: e.mgr(node="no-such-node-xyz").lock(e.key).acquire(timeout=5),
        ConsulError,
        "node",
    ),
    (
        "mgr-check-unknown",
        lambda e: e.mgr(checks=["no-such-check"], lock_delay=10).lock(e.key).acquire(timeout=5),
        ConsulError,
        "no-such-check",
    ),
    # ---- mgr.lock / acquire / release / fenced_put / callbacks
    ("lock-key-empty", lambda e: e.mgr().lock(""), ValidationError, "key"),
    ("lock-key-slash", lambda e: e.mgr().lock("/x"), ValidationError, "key"),
    ("lock-key-int", lambda e: e.mgr().lock(5), ValidationError, "key"),
    ("lock-value-big", lambda e: e.mgr().lock(e.key, BIG), ValidationError, "value"),
    ("lock-value-int", lambda e: e.mgr().lock(e.key, 7), ValidationError, "value"),
    ("lock-flags", lambda e: e.mgr().lock(e.key, flags=-1), ValidationError, "flags"),
    (
        "acquire-blocking-str",
        lambda e: e.mgr().lock(e.key).acquire(blocking="no"),
        ValidationError,
        "blocking",
    ),
    (
        "acquire-timeout-neg",
        lambda e: e.mgr().lock(e.key).acquire(timeout=-1),
        ValidationError,
        "timeout",
    ),
    (
        "acquire-timeout-str",
        lambda e: e.mgr().lock(e.key).acquire(timeout="1"),
        ValidationError,
        "timeout",
    ),
    (
        "acquire-timeout-nan",
        lambda e: e.mgr().lock(e.key).acquire(timeout=float("nan")),
        ValidationError,
        "timeout",
    ),
    (
        "acquire-nonblocking-timeout-neg",
        lambda e: e.mgr().lock(e.key).acquire(blocking=False, timeout=-1),
        ValidationError,
        "timeout",
    ),
    # Keys Consul's HTTP router redirects (301) and values its txn body limit refuses (413).
    ("lock-key-dot-segment", lambda e: e.mgr().lock(e.key + "/./x"), ValidationError, "key"),
    ("lock-key-double-slash", lambda e: e.mgr().lock(e.key + "//x"), ValidationError, "key"),
    (
        "lock-value-txn-big",
        lambda e: e.mgr().lock(e.key, b"x" * 400_000),
        ValidationError,
        "value",
    ),
    (
        "release-foreign-lease",
        lambda e: e.mgr().lock(e.key).release(_held_lock(e).lease),
        ValidationError,
        "lease",
    ),
    ("release-not-held", lambda e: e.mgr().lock(e.key).release(), NotHeld, "not held"),
    (
        "fenced-not-held",
        lambda e: e.mgr().lock(e.key).fenced_put(e.key + "/d", b"v"),
        LockLost,
        "not held",
    ),
    ("fenced-key-empty", lambda e: _held_lock(e).fenced_put("", b"v"), ValidationError, "key"),
    (
        "fenced-value-big",
        lambda e: _held_lock(e).fenced_put(e.key + "/d", BIG),
        ValidationError,
        "value",
    ),
    (
        "fenced-value-int",
        lambda e: _held_lock(e).fenced_put(e.key + "/d", 3),
        ValidationError,
        "value",
    ),
    ("on-lost-not-callable", lambda e: e.mgr().on_lost(5), ValidationError, "callback"),
    (
        "on-lock-delay-not-callable",
        lambda e: e.mgr().on_lock_delay("x"),
        ValidationError,
        "callback",
    ),
    (
        "lock-on-lost-not-callable",
        lambda e: e.mgr().lock(e.key).on_lost(None),
        ValidationError,
        "callback",
    ),
    # ---- recipes
    ("election-key", lambda e: e.mgr().election(""), ValidationError, "key"),
    ("election-value-big", lambda e: e.mgr().election(e.key, BIG), ValidationError, "value"),
    (
        "election-campaign-timeout",
        lambda e: e.mgr().election(e.key).campaign(timeout=-1),
        ValidationError,
        "timeout",
    ),
    (
        "election-proclaim-big",
        lambda e: e.mgr().election(e.key).proclaim(BIG),
        ValidationError,
        "value",
    ),
    (
        "election-proclaim-not-leader",
        lambda e: e.mgr().election(e.key).proclaim(b"v"),
        LockLost,
        "leader",
    ),
    (
        "election-observe-timeout",
        lambda e: next(e.mgr().election(e.key).observe(timeout=-1)),
        ValidationError,
        "timeout",
    ),
    (
        "election-callback",
        lambda e: e.mgr().election(e.key).on_elected(3),
        ValidationError,
        "callback",
    ),
    ("semaphore-prefix", lambda e: e.mgr().semaphore("", 2), ValidationError, "prefix"),
    ("semaphore-limit-zero", lambda e: e.mgr().semaphore(e.key, 0), ValidationError, "limit"),
    ("semaphore-limit-str", lambda e: e.mgr().semaphore(e.key, "2"), ValidationError, "limit"),
    ("semaphore-limit-bool", lambda e: e.mgr().semaphore(e.key, True), ValidationError, "limit"),
    ("semaphore-value-big", lambda e: e.mgr().semaphore(e.key, 2, BIG), ValidationError, "value"),
    (
        "semaphore-acquire-timeout",
        lambda e: e.mgr().semaphore(e.key, 2).acquire(timeout=-1),
        ValidationError,
        "timeout",
    ),
    (
        "semaphore-release-not-held",
        lambda e: e.mgr().semaphore(e.key, 2).release(),
        NotHeld,
        "not held",
    ),
    (
        "singleton-timeout",
        lambda e: e.mgr().singleton(e.key, timeout=-1),
        ValidationError,
        "timeout",
    ),
    ("singleton-key", lambda e: e.mgr().singleton("/x"), ValidationError, "key"),
    (
        "singleton-value-big",
        lambda e: e.mgr().singleton(e.key, value=BIG),
        ValidationError,
        "value",
    ),
    ("register-key", lambda e: e.mgr().register(""), ValidationError, "key"),
    ("register-value-big", lambda e: e.mgr().register(e.key, BIG), ValidationError, "value"),
    (
        "register-timeout",
        lambda e: e.mgr().register(e.key, b"v", timeout=-1),
        ValidationError,
        "timeout",
    ),
    (
        "run-exclusive-argv-empty",
        lambda e: locksmith.run_exclusive(e.mgr().lock(e.key), []),
        ValidationError,
        "argv",
    ),
    (
        "run-exclusive-argv-str",
        lambda e: locksmith.run_exclusive(e.mgr().lock(e.key), "true"),
        ValidationError,
        "argv",
    ),
    (
        "run-exclusive-grace-neg",
        lambda e: locksmith.run_exclusive(e.mgr().lock(e.key), ["true"], grace=-1),
        ValidationError,
        "grace",
    ),
    (
        "run-exclusive-grace-str",
        lambda e: locksmith.run_exclusive(e.mgr().lock(e.key), ["true"], grace="5"),
        ValidationError,
        "grace",
    ),
    (
        "run-exclusive-timeout",
        lambda e: locksmith.run_exclusive(e.mgr().lock(e.key), ["true"], timeout=-1),
        ValidationError,
        "timeout",
    ),
    (
        "run-exclusive-guard",
        lambda e: locksmith.run_exclusive("my-lock", ["true"]),
        ValidationError,
        "guard",
    ),
    (
        "run-exclusive-env",
        lambda e: locksmith.run_exclusive(e.mgr().lock(e.key), ["true"], env={"A": 1}),
        ValidationError,
        "env",
    ),
]


def _snapshot(consul: Consul) -> tuple[set[str], set[str]]:
    sessions = {s.id for s in consul.sessions.list()}
    keys = {e.key for e in consul.kv.list("")}
    return sessions, keys


@pytest.fixture
def env(consul_addr: str, request: pytest.FixtureRequest) -> Iterator[Env]:
    with Consul(consul_addr) as consul:
        callspec = getattr(request.node, "callspec", None)
        row = callspec.id if callspec is not None else request.node.name
        e = Env(consul, f"bad-input/{row}/{uuid.uuid4().hex[:8]}")
        e.before = _snapshot(consul)
        try:
            yield e
        finally:
            for m in e.managers:
                m.close()
            consul.kv.delete(e.key, recurse=True)


#: Rows that fail today: id -> (owner, what is wrong). Marked xfail(strict=True): remove the
#: entry when the owner fixes it (a fixed row then XPASSes and fails the run as a reminder).
KNOWN_BUGS: dict[str, str] = {}


def _rows() -> list[Any]:
    out = []
    for name, call, exc, text in ROWS:
        marks = []
        if name in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name]))
        out.append(pytest.param(call, exc, text, id=name, marks=marks))
    return out


@pytest.mark.parametrize(("call", "exc", "text"), _rows())
def test_bad_input(env: Env, call: Row, exc: type[BaseException], text: str) -> None:
    with pytest.raises(LocksmithError) as info:
        call(env)
    err = info.value
    assert isinstance(err, exc), f"expected {exc.__name__}, got {type(err).__name__}: {err}"
    assert text.lower() in str(err).lower(), f"message does not name {text!r}: {err}"
    if isinstance(err, ValidationError):
        assert text in err.field or text.lower() in str(err).lower()
    new_sessions, new_keys = env.leftovers()
    assert not new_sessions, f"sessions left behind: {new_sessions}"
    assert not new_keys, f"keys left behind: {new_keys}"


def test_txn_with_an_unknown_verb_is_refused(env: Env) -> None:
    out = env.consul.kv.txn([{"KV": {"Verb": "explode", "Key": env.key}}])
    assert not out.ok
    assert any("explode" in e for e in out.errors), out.errors
    assert env.leftovers() == (set(), set())


# --------------------------------------------------------------------------- a bad Consul


class _FakeConsul(http.server.ThreadingHTTPServer):
    """Answers every request the same way (set ``status``, ``body`` and ``headers``)."""

    daemon_threads = True
    status = 200
    body = b""
    headers: dict[str, str] = {}  # noqa: RUF012 - per-instance assignment in the fixture


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _FakeConsul

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        srv = self.server
        self.send_response(srv.status)
        for k, v in srv.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(srv.body)))
        self.end_headers()
        self.wfile.write(srv.body)

    do_GET = do_PUT = do_POST = do_DELETE = _answer  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def fake() -> Iterator[_FakeConsul]:
    srv = _FakeConsul(("127.0.0.1", 0), _Handler)
    srv.headers = {}
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


ANSWERS: list[tuple[str, int, bytes, dict[str, str], type[LocksmithError]]] = [
    ("garbage", 200, b"<html>definitely not json", {}, ProtocolError),
    ("wrong-shape", 200, b'{"unexpected": [1, 2, 3]}', {}, ProtocolError),
    ("403", 403, b"Permission denied", {}, PermissionDenied),
    ("403-acl", 403, b"ACL not found", {}, ACLNotFound),
    ("500", 500, b"internal error: something broke", {}, ConsulError),
    ("500-no-leader", 500, b"No cluster leader", {}, ConsulUnavailable),
    # Calls that do not read the index may succeed; none may let a foreign error escape.
    ("bad-index-header", 200, b"[]", {"X-Consul-Index": "banana"}, LocksmithError),
]


def _acquire_once(consul: Consul) -> object:
    with LockManager(consul, ttl=10) as mgr:
        return mgr.lock("bad-input/fake").acquire(blocking=False)


CALLS: list[tuple[str, Callable[[Consul], object]]] = [
    ("sessions.create", lambda c: c.sessions.create(ttl=10)),
    ("sessions.renew", lambda c: c.sessions.renew(UNKNOWN_SID)),
    ("sessions.info", lambda c: c.sessions.info(UNKNOWN_SID)),
    ("sessions.list", lambda c: c.sessions.list()),
    ("kv.get", lambda c: c.kv.get("bad-input/fake")),
    ("kv.list", lambda c: c.kv.list("bad-input/")),
    ("kv.put", lambda c: c.kv.put("bad-input/fake", b"v")),
    ("kv.lock", lambda c: c.kv.lock("bad-input/fake", b"v", UNKNOWN_SID)),
    ("kv.txn", lambda c: c.kv.txn([{"KV": {"Verb": "get", "Key": "bad-input/fake"}}])),
    ("LockManager.acquire", _acquire_once),
]


KNOWN_ANSWER_BUGS: dict[str, str] = {}


def _answer_params() -> list[Any]:
    out = []
    for call_name, call in CALLS:
        for name, status, body, headers, exc in ANSWERS:
            ident = f"{call_name}-{name}"
            marks = []
            if ident in KNOWN_ANSWER_BUGS:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_ANSWER_BUGS[ident]))
            out.append(pytest.param(call, (status, body, headers, exc), id=ident, marks=marks))
    return out


@pytest.mark.parametrize(("call", "answer"), _answer_params())
def test_bad_consul_answers(
    fake: _FakeConsul,
    call: Callable[[Consul], object],
    answer: tuple[int, bytes, dict[str, str], type[LocksmithError]],
) -> None:
    status, body, headers, exc = answer
    fake.status, fake.body, fake.headers = status, body, headers
    host, port = fake.server_address[:2]
    with Consul(f"{host!s}:{port}", timeout=5) as consul:
        try:
            result = call(consul)
        except LocksmithError as err:
            if isinstance(err, LockTimeout):  # acquire gave up on an unusable Consul: fine
                return
            assert isinstance(err, exc), f"expected {exc.__name__}, got {err!r}"
            assert str(err), "the error must say something"
            return
        except Exception as err:  # a foreign exception escaped: the bug this test looks for
            pytest.fail(f"{type(err).__name__} escaped instead of a LocksmithError: {err!r}")
    # Some calls legitimately succeed on "[]" (an empty list); garbage must not be accepted.
    assert status == 200 and body == b"[]", f"accepted {status} {body!r} and returned {result!r}"

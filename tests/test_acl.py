"""ACLs on a real agent (``default_policy = "deny"``) with tokens made through the ACL API.

The policies are read verbatim from ``docs/operations/acl.md``: the documented minimal policy is
the one proven to run every recipe. The module's agent is named ``web-1`` because the documented
policies are written for that node. Negative cases check the error class and text, and that no
session and no key is left behind (seen with the master token).
"""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import unique

from locksmith import (
    ACLNotFound,
    Consul,
    LockManager,
    PermissionDenied,
    SessionNotFound,
)
from locksmith.testing.plugin import ACLConsulAgent

ROOT = Path(__file__).resolve().parents[1]
ACL_DOC = ROOT / "docs" / "operations" / "acl.md"
UNKNOWN_TOKEN = "6b1e0c55-0000-4000-8000-00000000dead"
TOKEN_ENV = ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR")


def doc_policy(name: str) -> str:
    """The ```hcl block of acl.md whose first line is ``# <name>``, verbatim."""
    text = ACL_DOC.read_text()
    for block in re.findall(r"^```hcl\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL):
        if block.splitlines()[0].strip() == f"# {name}":
            return str(block)
    raise AssertionError(f"no hcl block '# {name}' in {ACL_DOC}")


def doc_python_sample() -> str:
    text = ACL_DOC.read_text()
    (sample,) = re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    return str(sample)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TOKEN_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def web1() -> Iterator[ACLConsulAgent]:
    """An ACL agent whose node is ``web-1``, the node the documented policies name."""
    agent = ACLConsulAgent(node_name="web-1").start()
    try:
        yield agent
    finally:
        agent.delete_tokens()
        agent.stop()


@pytest.fixture(scope="module")
def master(web1: ACLConsulAgent) -> Iterator[Consul]:
    with Consul(web1.http_addr, token=web1.master_token) as consul:
        yield consul


@pytest.fixture
def prefix(master: Consul) -> Iterator[str]:
    p = unique("locks/t")
    yield p
    for s in master.sessions.list():
        master.sessions.destroy(s.id)
    master.kv.delete(p, recurse=True)


def assert_nothing_left(master: Consul, prefix: str, *, keys_ok: bool = False) -> None:
    """No session exists; no key under ``prefix`` is held (or exists, unless ``keys_ok``)."""
    assert master.sessions.list() == []
    entries = master.kv.list(prefix)
    assert [e.key for e in entries if e.session] == []
    if not keys_ok:
        assert [e.key for e in entries] == []


def run_every_recipe(consul: Consul, prefix: str) -> None:
    """Everything locksmith does with a token, asserting each step worked."""
    with LockManager(consul, ttl="10s", lock_delay="1s", name="acl-test") as mgr:
        lock = mgr.lock(f"{prefix}/job", b"me")
        lease = lock.acquire(timeout=10)
        assert lease is not None and lease.fencing_token > 0
        sid = mgr.current_session_id
        assert sid is not None
        assert consul.sessions.renew(sid).id == sid
        assert lock.fenced_put(f"{prefix}/data", b"fenced") > lease.fencing_token
        assert lock.release() is True

        election = mgr.election(f"{prefix}/leader", b"host-a")
        assert election.campaign(timeout=10).fencing_token > 0
        leader = election.leader()
        assert leader is not None and leader.value == b"host-a" and leader.node == "web-1"
        election.resign()
        assert election.leader() is None

        sem = mgr.semaphore(f"{prefix}/sem", 2)
        assert sem.acquire(timeout=10) is not None
        assert len(sem.holders()) == 1
        assert sem.release() is True

        compat = mgr.consul_lock(f"{prefix}/compat")
        assert compat.acquire(timeout=10) is not None
        assert compat.release() is True

        with mgr.singleton(f"{prefix}/cron") as got:
            assert got is not None

        reg = mgr.register(f"{prefix}/members/a", b"10.0.0.1")
        assert reg.active
        entry = consul.kv.get(f"{prefix}/members/a")
        assert entry is not None and entry.session is not None
        reg.close()
        assert consul.kv.get(f"{prefix}/members/a") is None

        # A second manager waits for the first one's lock and gets it on release.
        holder = mgr.lock(f"{prefix}/contended")
        assert holder.acquire(timeout=10) is not None
        got_it: list[bool] = []
        with LockManager(consul, ttl="10s", name="acl-waiter") as other:
            waiter = threading.Thread(
                target=lambda: got_it.append(
                    other.lock(f"{prefix}/contended").acquire(timeout=20) is not None
                )
            )
            waiter.start()
            holder.release()
            waiter.join(30)
            assert got_it == [True]


# -- the documented policies ---------------------------------------------------------------------


def test_documented_minimal_policy_runs_every_recipe(
    web1: ACLConsulAgent, master: Consul, prefix: str
) -> None:
    policy = doc_policy("locksmith-writer.hcl")
    assert 'session "web-1"' in policy and 'key_prefix "locks/"' in policy
    with Consul(web1.http_addr, token=web1.make_token(policy)) as consul:
        run_every_recipe(consul, prefix)
    assert_nothing_left(master, prefix, keys_ok=True)


def test_documented_fleet_policy_runs_every_recipe(
    web1: ACLConsulAgent, master: Consul, prefix: str
) -> None:
    with Consul(web1.http_addr, token=web1.make_token(doc_policy("locksmith-fleet.hcl"))) as c:
        run_every_recipe(c, prefix)
    assert_nothing_left(master, prefix, keys_ok=True)


def test_documented_reader_policy(web1: ACLConsulAgent, master: Consul, prefix: str) -> None:
    reader = web1.make_token(doc_policy("locksmith-reader.hcl"))
    with LockManager(master, ttl="10s", name="held-by-master") as owner:
        lease = owner.election(f"{prefix}/leader", b"host-a").campaign(timeout=10)
        with Consul(web1.http_addr, token=reader) as consul:
            (entry,) = consul.kv.list(prefix)
            assert entry.session == lease.session_id
            info = consul.sessions.info(lease.session_id)
            assert info is not None and info.name == "held-by-master"
            # The inspection commands of the CLI work with it.
            env = {**os.environ, "CONSUL_HTTP_TOKEN": reader, "PYTHONPATH": str(ROOT)}
            for args in (["locks", prefix, "--json"], ["leader", f"{prefix}/leader", "--json"]):
                out = subprocess.run(
                    [sys.executable, "-m", "locksmith", "--address", web1.http_addr, *args],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=60,
                    check=False,
                )
                assert out.returncode == 0, out.stderr
                assert lease.session_id in out.stdout
            # ... but it can take no lock.
            with LockManager(consul) as mgr, pytest.raises(PermissionDenied) as info_exc:
                mgr.lock(f"{prefix}/job").acquire(timeout=5)
            assert info_exc.value.operation == "session.create"
            assert not isinstance(info_exc.value, ACLNotFound)
            assert [s.name for s in master.sessions.list()] == ["held-by-master"]
    assert_nothing_left(master, prefix, keys_ok=True)


# -- tokens missing a right ----------------------------------------------------------------------

NO_SESSION = 'key_prefix "locks/" {\n  policy = "write"\n}\n'
NO_KEY = 'session "web-1" {\n  policy = "write"\n}\n'
NO_KEY_WRITE = NO_KEY + 'key_prefix "locks/" {\n  policy = "read"\n}\n'

#: case -> (policy, or a literal token; expected class; operation; text in the message)
CASES: dict[str, tuple[str | None, type[PermissionDenied], str, str]] = {
    "no-session-rights": (NO_SESSION, PermissionDenied, "session.create", "session:write"),
    "no-key-rights": (NO_KEY, PermissionDenied, "kv.get", "key:read on 'locks/"),
    "key-read-only": (NO_KEY_WRITE, PermissionDenied, "kv.acquire", "key:write on 'locks/"),
    "read-only-token": ("reader", PermissionDenied, "session.create", "session:write"),
    "unknown-token": ("unknown", ACLNotFound, "", "does not know the ACL token"),
    "anonymous": ("", PermissionDenied, "", "permission denied"),
}

RECIPES: dict[str, Callable[[LockManager, str], Any]] = {
    "lock": lambda m, p: m.lock(f"{p}/job").acquire(timeout=5),
    "election": lambda m, p: m.election(f"{p}/leader").campaign(timeout=5),
    "semaphore": lambda m, p: m.semaphore(f"{p}/sem", 2).acquire(timeout=5),
    "consul_lock": lambda m, p: m.consul_lock(f"{p}/compat").acquire(timeout=5),
    "register": lambda m, p: m.register(f"{p}/members/a", b"x"),
    "singleton": lambda m, p: m.singleton(f"{p}/cron").__enter__(),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_missing_rights_fail_clearly_and_leave_nothing(
    web1: ACLConsulAgent, master: Consul, prefix: str, case: str
) -> None:
    rules, error, operation, text = CASES[case]
    if rules == "reader":
        token = web1.make_token(doc_policy("locksmith-reader.hcl"))
    elif rules == "unknown":
        token = UNKNOWN_TOKEN
    elif rules == "":
        token = ""
    else:
        token = web1.make_token(rules)
    with Consul(web1.http_addr, token=token) as consul:
        for name, recipe in RECIPES.items():
            mgr = LockManager(consul, ttl="10s", name=f"acl-{case}")
            try:
                with pytest.raises(error) as info:
                    recipe(mgr, prefix)
            finally:
                mgr.close()
            exc = info.value
            assert type(exc) is error, (name, exc)
            if operation:
                assert exc.operation == operation, (name, str(exc))
            assert text in str(exc), (name, str(exc))
            assert str(exc).startswith(exc.operation), (name, str(exc))
            if token:
                assert token not in str(exc) and token not in repr(exc), name
            assert_nothing_left(master, prefix)


def test_session_info_hides_a_live_session_the_token_may_not_read(
    web1: ACLConsulAgent, master: Consul, prefix: str
) -> None:
    sid = master.sessions.create(name="hidden", ttl="30s")
    keys_only = web1.make_token(NO_SESSION)
    with Consul(web1.http_addr, token=keys_only) as consul:
        assert consul.sessions.info(sid) is None  # alive, but hidden: not proof of absence
        assert consul.sessions.list() == []
        assert consul.sessions.node("web-1") == []
        with pytest.raises(PermissionDenied) as info:
            consul.sessions.renew(sid)  # the renewal tells "hidden" from "gone"
        assert not isinstance(info.value, SessionNotFound)
        assert "session:write on the session's node" in str(info.value)
    assert master.sessions.info(sid) is not None
    master.sessions.destroy(sid)
    with (
        Consul(web1.http_addr, token=web1.make_token(NO_KEY)) as owner,
        pytest.raises(SessionNotFound),
    ):
        owner.sessions.renew(sid)


# -- where the token comes from, and where it goes ---------------------------------------------


class RecordingForwarder:
    """A loopback TCP forwarder to the agent that records every byte clients send."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.sent: list[bytearray] = []  # per connection: interleaved chunks would mix
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._pump, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.upstream) as server:
            sent = bytearray()
            with self._lock:
                self.sent.append(sent)
            peers = {client: server, server: client}
            while not self._stop.is_set():
                ready, _, _ = select.select(list(peers), [], [], 0.05)
                for s in ready:
                    try:
                        data = s.recv(65536)
                    except ConnectionResetError:
                        return  # the client dropped a connection it gave up on (RST)
                    if not data:
                        return
                    if s is client:
                        with self._lock:
                            sent += data
                    peers[s].sendall(data)

    def _text(self) -> str:
        with self._lock:
            return "\n".join(b.decode("latin-1") for b in self.sent)

    def request_lines(self) -> list[str]:
        text = self._text()
        # A request may follow the previous body without a line break.
        return re.findall(r"((?:GET|PUT|POST|DELETE) \S+ HTTP/1\.1)\r\n", text)

    def token_headers(self) -> list[str]:
        text = self._text()
        return re.findall(r"^X-Consul-Token: (.*)\r$", text, flags=re.MULTILINE | re.IGNORECASE)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for thread in self._threads:
            thread.join(5)


def test_token_travels_only_in_the_header(
    web1: ACLConsulAgent, master: Consul, prefix: str
) -> None:
    token = web1.make_token(doc_policy("locksmith-writer.hcl"))
    forwarder = RecordingForwarder(web1.http_addr)
    try:
        with Consul(forwarder.addr, token=token) as consul:
            run_every_recipe(consul, prefix)
            # python-consul2's own wrappers, through the escape hatch, use the header too,
            # and a `token` query parameter is moved into it.
            assert consul.consul2.kv.get(f"{prefix}/data")[1]["Value"] == b"fenced"
            consul.consul2.http.get(lambda r: r, f"/v1/kv/{prefix}/data", params=[("token", token)])
        lines = forwarder.request_lines()
        assert len(lines) > 20
        assert any("/v1/session/create" in line for line in lines)
        assert any("/v1/txn" in line for line in lines)
        assert all(token not in line and "token=" not in line for line in lines)
        headers = forwarder.token_headers()
        assert len(headers) == len(lines)
        assert set(headers) == {token}
    finally:
        forwarder.close()
    assert_nothing_left(master, prefix, keys_ok=True)


def test_token_sources_and_precedence(
    web1: ACLConsulAgent, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = web1.make_token(doc_policy("locksmith-writer.hcl"))
    good_file = tmp_path / "good.token"
    good_file.write_text(good + "\n")
    bad_file = tmp_path / "bad.token"
    bad_file.write_text(UNKNOWN_TOKEN)

    def works(**kwargs: Any) -> bool:
        with Consul(web1.http_addr, **kwargs) as consul:
            try:
                consul.kv.get(f"{prefix}/probe")
            except ACLNotFound:
                return False
            return True

    assert works(token=good)
    assert works(token_file=good_file)
    assert not works(token_file=bad_file)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", good)
    assert works()
    assert works(token=good, token_file=bad_file)  # the argument wins over the file
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", UNKNOWN_TOKEN)
    assert not works()
    assert works(token=good)  # explicit wins
    assert works(token_file=good_file)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(good_file))
    assert works()  # the file variable wins over the token variable, as in Consul's CLI
    assert not works(token_file=bad_file)  # the explicit file wins over the environment
    assert not works(token=UNKNOWN_TOKEN)


def test_a_token_with_a_line_break_is_refused_without_showing_it() -> None:
    from locksmith import ConfigurationError

    secret = "s3cret-" + uuid.uuid4().hex
    with pytest.raises(ConfigurationError) as info:
        Consul("127.0.0.1:1", token=secret + "\nX-Injected: 1")
    assert secret not in str(info.value) and "token" in str(info.value)


# -- the plugin fixtures -------------------------------------------------------------------------


def test_plugin_fixtures_and_the_documented_sample(
    consul_acl_agent: ACLConsulAgent, make_acl_token: Callable[..., str]
) -> None:
    agent = consul_acl_agent
    assert agent.acl_master_token and agent.master_token not in repr(agent)
    token = make_acl_token('key_prefix "fixture/" { policy = "read" }')
    with Consul(agent.http_addr, token=token) as consul:
        assert consul.kv.get("fixture/x") is None
        with pytest.raises(PermissionDenied):
            consul.kv.get("elsewhere/x")
    namespace: dict[str, Any] = {}
    exec(compile(doc_python_sample(), str(ACL_DOC), "exec"), namespace)
    namespace["test_my_policy"](agent, make_acl_token)
    with Consul(agent.http_addr, token=agent.master_token) as root:
        assert root.sessions.list() == []
        root.kv.delete("myapp/", recurse=True)

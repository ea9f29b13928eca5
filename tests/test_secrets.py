"""The ACL token never leaks: logs, exceptions, reprs, stdout/stderr, CLI output.

A full scenario runs against the plugin's ACL agent with tokens made through the ACL API: the
client, the manager, every recipe, failures (403, unknown token, missing session, timeouts,
refused connections) and the CLI (``python -m locksmith`` with ``-vv`` and ``--json``). structlog
is configured to render every event at debug level; everything produced is searched for the
secrets.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from support import unique

from locksmith import (
    ACLNotFound,
    Consul,
    ConsulUnavailable,
    LockManager,
    LocksmithError,
    LockTimeout,
    PermissionDenied,
    SessionNotFound,
)
from locksmith.testing.plugin import ACLConsulAgent

ROOT = Path(__file__).resolve().parents[1]
UNKNOWN = "0fa1e5e7-5ec2-4e7a-b0b5-" + uuid.uuid4().hex[:12]


@pytest.fixture
def everything_logged() -> Iterator[io.StringIO]:
    """structlog (and stdlib logging) render every event, at debug level, into one buffer."""
    sink = io.StringIO()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(repr_native_str=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=sink),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sink)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield sink
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR"):
        monkeypatch.delenv(name, raising=False)


def _describe(exc: BaseException) -> str:
    """Everything an exception shows: message, repr, attributes, the formatted chain."""
    parts = [str(exc), repr(exc), repr(vars(exc)), *traceback.format_exception(exc)]
    return "\n".join(parts)


def test_no_secret_anywhere_in_a_full_run(  # noqa: PLR0917 - fixtures
    consul_acl_agent: ACLConsulAgent,
    make_acl_token: Callable[..., str],
    everything_logged: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = consul_acl_agent
    node = agent.node_name
    prefix = unique("secrets")
    writer = make_acl_token(
        f'session "{node}" {{ policy = "write" }}\nkey_prefix "{prefix}/" {{ policy = "write" }}'
    )
    no_keys = make_acl_token(f'session "{node}" {{ policy = "write" }}')
    secrets = [writer, no_keys, UNKNOWN, agent.master_token]
    seen: list[str] = []  # every message, repr and output produced along the way
    token_file = tmp_path / "token"
    token_file.write_text(writer + "\n")

    def expect(error: type[BaseException], fn: Callable[[], Any]) -> BaseException:
        with pytest.raises(error) as info:
            fn()
        seen.append(_describe(info.value))
        return info.value

    # -- the library, with a working token (from the argument, a file, the environment) -------
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", writer)
    clients = [
        Consul(agent.http_addr, token=writer),
        Consul(agent.http_addr, token_file=token_file),
        Consul(agent.http_addr),
    ]
    for consul in clients:
        seen += [repr(consul), str(consul), repr(consul.config), repr(consul._transport)]
        assert consul.config.token == writer
    consul = clients[0]
    with LockManager(consul, ttl="10s", lock_delay="1s", name="secrets") as mgr:
        seen.append(repr(mgr))
        lock = mgr.lock(f"{prefix}/job", b"v")
        lease = lock.acquire(timeout=10)
        assert lease is not None
        seen += [repr(lock), repr(lease)]
        sid = lease.session_id
        seen.append(repr(consul.sessions.renew(sid)))
        seen.append(repr(consul.sessions.info(sid)))
        seen.append(repr(consul.kv.get(f"{prefix}/job")))
        lock.fenced_put(f"{prefix}/data", b"x")
        # The same key, contended: a timeout that names the key.
        with LockManager(clients[1], ttl="10s", name="contender") as other:
            expect(LockTimeout, lambda: other.lock(f"{prefix}/job").acquire(timeout=0.3))
        lock.release()
        election = mgr.election(f"{prefix}/leader", b"host")
        seen.append(repr(election.campaign(timeout=10)))
        seen.append(repr(election.leader()))
        election.resign()
        sem = mgr.semaphore(f"{prefix}/sem", 2)
        seen.append(repr(sem.acquire(timeout=10)))
        sem.release()
        with mgr.singleton(f"{prefix}/cron") as got:
            seen.append(repr(got))
        reg = mgr.register(f"{prefix}/members/a", b"x")
        seen.append(repr(reg))
        reg.close()
        # Errors with a valid token: out-of-prefix keys (403), a session that is gone.
        expect(PermissionDenied, lambda: mgr.lock("elsewhere/job").acquire(timeout=5))
        expect(PermissionDenied, lambda: consul.kv.put("elsewhere/k", b"x"))
        expect(SessionNotFound, lambda: consul.sessions.renew(str(uuid.uuid4())))
    for c in clients:
        c.close()

    # -- failing tokens ------------------------------------------------------------------------
    with Consul(agent.http_addr, token=no_keys) as denied, LockManager(denied) as mgr:
        err = expect(PermissionDenied, lambda: mgr.lock(f"{prefix}/job").acquire(timeout=5))
        assert "key:read" in str(err)
    with Consul(agent.http_addr, token=UNKNOWN) as unknown, LockManager(unknown) as mgr:
        expect(ACLNotFound, lambda: mgr.election(f"{prefix}/leader").campaign(timeout=5))
        expect(ACLNotFound, lambda: unknown.sessions.create(name="x"))
    with Consul("127.0.0.1:1", token=writer, timeout=2) as nowhere:
        expect(ConsulUnavailable, nowhere.leader)
        with LockManager(nowhere) as mgr:
            expect(LocksmithError, lambda: mgr.lock(f"{prefix}/job").acquire(blocking=False))

    # -- the CLI: -vv (debug logs, tracebacks) and --json, token from every source --------------
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env["PYTHONPATH"] = str(ROOT)
    cli = [sys.executable, "-m", "locksmith", "--address", agent.http_addr]
    runs: list[tuple[list[str], dict[str, str], set[int]]] = [
        (["--token", writer, "-vv", "sessions", "list"], {}, {0}),
        (["--token", writer, "-vv", "sessions", "list", "--json"], {}, {0}),
        (["--token-file", str(token_file), "-vv", "locks", prefix, "--json"], {}, {0}),
        (
            ["-vv", "run", f"{prefix}/cli", "--", sys.executable, "-c", "print('child ran')"],
            {"CONSUL_HTTP_TOKEN": writer},
            {0},
        ),
        (["-vv", "leader", f"{prefix}/leader", "--json"], {"CONSUL_HTTP_TOKEN": writer}, {66}),
        (
            ["--log-format", "json", "-vv", "sessions", "create", "--name", "cli", "--json"],
            {"CONSUL_HTTP_TOKEN_FILE": str(token_file)},
            {0},
        ),
        # 403s, unknown tokens and an unreachable agent, with tracebacks (-vv).
        (["--token", no_keys, "-vv", "run", f"{prefix}/x", "--", "true"], {}, {77}),
        # (A recursive read is filtered, not refused: keys the token may not read are left out.)
        (["--token", no_keys, "-vv", "locks", "elsewhere/", "--json"], {}, {0}),
        (["--token", no_keys, "-vv", "sessions", "create", "--name", "x"], {}, {0}),
        (["--token", no_keys, "-vv", "leader", f"{prefix}/leader", "--json"], {}, {77}),
        (["--token", UNKNOWN, "-vv", "sessions", "list", "--json"], {}, {77}),
        (["--token", UNKNOWN, "-vv", "--log-format", "json", "leader", "x/y"], {}, {77}),
        (["--token", writer, "--address", "127.0.0.1:1", "-vv", "sessions", "list"], {}, {69}),
    ]
    for args, extra_env, codes in runs:
        out = subprocess.run(
            [*cli, *args],
            capture_output=True,
            text=True,
            env={**env, **extra_env},
            timeout=60,
            check=False,
        )
        assert out.returncode in codes, (args, out.returncode, out.stderr[-2000:])
        seen += [out.stdout, out.stderr]
    created = [line for line in seen if '"id":' in line]
    assert created, "the CLI session create printed nothing"

    # -- clean up with the master token, then search ---------------------------------------------
    with Consul(agent.http_addr, token=agent.master_token) as root:
        for s in root.sessions.list():
            root.sessions.destroy(s.id)
        root.kv.delete(prefix, recurse=True)
    captured = capsys.readouterr()
    logs = everything_logged.getvalue()
    # The capture works: the debug events and the CLI's logs are there.
    assert "session.created" in logs and "lock.acquired" in logs and "session.destroyed" in logs
    assert any("child ran" in text for text in seen)
    assert any("permission denied" in text.lower() for text in seen)
    haystacks = {"structlog/logging": logs, "stdout": captured.out, "stderr": captured.err}
    haystacks.update({f"seen[{i}]": text for i, text in enumerate(seen)})
    for secret in secrets:
        for where, text in haystacks.items():
            assert secret not in text, f"a token leaked into {where}"
    assert len(logs) > 1000

"""The client's module boundaries: python-consul2 is loaded only for the escape hatch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from support import child_env

import locksmith
from locksmith import Consul

#: What python-consul2 drags in; ``import locksmith`` must load none of it.
HEAVY = ("consul", "requests", "urllib3")
#: The package under test (the child must import this one, not another checkout).
PACKAGE = str(Path(locksmith.__file__).parent)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_locksmith_loads_no_python_consul2() -> None:
    result = _run(
        f"""
        import sys
        import locksmith
        import locksmith._transport

        def loaded():
            return [m for m in {HEAVY!r} if m in sys.modules]

        assert locksmith.__file__.startswith({PACKAGE!r}), locksmith.__file__
        assert loaded() == [], loaded()
        client = locksmith.Consul("127.0.0.1:1")  # construction does no I/O, loads nothing
        assert loaded() == [], loaded()
        assert client.consul2 is client.consul2  # built once, on first access
        assert "consul" in sys.modules  # the escape hatch did load it
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_consul2_is_built_on_the_clients_transport(consul_addr: str) -> None:
    with Consul(consul_addr, token="never-sent-anywhere-but-the-header", timeout=4) as consul:
        raw = consul.consul2
        assert raw.http.transport is consul._transport
        assert raw.token == consul.config.token
        assert raw.http.transport.config.timeout == 4.0
        assert raw.status.leader() == consul.leader()
        assert consul.open_connections == 1  # both went over this thread's one connection

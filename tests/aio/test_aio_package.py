"""locksmith.aio as a package: optional anyio, its public names, and twins of every sync call."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import child_env

import locksmith
import locksmith.aio
from locksmith import Consul, KVStore, Sessions
from locksmith.aio import AsyncConsul, AsyncKVStore, AsyncSessions

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


def test_import_locksmith_does_not_import_anyio() -> None:
    result = _run(
        f"""
        import sys
        import locksmith
        assert locksmith.__file__.startswith({PACKAGE!r}), locksmith.__file__
        locksmith.Consul("127.0.0.1:1").close()
        assert "anyio" not in sys.modules and "locksmith.aio" not in sys.modules
        import locksmith.aio
        assert "anyio" in sys.modules
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_import_without_anyio_says_what_to_install() -> None:
    result = _run(
        """
        import sys
        sys.modules["anyio"] = None  # as if anyio were not installed
        import locksmith
        try:
            import locksmith.aio
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without anyio")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'consul-locksmith[async]'" in result.stdout


def test_all_is_sorted_and_importable() -> None:
    names = locksmith.aio.__all__
    assert names == sorted(set(names))
    assert [n for n in names if not hasattr(locksmith.aio, n)] == []
    assert {"AsyncConsul", "AsyncKVStore", "AsyncSessions"} <= set(names)


def _public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {
        name: member
        for name, member in vars(cls).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }


@pytest.mark.parametrize(
    ("sync_cls", "async_cls"),
    [(Sessions, AsyncSessions), (KVStore, AsyncKVStore), (Consul, AsyncConsul)],
)
def test_every_sync_call_has_an_async_twin(sync_cls: type, async_cls: type) -> None:
    """Same names, parameters (less ``cancel``), defaults and result types."""
    sync_methods = _public_methods(sync_cls)
    async_methods = _public_methods(async_cls)
    only_sync = {"close", "consul2"} if sync_cls is Consul else set()
    assert set(sync_methods) - only_sync <= set(async_methods)
    for name, sync_fn in sync_methods.items():
        if name in only_sync:
            continue
        async_fn = async_methods[name]
        assert inspect.iscoroutinefunction(async_fn), name
        sync_sig = inspect.signature(sync_fn)
        async_sig = inspect.signature(async_fn)
        expected = [p for p in sync_sig.parameters.values() if p.name != "cancel"]
        assert list(async_sig.parameters.values()) == expected, name
        assert async_sig.return_annotation == sync_sig.return_annotation, name
    if sync_cls is Consul:
        assert isinstance(vars(AsyncConsul)["open_connections"], property)
        assert set(vars(Consul)) - set(vars(AsyncConsul)) == {
            "__enter__",
            "__exit__",
            "_interrupt",
            "close",
            "consul2",
        }


def test_constructor_takes_the_sync_clients_arguments() -> None:
    sync_params = dict(inspect.signature(Consul.__init__).parameters)
    async_params = dict(inspect.signature(AsyncConsul.__init__).parameters)
    assert async_params.pop("max_connections").default == 4
    assert async_params == sync_params


def test_construction_outside_an_event_loop_does_no_io() -> None:
    client = AsyncConsul("127.0.0.1:1", timeout=2)
    assert client.open_connections == 0
    assert repr(client) == "<AsyncConsul http://127.0.0.1:1 dc=default>"


def test_a_client_outlives_an_event_loop(consul_addr: str) -> None:
    """Connections kept by a finished ``asyncio.run`` are not reused by the next loop."""
    import asyncio

    client = AsyncConsul(consul_addr)

    async def ask() -> str:
        leader = await client.leader()
        assert client.open_connections == 1
        return leader

    first = asyncio.run(ask())
    assert asyncio.run(ask()) == first

    async def close() -> None:
        await client.aclose()

    asyncio.run(close())
    assert client.open_connections == 0

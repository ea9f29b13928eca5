"""Shared pytest configuration and the fixtures most test modules use.

The Consul fixtures come from ``locksmith.testing.plugin`` through its ``pytest11`` entry point
(registered by ``pip install -e .``). Loading it here as well would register it twice, so it is
loaded from here only when the package is not installed (e.g. a bare ``PYTHONPATH`` checkout).
"""

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest
from support import MakeManager, unique

from locksmith import Consul, LockManager

_installed = any(ep.value == "locksmith.testing.plugin" for ep in entry_points(group="pytest11"))

pytest_plugins = ["pytester"] if _installed else ["pytester", "locksmith.testing.plugin"]


@pytest.fixture
def consul(consul_addr: str) -> Iterator[Consul]:
    """A client of the session's agent, closed at teardown."""
    with Consul(consul_addr) as client:
        yield client


@pytest.fixture
def prefix(consul: Consul) -> Iterator[str]:
    """A fresh key prefix, deleted (recursively) at teardown."""
    name = unique("locksmith-test/t")
    yield name
    consul.kv.delete(name, recurse=True)


@pytest.fixture
def key(prefix: str) -> str:
    """A fresh key (under ``prefix``, so deleted at teardown)."""
    return f"{prefix}/key"


@pytest.fixture
def new_session(consul: Consul) -> Iterator[Callable[..., str]]:
    """Create sessions (keyword arguments of ``sessions.create``); destroyed at teardown."""
    made: list[str] = []

    def make(**kwargs: Any) -> str:
        sid = consul.sessions.create(**kwargs)
        made.append(sid)
        return sid

    yield make
    for sid in made:
        consul.sessions.destroy(sid)


@pytest.fixture
def make_manager(consul_addr: str) -> Iterator[MakeManager]:
    """Managers, each on its own client (``addr``: another address, e.g. a proxy's; ``timeout``:
    the client's), closed at teardown."""
    made: list[LockManager] = []

    def make(addr: str | None = None, timeout: float = 5.0, **kwargs: Any) -> LockManager:
        kwargs.setdefault("name", unique("mgr-test"))
        mgr = LockManager(Consul(addr or consul_addr, timeout=timeout), **kwargs)
        made.append(mgr)
        return mgr

    yield make
    for mgr in made:
        mgr.close()
        mgr.consul.close()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Tests marked ``anyio`` (``tests/aio``) run on both of anyio's backends."""
    backend: str = request.param
    return backend

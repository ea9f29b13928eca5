"""Fixtures of the partition tests: skip clearly where network namespaces cannot be made, and
keep the namespace tests off the other xdist worker's cluster tests (one Consul cluster at a
time on a 2-core machine)."""

from __future__ import annotations

import pytest

from locksmith.testing import netns_unavailable_reason
from locksmith.testing.plugin import CLUSTER_XDIST_GROUP


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``partitions`` join the cluster tests' xdist group."""
    if not config.pluginmanager.hasplugin("xdist"):
        return  # the xdist_group marker is unknown without xdist (--strict-markers)
    for item in items:
        if item.get_closest_marker("partitions") is not None:
            item.add_marker(pytest.mark.xdist_group(CLUSTER_XDIST_GROUP))


_reason: list[str | None] = []


@pytest.fixture
def netns_ok() -> None:
    """Skip, saying why, unless network namespaces can be made here (root, ``ip``)."""
    if not _reason:
        _reason.append(netns_unavailable_reason())
    if _reason[0] is not None:
        pytest.skip(f"network namespaces unavailable: {_reason[0]}")

"""Shared pytest configuration.

The Consul fixtures come from ``locksmith.testing.plugin`` through its ``pytest11`` entry point
(registered by ``pip install -e .``). Loading it here as well would register it twice, so it is
loaded from here only when the package is not installed (e.g. a bare ``PYTHONPATH`` checkout).
"""

from importlib.metadata import entry_points

_installed = any(ep.value == "locksmith.testing.plugin" for ep in entry_points(group="pytest11"))

pytest_plugins = ["pytester"] if _installed else ["pytester", "locksmith.testing.plugin"]

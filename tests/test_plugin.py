"""The pytest plugin as a good citizen of every pytest run in an environment that installs it.

It is loaded by every pytest run (``pytest11`` entry point), related or not, so importing it
must cost next to nothing; it must never point tests at an agent nobody asked for (a shell
whose ``CONSUL_HTTP_ADDR`` names a production cluster); and fetching a consul binary, ~66 MB
from Debian's archive, must be announced and possible to refuse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from locksmith.testing import ConsulNotFoundError, find_consul
from locksmith.testing import __main__ as testing_cli
from locksmith.testing import _binary as binary_mod
from locksmith.testing.plugin import ExternalConsul

REPO = Path(__file__).resolve().parents[1]

#: How a child pytest loads the plugin: the entry point, or -p when the package is not installed.
_LOAD = (
    []
    if any(ep.value == "locksmith.testing.plugin" for ep in entry_points(group="pytest11"))
    else ["-p", "locksmith.testing.plugin"]
)

#: The harness modules an unrelated pytest run must not import.
HARNESS = ("_acl", "_agent", "_binary", "_cluster", "_docker", "_proxy", "_tls")


# --------------------------------------------------------------------------- import cost


def test_an_unrelated_pytest_run_imports_no_harness_module(tmp_path: Path) -> None:
    (tmp_path / "test_unrelated.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    (tmp_path / "conftest.py").write_text(
        "import json, sys\n"
        "def pytest_sessionfinish(session):\n"
        "    with open('modules.json', 'w') as f:\n"
        "        json.dump(sorted(sys.modules), f)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *_LOAD, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert "locksmith.testing.plugin" in modules  # it was loaded...
    loaded = [m for m in modules if m.startswith("locksmith.testing._")]
    assert loaded == [], f"an unrelated run imported {loaded}"  # ...and nothing else of ours


# --------------------------------------------------------------------------- which agent


def _inner(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(body)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


def test_consul_http_addr_alone_is_never_used(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell pointed at production must not run the tests against it."""
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "production.invalid:8500")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "production-token")
    monkeypatch.delenv("LOCKSMITH_TEST_CONSUL_ADDR", raising=False)
    monkeypatch.setenv("CONSUL_BIN", str(find_consul()))
    result = _inner(
        pytester,
        """
        def test_it(consul_agent, consul_addr):
            assert type(consul_agent).__name__ == "ConsulAgent"   # started for the tests
            assert consul_addr.startswith("127.0.0.1:")
            assert consul_agent.acl_master_token is None
        """,
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*CONSUL_HTTP_ADDR is ignored*--consul-addr*"])


@pytest.mark.parametrize("how", ["option", "env"])
def test_an_external_agent_is_used_when_asked_explicitly(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, consul_addr: str, how: str
) -> None:
    monkeypatch.setenv("CONSUL_BIN", "/nonexistent/consul")  # proves nothing gets started
    monkeypatch.setenv("LOCKSMITH_TEST_CONSUL_TOKEN", "test-token")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "production.invalid:8500")
    args: list[str] = []
    if how == "option":
        monkeypatch.delenv("LOCKSMITH_TEST_CONSUL_ADDR", raising=False)
        args = ["--consul-addr", consul_addr]
    else:
        monkeypatch.setenv("LOCKSMITH_TEST_CONSUL_ADDR", consul_addr)
    result = _inner(
        pytester,
        f"""
        def test_it(consul_agent, consul_addr):
            assert type(consul_agent).__name__ == "ExternalConsul"
            assert consul_addr == {consul_addr!r}
            assert consul_agent.acl_master_token == "test-token"
        """,
        *args,
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*external Consul agent at http://{consul_addr}*"])


def test_a_bad_external_address_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = _inner(pytester, "def test_it():\n    pass\n", "--consul-addr", "http://")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--consul-addr*host:port*"])


def test_external_consul_parses_addresses() -> None:
    ext = ExternalConsul.from_address("https://consul.invalid:8501", "tok")
    assert (ext.http_addr, ext.http_url, ext.acl_master_token) == (
        "consul.invalid:8501",
        "https://consul.invalid:8501",
        "tok",
    )
    assert ExternalConsul.from_address("127.0.0.1:8500").http_url == "http://127.0.0.1:8500"
    with pytest.raises(ValueError, match="host:port"):
        ExternalConsul.from_address("http://")


# --------------------------------------------------------------------------- downloads


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CONSUL_BIN, an empty PATH and an empty cache; a fake download. Returns the cache."""
    monkeypatch.delenv("CONSUL_BIN", raising=False)
    monkeypatch.delenv("LOCKSMITH_CONSUL_DOWNLOAD", raising=False)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOCKSMITH_CACHE_DIR", str(cache))
    monkeypatch.setattr(binary_mod, "_is_debian_family", lambda: True)

    def fake_download(target_dir: Path, mirror: str | None = None) -> Path:
        del mirror
        target_dir.mkdir(parents=True, exist_ok=True)
        binary = target_dir / "consul"
        binary.write_text('#!/bin/sh\necho "Consul v0.0.0-fake"\n')
        binary.chmod(0o755)
        return binary

    monkeypatch.setattr(binary_mod, "download_consul_deb", fake_download)
    return cache


def test_a_download_is_announced_with_what_and_where(
    nothing_installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = find_consul()
    assert path == nothing_installed / "consul" / "consul"
    err = capsys.readouterr().err
    assert "downloading" in err and "Debian" in err and str(nothing_installed / "consul") in err
    assert "LOCKSMITH_CONSUL_DOWNLOAD=0" in err  # says how to refuse it


def test_downloads_can_be_turned_off(
    nothing_installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCKSMITH_CONSUL_DOWNLOAD", "0")
    with pytest.raises(ConsulNotFoundError) as info:
        find_consul()
    message = str(info.value)
    assert "LOCKSMITH_CONSUL_DOWNLOAD=0" in message
    for how in ("PATH", "CONSUL_BIN", "python -m locksmith.testing fetch", "--consul-addr"):
        assert how in message, how
    assert not (nothing_installed / "consul" / "consul").exists()


def test_the_plugin_announces_a_download_on_the_terminal(
    pytester: pytest.Pytester, nothing_installed: Path
) -> None:
    result = _inner(
        pytester,
        """
        from locksmith.testing.plugin import resolve_consul

        def test_it(request):
            assert resolve_consul(request.config).name == "consul"
        """,
    )  # captured output (no -s): the announcement must get past the capture
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*locksmith.testing: *: downloading Debian*"])


def test_fetch_announces_and_downloads_even_when_downloads_are_off(
    nothing_installed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make consul` runs `python -m locksmith.testing fetch`: an explicit request."""
    monkeypatch.setenv("LOCKSMITH_CONSUL_DOWNLOAD", "0")
    assert testing_cli.main(["fetch"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(nothing_installed / "consul" / "consul")
    assert "downloading" in err

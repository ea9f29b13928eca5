"""Tests of the test harness itself: binary resolution, agents, the cluster, Docker, fixtures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from locksmith.testing import (
    AgentPorts,
    ConsulAgent,
    ConsulCluster,
    ConsulNotFoundError,
    ConsulStartError,
    DockerConsul,
    cache_dir,
    docker_available,
    find_consul,
)
from locksmith.testing import _agent as agent_mod
from locksmith.testing import _binary as binary_mod
from locksmith.testing._agent import http_get

# --------------------------------------------------------------------------- helpers


def _alive(pid: int | None) -> bool:
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); the harness reaps, so treat zombies as alive (a bug).
    return True


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _fake_consul(directory: Path, version: str = "v0.0.0-fake") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "consul"
    path.write_text(f'#!/bin/sh\necho "Consul {version}"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture(scope="module")
def consul_bin() -> Path:
    """The real binary (resolved before any test changes the environment)."""
    return find_consul()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CONSUL_BIN, an empty PATH and an empty cache dir; returns the cache dir."""
    monkeypatch.delenv("CONSUL_BIN", raising=False)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOCKSMITH_CACHE_DIR", str(cache))
    return cache


# --------------------------------------------------------------------------- binary resolution


def test_consul_bin_env_wins_over_path_and_cache(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _fake_consul(tmp_path / "env", "v1.0.0-env")
    on_path = _fake_consul(tmp_path / "path", "v1.0.0-path")
    _fake_consul(clean_env / "consul", "v1.0.0-cache")
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.setenv("CONSUL_BIN", str(chosen))
    assert find_consul() == chosen.resolve()


def test_path_wins_over_cache(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = _fake_consul(tmp_path / "path")
    _fake_consul(clean_env / "consul")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_consul() == on_path.resolve()


def test_cache_used_when_nothing_else(clean_env: Path) -> None:
    cached = _fake_consul(clean_env / "consul")
    assert find_consul() == cached


def test_bad_consul_bin_is_a_clear_error(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_BIN", str(clean_env / "nope"))
    with pytest.raises(ConsulNotFoundError, match="CONSUL_BIN"):
        find_consul()


def test_binary_that_is_not_consul_is_rejected(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = tmp_path / "bin" / "consul"
    impostor.parent.mkdir()
    impostor.write_text("#!/bin/sh\necho hello; exit 3\n")
    impostor.chmod(0o755)
    monkeypatch.setenv("CONSUL_BIN", str(impostor))
    with pytest.raises(ConsulNotFoundError, match="not a working consul binary"):
        find_consul()


def test_nothing_found_without_download(clean_env: Path) -> None:
    with pytest.raises(ConsulNotFoundError, match="no consul binary found"):
        find_consul(download=False)


def test_non_debian_machine_gets_instructions(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(binary_mod, "_is_debian_family", lambda: False)
    with pytest.raises(ConsulNotFoundError) as info:
        find_consul()
    message = str(info.value)
    assert "CONSUL_BIN" in message
    assert "docker compose up" in message


def test_cache_dir_default_and_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOCKSMITH_CACHE_DIR", raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert cache_dir() == repo / ".cache"
    monkeypatch.setenv("LOCKSMITH_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path


def test_mirror_uri_from_deb822_skips_security(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        textwrap.dedent(
            """\
            Types: deb
            URIs: http://mirror.invalid/debian-security
            Suites: bookworm-security
            Components: main

            Types: deb
            # a comment
            URIs: http://mirror.invalid/debian
            Suites: bookworm bookworm-updates
            Components: main
            """
        )
    )
    uri = binary_mod.debian_mirror_uri(deb822, tmp_path / "missing")
    assert uri == "http://mirror.invalid/debian"


def test_mirror_uri_from_one_line_sources(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list"
    sources.write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb http://mirror.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian bookworm main\n"
    )
    assert binary_mod.debian_mirror_uri(tmp_path / "missing", sources) == (
        "http://mirror.invalid/debian"
    )
    assert binary_mod.debian_mirror_uri(tmp_path / "missing", tmp_path / "missing") is None


@pytest.mark.skipif(
    not binary_mod._is_debian_family() or binary_mod.debian_mirror_uri() is None,
    reason="fetching Debian's consul package needs a Debian-family machine with a Debian mirror",
)
def test_download_into_private_cache(tmp_path: Path) -> None:
    started = time.monotonic()
    path = binary_mod.download_consul_deb(tmp_path / "consul")
    assert path == tmp_path / "consul" / "consul"
    assert binary_mod.consul_version(path).startswith("Consul v1.")
    assert time.monotonic() - started < 120
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "consul"]


# --------------------------------------------------------------------------- agents


def test_agent_start_ready_stop_leaves_nothing(consul_bin: Path) -> None:
    agent = ConsulAgent(binary=consul_bin, node_name="harness-a").start()
    pid, workdir = agent.pid, agent.workdir
    assert _alive(pid)
    status, body = http_get(f"{agent.http_url}/v1/status/leader")
    assert status == 200
    assert json.loads(body) == agent.server_addr
    assert agent.http_addr.startswith("127.0.0.1:")
    assert "Consul agent running" in agent.log_tail()
    agent.stop()
    assert pid is not None
    assert not _alive(pid)
    assert not workdir.exists()
    with pytest.raises(OSError):
        http_get(f"http://{agent.http_addr}/v1/status/leader", timeout=1.0)
    agent.stop()  # idempotent


def test_two_agents_at_once(consul_bin: Path) -> None:
    with (
        ConsulAgent(binary=consul_bin, node_name="harness-one") as one,
        ConsulAgent(binary=consul_bin, node_name="harness-two") as two,
    ):
        assert one.http_addr != two.http_addr
        assert one.ports is not None
        assert two.ports is not None
        assert not {*vars(one.ports).values()} & {*vars(two.ports).values()} - {None}
        for agent in (one, two):
            _, body = http_get(f"{agent.http_url}/v1/agent/self")
            assert json.loads(body)["Config"]["NodeName"] == agent.node_name
        pids = [one.pid, two.pid]
    assert not any(_alive(p) for p in pids)


def test_extra_config_hcl_and_json(consul_bin: Path) -> None:
    with ConsulAgent(
        binary=consul_bin,
        extra_config=['node_meta { team = "locks" }', {"node_meta": {"tier": "test"}}],
    ) as agent:
        _, body = http_get(f"{agent.http_url}/v1/agent/self")
        meta = json.loads(body)["Meta"]
        assert (meta["team"], meta["tier"]) == ("locks", "test")


def test_port_taken_is_retried_with_new_ports(
    consul_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pick = agent_mod.pick_ports
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        calls: list[int] = []

        def pick(count: int, hosts: tuple[str, ...] = ("127.0.0.1",)) -> list[int]:
            calls.append(count)
            ports = real_pick(count, hosts)
            return [taken, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(agent_mod, "pick_ports", pick)
        with ConsulAgent(binary=consul_bin) as agent:
            assert agent.ports is not None
            assert agent.ports.http != taken
            assert len(calls) == 2
            assert "address already in use" in agent.log_tail(50000)


def test_bad_config_fails_with_log_tail(consul_bin: Path) -> None:
    agent = ConsulAgent(binary=consul_bin, extra_config="this is { not valid hcl")
    with pytest.raises(ConsulStartError, match="exited") as info:
        agent.start()
    assert "log tail" in str(info.value)
    agent.stop()


def test_fixed_port_conflict_is_not_retried(consul_bin: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        others = agent_mod.pick_ports(3)
        ports = AgentPorts(http=taken, serf_lan=others[0], serf_wan=others[1], server=others[2])
        agent = ConsulAgent(binary=consul_bin, ports=ports)
        with pytest.raises(ConsulStartError):
            agent.start()
        agent.stop()


def test_acl_agent_from_factory(consul_agent_factory: Callable[..., ConsulAgent]) -> None:
    agent = consul_agent_factory(acl_master_token="root-token")
    status, body = http_get(f"{agent.http_url}/v1/kv/harness")
    assert status == 403, body
    req = urllib.request.Request(
        f"{agent.http_url}/v1/kv/harness", headers={"X-Consul-Token": "root-token"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    with info.value:
        assert info.value.code == 404


@pytest.fixture(scope="module")
def tls_dir(consul_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    for args in (["tls", "ca", "create"], ["tls", "cert", "create", "-server"]):
        subprocess.run([str(consul_bin), *args], cwd=directory, check=True, capture_output=True)
    return directory


def test_https_port(consul_agent_factory: Callable[..., ConsulAgent], tls_dir: Path) -> None:
    agent = consul_agent_factory(
        https_port=True,
        extra_config={
            "ca_file": str(tls_dir / "consul-agent-ca.pem"),
            "cert_file": str(tls_dir / "dc1-server-consul-0.pem"),
            "key_file": str(tls_dir / "dc1-server-consul-0-key.pem"),
            "verify_incoming": False,
        },
    )
    assert agent.https_addr is not None
    assert agent.https_url == f"https://{agent.https_addr}"
    assert agent.https_addr != agent.http_addr
    context = ssl.create_default_context(cafile=str(tls_dir / "consul-agent-ca.pem"))
    with urllib.request.urlopen(f"{agent.https_url}/v1/status/leader", context=context) as resp:
        assert json.loads(resp.read()) == agent.server_addr


def _run_child(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_atexit_stops_forgotten_agent(consul_bin: Path) -> None:
    child = _run_child(
        "from locksmith.testing import ConsulAgent\n"
        f"a = ConsulAgent(binary={str(consul_bin)!r}).start()\n"
        "print(a.pid, a.workdir, flush=True)\n"
    )
    assert child.returncode == 0, child.stderr
    pid, workdir = child.stdout.split()
    assert _wait_gone(int(pid))
    assert not Path(workdir).exists()


def test_agent_dies_with_a_killed_parent(consul_bin: Path) -> None:
    if not agent_mod._pdeathsig_prefix():
        pytest.skip("setpriv --pdeathsig is not available here")
    child = _run_child(
        "import os, signal\n"
        "from locksmith.testing import ConsulAgent\n"
        f"a = ConsulAgent(binary={str(consul_bin)!r}).start()\n"
        "print(a.pid, a.workdir, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert child.returncode == -signal.SIGKILL
    pid, workdir = child.stdout.split()
    assert _wait_gone(int(pid))
    shutil.rmtree(workdir)  # nobody is left to remove it after a SIGKILL


# --------------------------------------------------------------------------- fixtures


def test_consul_agent_fixture(consul_agent: ConsulAgent, consul_addr: str) -> None:
    assert consul_addr == consul_agent.http_addr
    status, _ = http_get(f"http://{consul_addr}/v1/status/leader")
    assert status == 200


def test_missing_binary_fails_not_skips(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOCKSMITH_TEST_CONSUL_ADDR", raising=False)
    monkeypatch.setenv("CONSUL_BIN", "/nonexistent/consul")
    pytester.makepyfile("def test_it(consul_agent):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*CONSUL_BIN='/nonexistent/consul' is not an executable*"])


# --------------------------------------------------------------------------- docker


def test_docker_variant_skips_without_engine(consul_container: DockerConsul) -> None:
    status, _ = http_get(f"{consul_container.http_url}/v1/status/leader")
    assert status == 200


def test_docker_available_reports_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    ok, why = docker_available(timeout=0.5)
    assert not ok
    assert "missing.sock" in why


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[Path]:
    """A unix socket that answers one request like a Docker engine's /_ping."""
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    thread.join(timeout=5)
    server.close()


def test_docker_available_with_engine(fake_engine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{fake_engine}")
    assert docker_available() == (True, f"unix://{fake_engine}")


# --------------------------------------------------------------------------- cluster


def _put(url: str, key: str, value: bytes) -> None:
    req = urllib.request.Request(f"{url}/v1/kv/{key}", data=value, method="PUT")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read()) is True


@pytest.mark.cluster
def test_cluster_has_one_leader(consul_cluster: ConsulCluster) -> None:
    leader = consul_cluster.wait_for_leader(30, all_nodes=True)
    assert leader in range(3)
    assert sorted([leader, *consul_cluster.followers()]) == [0, 1, 2]
    assert len(set(consul_cluster.http_addrs)) == 3
    assert {a.rsplit(":", 1)[1] for a in consul_cluster.http_addrs} == {
        consul_cluster.http_addrs[0].rsplit(":", 1)[1]
    }
    for url in consul_cluster.http_urls:
        _, body = http_get(f"{url}/v1/status/peers")
        assert len(json.loads(body)) == 3


@pytest.mark.cluster
def test_cluster_kill_leader_then_restart(consul_cluster: ConsulCluster) -> None:
    old = consul_cluster.wait_for_leader(30)
    consul_cluster.kill(old)
    assert consul_cluster.state(old) == "killed"
    started = time.monotonic()
    new = consul_cluster.wait_for_leader(30)
    elapsed = time.monotonic() - started
    assert new != old
    assert elapsed < 30
    _put(consul_cluster.http_urls[new], "harness/after-failover", b"1")
    consul_cluster.restart(old)
    assert consul_cluster.state(old) == "running"
    assert consul_cluster.wait_for_leader(30, all_nodes=True) in range(3)


@pytest.mark.cluster
def test_cluster_freeze_and_continue_follower(consul_cluster: ConsulCluster) -> None:
    leader = consul_cluster.wait_for_leader(30, all_nodes=True)
    follower = consul_cluster.followers()[0]
    consul_cluster.stop(follower)
    try:
        assert consul_cluster.state(follower) == "stopped"
        assert follower not in consul_cluster.running()
        with pytest.raises(OSError):
            http_get(f"{consul_cluster.http_urls[follower]}/v1/status/leader", timeout=0.5)
        _put(consul_cluster.http_urls[leader], "harness/while-frozen", b"2")
    finally:
        consul_cluster.cont(follower)
    assert consul_cluster.state(follower) == "running"
    assert consul_cluster.wait_for_leader(30, all_nodes=True) in range(3)


@pytest.mark.cluster
def test_cluster_stop_cleans_up_frozen_nodes(consul_bin: Path) -> None:
    with ConsulCluster(binary=consul_bin, name_prefix="cleanup") as cluster:
        cluster.stop(cluster.followers()[0])
        pids = cluster.pids
        root = cluster.nodes[0].workdir.parent
    assert all(p is not None and not _alive(p) for p in pids)
    assert not root.exists()

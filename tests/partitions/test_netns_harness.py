"""NetnsCluster: the topology, what each cut does to real TCP connections, leader moves, and
that every namespace, link and process goes away (also after a crash of a previous run).

Needs root and ``ip`` (skipped, saying so, otherwise).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from locksmith.testing import NetnsCluster, cleanup_leftovers, netns_unavailable_reason
from locksmith.testing._netns import NAME_PREFIX, SWITCH_NET

pytestmark = [pytest.mark.partitions, pytest.mark.timeout(300)]

RANGE = ipaddress.IPv4Network("198.18.0.0/15")
REPO = Path(__file__).resolve().parents[2]


def root_netns_state() -> str:
    """Links, addresses and routes of the machine's own namespace (not its neighbour table,
    which other programs change as they talk to the network)."""
    out = []
    for what in (["link"], ["addr"], ["route"]):
        res = subprocess.run(["ip", "-j", *what], capture_output=True, text=True, check=True)
        items = json.loads(res.stdout or "[]")
        for item in items:  # counters and timers change by themselves
            for k in ("stats", "stats64", "used", "confirmed", "updated", "probes", "state"):
                item.pop(k, None)
        out.append(json.dumps(sorted(json.dumps(i, sort_keys=True) for i in items)))
    return "\n".join(out)


def our_netns(tag: str) -> list[str]:
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in res.stdout.splitlines() if line.startswith(tag + "-")]


def connect_error(lab: NetnsCluster, src: str, ip: str, port: int, timeout: float = 1.5) -> str:
    """ "ok", or the name of the error a TCP connect from ``src`` met."""

    def attempt() -> str:
        try:
            with socket.create_connection((ip, port), timeout=timeout):
                return "ok"
        except OSError as exc:
            return type(exc).__name__

    return lab.call(src, attempt)


@pytest.fixture(scope="module")
def root_before() -> str:
    return root_netns_state()


@pytest.fixture(scope="module")
def lab(root_before: str) -> Iterator[NetnsCluster]:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    with NetnsCluster(3, 2) as cluster:
        yield cluster


@pytest.fixture
def healed(lab: NetnsCluster) -> Iterator[NetnsCluster]:
    yield lab
    lab.heal()


def test_topology(lab: NetnsCluster, root_before: str) -> None:
    assert lab.servers == ["s0", "s1", "s2"] and lab.agents == ["h0", "h1"]
    assert sorted(our_netns(lab.tag)) == sorted(f"{lab.tag}-{h}" for h in lab.hosts)
    for host in [*lab.servers, *lab.agents]:
        assert ipaddress.IPv4Address(lab.server_ip(host)) in SWITCH_NET
    for k in range(2):
        ip, port = lab.agent_addr(k).rsplit(":", 1)
        assert ipaddress.IPv4Address(ip) in RANGE
        # An application host reaches its agent, and nothing else.
        assert connect_error(lab, f"a{k}", ip, int(port)) == "ok"
        other = lab.agent_addr(1 - k).rsplit(":", 1)[0]
        assert connect_error(lab, f"a{k}", other, 8500) != "ok"
        assert connect_error(lab, f"a{k}", lab.server_ip("s0"), 8500) != "ok"
    # Nothing was added to the machine's own namespace.
    assert root_netns_state() == root_before


def test_a_drop_cut_is_silent_and_selective(healed: NetnsCluster) -> None:
    lab = healed
    s0, s1 = lab.server_ip("s0"), lab.server_ip("s1")
    assert connect_error(lab, "h0", s0, 8300) == "ok"
    lab.cut("h0", "s0")
    assert lab.active_cuts() == {"pairs": [["h0", "s0"]], "down": []}
    # No RST, no ICMP error: the connect attempt just gets no answer.
    assert connect_error(lab, "h0", s0, 8300) == "TimeoutError"
    assert connect_error(lab, "s0", lab.server_ip("h0"), 8301) == "TimeoutError"
    assert connect_error(lab, "h0", s1, 8300) == "ok"
    assert connect_error(lab, "h1", s0, 8300) == "ok"
    lab.heal()
    assert connect_error(lab, "h0", s0, 8300) == "ok"


def test_an_established_connection_stops_getting_answers(healed: NetnsCluster) -> None:
    lab = healed
    ip, port = lab.agent_addr(0).rsplit(":", 1)

    def open_conn() -> socket.socket:
        return socket.create_connection((ip, int(port)), timeout=2.0)

    sock = lab.call("a0", open_conn)
    try:
        request = b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        lab.cut_app(0)
        sock.sendall(request)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        lab.heal()  # the retransmission gets through: the same connection answers again
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()


def test_link_cuts(healed: NetnsCluster) -> None:
    lab = healed
    s0 = lab.server_ip("s0")
    lab.isolate("h1", "link")
    assert lab.active_cuts() == {"pairs": [], "down": ["h1"]}
    assert connect_error(lab, "h1", s0, 8300) == "TimeoutError"
    assert connect_error(lab, "h0", lab.server_ip("h1"), 8301) == "TimeoutError"
    assert connect_error(lab, "h0", s0, 8300) == "ok"
    lab.heal()
    lab.cut_app(1, "link")
    assert connect_error(lab, "a1", lab.agent_addr(1).split(":")[0], 8500) == "TimeoutError"
    assert connect_error(lab, "h1", s0, 8300) == "ok"
    lab.heal()
    assert connect_error(lab, "h1", s0, 8300) == "ok"
    assert connect_error(lab, "a1", lab.agent_addr(1).split(":")[0], 8500) == "ok"


def test_cut_agent_and_partition(healed: NetnsCluster) -> None:
    lab = healed
    lab.cut_agent(1)
    for s in lab.servers:
        assert connect_error(lab, "h1", lab.server_ip(s), 8300) == "TimeoutError"
    assert connect_error(lab, "h1", lab.server_ip("h0"), 8301) == "ok"  # gossip with agents
    lab.heal()
    lab.partition(["s0", "h0"], ["s1", "s2", "h1"])
    assert connect_error(lab, "h0", lab.server_ip("s0"), 8300) == "ok"
    assert connect_error(lab, "h0", lab.server_ip("s1"), 8300) == "TimeoutError"
    assert connect_error(lab, "s2", lab.server_ip("s1"), 8300) == "ok"
    assert connect_error(lab, "h1", lab.server_ip("s0"), 8300) == "TimeoutError"


def test_splitting_the_leader_off_moves_leadership(healed: NetnsCluster) -> None:
    lab = healed
    old = lab.wait_for_leader(60, all_servers=True)
    rest = [s for s in lab.servers if s != old]
    lab.partition([old, "h0"], [*rest, "h1"])
    deadline = time.monotonic() + 60
    new = lab.leader()
    while new in (None, old) and time.monotonic() < deadline:
        time.sleep(0.2)
        new = lab.leader()
    assert new in rest, lab.leader_views()
    # The minority side's agent cannot reach a leader; the majority side's can.
    views = lab.leader_views()
    assert views[old] in (None, old) and all(views[s] == new for s in rest)
    lab.heal()
    lead = lab.wait_for_leader(60, all_servers=True)
    assert set(lab.leader_views().values()) == {lead}


def test_flap(healed: NetnsCluster) -> None:
    lab = healed
    assert lab.flap("h0", [(0.3, 0.2), (0.3, 0.2)]) == 2
    assert lab.active_cuts() == {"pairs": [], "down": []}
    assert connect_error(lab, "h0", lab.server_ip("s0"), 8300) == "ok"


def test_everything_goes_at_close_even_after_an_exception(netns_ok: None) -> None:
    before = root_netns_state()
    cluster = NetnsCluster(1, 1)
    with pytest.raises(RuntimeError, match="boom"), cluster:
        pids = [p.popen.pid for p in cluster._procs]
        assert our_netns(cluster.tag) and pids
        workdir = cluster.workdir
        raise RuntimeError("boom")
    assert our_netns(cluster.tag) == []
    assert not workdir.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()  # stopped and reaped
    assert root_netns_state() == before


def test_leftovers_of_a_killed_run_are_removed(netns_ok: None) -> None:
    script = (
        "import os, signal, sys\n"
        "from locksmith.testing import NetnsCluster\n"
        "c = NetnsCluster(1, 1).start()\n"
        "print(c.tag, c.workdir, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    tag, workdir = out.stdout.split()
    assert tag.startswith(NAME_PREFIX) and Path(workdir).parent == Path(tempfile.gettempdir())
    left = our_netns(tag)
    assert len(left) == 4  # the switch, one server, one agent host, its application host
    # Its Consul processes died with it (PR_SET_PDEATHSIG); the namespaces stay until cleaned.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = [
            subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
            ).stdout
            for ns in left
        ]
        if not "".join(pids).strip():
            break
        time.sleep(0.2)
    assert not "".join(pids).strip(), pids
    removed = cleanup_leftovers()
    assert set(left) <= set(removed) and workdir in removed
    assert our_netns(tag) == [] and not Path(workdir).exists()


def test_unavailable_without_root() -> None:
    """The reason given when not root (run as nobody through setpriv)."""
    if os.geteuid() != 0:
        assert "root" in (netns_unavailable_reason() or "")
        return
    code = "from locksmith.testing import netns_unavailable_reason as r; print(r())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd="/",
        check=False,
    )
    assert "need root" in out.stdout, out.stderr


def test_five_servers(netns_ok: None) -> None:
    """A 5-server cluster; the leader split off with one other server: the three elect."""
    with NetnsCluster(5, 1) as lab:
        assert lab.servers == ["s0", "s1", "s2", "s3", "s4"]
        old = lab.wait_for_leader(60, all_servers=True)
        minority = [old, next(s for s in lab.servers if s != old)]
        majority = [s for s in lab.servers if s not in minority]
        lab.partition(minority, [*majority, "h0"])
        deadline = time.monotonic() + 60
        new = lab.leader()
        while new not in majority and time.monotonic() < deadline:
            time.sleep(0.2)
            new = lab.leader()
        assert new in majority, lab.leader_views()
        lab.heal()
        lead = lab.wait_for_leader(60, all_servers=True)
        assert set(lab.leader_views().values()) == {lead}

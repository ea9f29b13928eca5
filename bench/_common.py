"""Shared helpers for the benchmark scripts: agent, stats, raw HTTP, counting proxy, output.

Every script starts its own Consul agent through :mod:`locksmith.testing`, runs the
competitors side by side on it, prints a table and writes ``bench/results/<name>.json``
(``<name>.quick.json`` for ``--quick``) plus a PNG chart next to it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import http.client
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from a checkout
    sys.path.insert(0, str(ROOT))


from locksmith.testing import ConsulAgent, consul_version, find_consul  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

#: KV flags of Consul's own lock recipe (``consul lock``, api.Lock).
CONSUL_LOCK_FLAGS = 0x2DDCCBC058A50C18


# --------------------------------------------------------------------------- arguments


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--repeat", type=int, default=None, help="repetitions (rounds) per competitor")
    p.add_argument("--quick", action="store_true", help="smoke run, well under a minute")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for JSON and PNG")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument("--consul", type=Path, default=None, help="consul binary (default: found)")
    p.add_argument("--seed", type=int, default=1, help="seed for the randomised orders")
    return p


# --------------------------------------------------------------------------- machine


def machine_info(binary: Path | None = None) -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and library versions, Consul version."""
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    import locksmith

    binary = binary or find_consul(download=False)
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "mem_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "consul": consul_version(binary),
        "locksmith": locksmith.__version__,
        "python-consul2": version("python-consul2"),
        "requests": version("requests"),
        "loadavg_at_start": list(os.getloadavg()),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "locksmith_source_sha256": source_digest(),
        "argv": sys.argv,
    }


def source_digest(root: Path = ROOT) -> str:
    """SHA-256 over locksmith's source files under ``root`` (identifies the code measured,
    with or without git)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((root / "locksmith").rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- agent


@contextlib.contextmanager
def dev_agent(binary: Path | None = None, node: str = "bench") -> Iterator[ConsulAgent]:
    """Start a Consul dev agent on free loopback ports; stop it (and reap it) on exit.

    ``start`` returns once the agent's node is in the catalog (sessions can be created).
    """
    agent = ConsulAgent(node_name=node, binary=binary, log_level="warn")
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


# --------------------------------------------------------------------------- statistics


def pct(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation of sorted values."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, median, p90, p99, mean, min, max of *values*."""
    v = sorted(values)
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "median": statistics.median(v),
        "p90": pct(v, 90),
        "p99": pct(v, 99),
        "mean": statistics.fmean(v),
        "min": v[0],
        "max": v[-1],
    }


def fmt(x: float | None, digits: int = 3) -> str:
    """Format a number for the tables."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print an aligned plain-text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


# --------------------------------------------------------------------------- output


def save(name: str, quick: bool, out: Path, data: Mapping[str, Any]) -> Path:
    """Write ``<out>/<name>[.quick].json`` and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}{'.quick' if quick else ''}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def chart_path(name: str, quick: bool, out: Path) -> Path:
    """Where the PNG chart of a benchmark goes."""
    return out / f"{name}{'.quick' if quick else ''}.png"


def bar_chart(
    path: Path,
    title: str,
    groups: Mapping[str, Mapping[str, Mapping[str, float]]],
    ylabel: str,
    *,
    log: bool = False,
    ref_lines: Mapping[str, float] | None = None,
) -> None:
    """Grouped bars of medians with p90/p99 marks: ``groups[group][series] = summary``.

    Does nothing (but say so) when matplotlib is missing: ``pip install matplotlib``.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install 'consul-locksmith[bench]')")
        return
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) * max(1, len(series)) / 2), 4.2))
    width = 0.8 / max(1, len(series))
    for j, s in enumerate(series):
        xs, med, p90, p99 = [], [], [], []
        for i, g in enumerate(groups):
            summ = groups[g].get(s)
            if not summ or not summ.get("n"):
                continue
            xs.append(i + (j - (len(series) - 1) / 2) * width)
            med.append(summ["median"])
            p90.append(summ["p90"])
            p99.append(summ["p99"])
        bars = ax.bar(xs, med, width * 0.9, label=s)
        ax.scatter(xs, p90, marker="_", s=200, color="black", zorder=3)
        ax.scatter(xs, p99, marker="x", s=25, color="black", zorder=3)
        for b, m in zip(bars, med, strict=True):
            ax.annotate(
                f"{m:.3g}",
                (b.get_x() + b.get_width() / 2, m),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
    for label, y in (ref_lines or {}).items():
        ax.axhline(y, linestyle="--", linewidth=0.8, color="grey")
        ax.annotate(
            label, (0, y), fontsize=7, color="grey", xytext=(2, 2), textcoords="offset points"
        )
    labels = list(groups)
    if sum(len(g) for g in labels) > 60:
        ax.set_xticks(range(len(groups)), labels, rotation=25, ha="right", fontsize=8)
    else:
        ax.set_xticks(range(len(groups)), labels)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title + "\n(bar = median, dash = p90, x = p99)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


# --------------------------------------------------------------------------- raw HTTP floor


class RawConsul:
    """The floor: one keep-alive :mod:`http.client` connection, nothing else."""

    def __init__(self, addr: str, timeout: float = 30.0) -> None:
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def call(
        self, method: str, path: str, body: bytes | None = None, timeout: float | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request; returns (status, lower-cased headers, body)."""
        if timeout is not None:
            self.conn.timeout = timeout
            if self.conn.sock is not None:
                self.conn.sock.settimeout(timeout)
        self.conn.request(method, path, body=body)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def session(self, ttl: str = "30s", lock_delay: str = "0s", name: str = "bench-raw") -> str:
        """Create a session and return its ID."""
        body = json.dumps({"Name": name, "TTL": ttl, "LockDelay": lock_delay}).encode()
        status, _, data = self.call("PUT", "/v1/session/create", body)
        if status != 200:
            raise RuntimeError(f"session create: {status} {data!r}")
        return str(json.loads(data)["ID"])

    def destroy(self, sid: str) -> None:
        """Destroy a session."""
        self.call("PUT", f"/v1/session/destroy/{sid}")

    def lock(self, key: str, value: bytes, sid: str, flags: int = 0) -> int | None:
        """txn ``lock`` verb; returns the written ModifyIndex or None if busy."""
        op = {
            "KV": {
                "Verb": "lock",
                "Key": key,
                "Value": base64.b64encode(value).decode(),
                "Flags": flags,
                "Session": sid,
            }
        }
        status, _, data = self.call("PUT", "/v1/txn", json.dumps([op]).encode())
        if status == 200:
            return int(json.loads(data)["Results"][0]["KV"]["ModifyIndex"])
        if status == 409:
            return None
        raise RuntimeError(f"txn lock: {status} {data!r}")

    def release(self, key: str, value: bytes, sid: str) -> bool:
        """``PUT /v1/kv/<key>?release=<sid>``."""
        status, _, data = self.call("PUT", f"/v1/kv/{key}?release={sid}", value)
        if status != 200:
            raise RuntimeError(f"release: {status} {data!r}")
        return data.strip() == b"true"

    def get(self, key: str, index: int = 0, wait: str = "60s") -> tuple[int, list[Any] | None]:
        """GET a key (blocking if *index*); returns (X-Consul-Index, entries or None)."""
        path = f"/v1/kv/{key}" + (f"?index={index}&wait={wait}" if index else "")
        status, headers, data = self.call("GET", path, timeout=120.0 if index else 30.0)
        idx = int(headers.get("x-consul-index", "0"))
        if status == 404:
            return idx, None
        if status != 200:
            raise RuntimeError(f"get: {status} {data!r}")
        return idx, json.loads(data)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


# --------------------------------------------------------------------------- counting proxy

_REQ_LINE = re.compile(rb"(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n")
_ID = re.compile(r"/v1/(session/(?:renew|info|destroy|node)|kv)/.*")


def endpoint_of(method: str, target: str) -> str:
    """Normalise a request target: keys and session IDs become ``*``; blocking marked."""
    path, _, query = target.partition("?")
    path = _ID.sub(lambda m: f"/v1/{m.group(1)}/*", path)
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    tags: list[str] = [n for n in ("acquire", "release", "recurse", "cas") if n in params]
    if params.get("index", "0") not in ("", "0"):
        tags.append("blocking")
    return f"{method} {path}" + (f" ({','.join(tags)})" if tags else "")


class CountingProxy:
    """A TCP proxy to Consul's HTTP port that counts connections and HTTP requests.

    Point a client at :attr:`addr`. Counting parses request lines in the client-to-server
    stream, so it sees every request on every connection (bodies of JSON and base64 cannot
    contain a request line).
    """

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(512)
        self.addr = f"127.0.0.1:{self._srv.getsockname()[1]}"
        self._mu = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.connections_total = 0
        self.connections_open = 0
        self._socks: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._thread.start()

    def total(self) -> int:
        """Requests seen so far."""
        with self._mu:
            return sum(self.requests.values())

    def snapshot(self) -> Counter[str]:
        """A copy of the per-endpoint request counts."""
        with self._mu:
            return Counter(self.requests)

    def reset(self) -> None:
        """Zero the request counters."""
        with self._mu:
            self.requests.clear()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._mu:
                self.connections_total += 1
                self.connections_open += 1
                self._socks.update((client, upstream))
            threading.Thread(
                target=self._pair, args=(client, upstream), name="proxy-conn", daemon=True
            ).start()

    def _pair(self, client: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True)
        back.start()
        self._pump(client, upstream, True)
        back.join()
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()
        with self._mu:
            self.connections_open -= 1
            self._socks.difference_update((client, upstream))

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    buf = tail + data
                    last = 0
                    found = []
                    for m in _REQ_LINE.finditer(buf):
                        method, target = m.group(1).decode(), m.group(2).decode("latin-1")
                        found.append(endpoint_of(method, target))
                        last = m.end()
                    tail = buf[max(last, len(buf) - 4096) :]
                    if found:
                        with self._mu:
                            self.requests.update(found)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop accepting and cut every proxied connection.

        Each socket is shut down before it is closed: a thread blocked in ``accept`` or
        ``recv`` on it wakes up only then (closing alone leaves the kernel socket open under
        the blocked call), so no upstream connection outlives the proxy, e.g. a blocking
        query still counting against Consul's connections per client IP in the next run.
        """
        self._closed = True
        for sock in (self._srv,):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        with self._mu:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        self._thread.join(5)


# --------------------------------------------------------------------------- process stats


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_sockets(pid: int | str = "self") -> int:
    """Number of socket file descriptors a process has open."""
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith("socket:"):
                n += 1
    return n


def now_ms() -> float:
    """perf_counter in milliseconds."""
    return time.perf_counter() * 1000.0


def log_info() -> None:
    """Show locksmith's INFO events on stderr (``--log-info``: what logging costs).

    By default nothing is configured, as in an application that does not ask for the
    library's events: locksmith's loggers (``locksmith.*``) are then silent and cost one
    level check per event.
    """
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")


# --------------------------------------------------------------------------- start-up


def lazy_init_source(init: Path) -> str:
    """A lazy (PEP 562) version of a ``locksmith/__init__.py``: same names, imported on use.

    Generated from the real file's module-level ``from X import a, b`` statements, its
    ``__version__`` and ``__all__``, so it follows the library as it changes. The start-up
    benchmarks use it to measure what the CLI and the pytest plugin cost themselves, apart
    from the library's eager ``import locksmith`` (another change's business).
    """
    import ast

    tree = ast.parse(init.read_text(encoding="utf-8"))
    exports: dict[str, str] = {}
    version = "0"
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                exports[alias.asname or alias.name] = node.module
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
            if target == "__version__":
                version = ast.literal_eval(node.value)
            elif target == "__all__":
                names = list(ast.literal_eval(node.value))
    return (
        '"""locksmith, with every public name imported on first use (PEP 562)."""\n\n'
        "import importlib\n\n"
        f"__version__ = {version!r}\n"
        f"__all__ = {names!r}\n"
        f"_EXPORTS = {exports!r}\n\n\n"
        "def __getattr__(name):\n"
        "    module = _EXPORTS.get(name)\n"
        "    if module is None:\n"
        "        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')\n"
        "    value = getattr(importlib.import_module(module), name)\n"
        "    globals()[name] = value\n"
        "    return value\n\n\n"
        "def __dir__():\n"
        "    return sorted(set(globals()) | set(__all__))\n"
    )


@contextlib.contextmanager
def lazy_init_overlay(tree: Path) -> Iterator[Path]:
    """A directory to put first on PYTHONPATH: ``tree``'s locksmith with a lazy ``__init__``.

    Every other file of the package is a symlink to ``tree``'s, so the code measured is
    ``tree``'s; only ``locksmith/__init__.py`` is replaced (:func:`lazy_init_source`).
    """
    import tempfile

    init = tree / "locksmith" / "__init__.py"
    if "def __getattr__(" in init.read_text(encoding="utf-8"):
        # Already lazy (locksmith 0.2+): measure the tree as it is.
        yield tree
        return
    with tempfile.TemporaryDirectory(prefix="locksmith-lazy-") as tmp:
        pkg = Path(tmp) / "locksmith"
        pkg.mkdir()
        for item in (tree / "locksmith").iterdir():
            if item.name not in ("__init__.py", "__pycache__"):
                (pkg / item.name).symlink_to(item)
        (pkg / "__init__.py").write_text(lazy_init_source(tree / "locksmith" / "__init__.py"))
        yield Path(tmp)


def time_commands(
    commands: Mapping[str, tuple[Sequence[str], Mapping[str, str]]],
    runs: int,
    warmup: int = 2,
    seed: int = 1,
) -> dict[str, list[float]]:
    """Run each command ``runs`` times (hyperfine-like), interleaved; wall times in ms.

    ``commands`` maps a label to ``(argv, env)``. Each round runs every command once, in a
    shuffled order, so that drift on a shared machine hits all of them alike; ``warmup``
    rounds first are not counted (they also write the bytecode caches). Output is discarded.
    A command that exits non-zero is an error.
    """
    import random
    import subprocess

    rng = random.Random(seed)
    times: dict[str, list[float]] = {label: [] for label in commands}
    for r in range(warmup + runs):
        order = list(commands)
        rng.shuffle(order)
        for label in order:
            argv, env = commands[label]
            start = time.perf_counter()
            proc = subprocess.run(
                list(argv),
                env=dict(env),
                cwd="/",  # not the checkout: `python -c` puts the cwd first on sys.path
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                check=False,
            )
            elapsed = (time.perf_counter() - start) * 1000
            if proc.returncode != 0:
                raise RuntimeError(f"{label}: exit {proc.returncode}: {proc.stderr[-500:]!r}")
            if r >= warmup:
                times[label].append(elapsed)
    return times

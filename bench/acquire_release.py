"""Uncontended acquire+release on a reused session: locksmith vs the raw-HTTP floor.

Competitors, all on one dev agent, interleaved round by round in a shuffled order:

* ``raw-http`` (the floor): one keep-alive :mod:`http.client` connection doing the same two
  requests locksmith does: ``PUT /v1/txn`` with the KV ``lock`` verb (parsing the written
  ModifyIndex, the fencing token) and ``PUT /v1/kv/<key>?release=<session>``;
* ``locksmith``: ``LockManager`` + a reused ``Lock``: ``lock.acquire()`` / ``lock.release()``
  (renewer, watcher and callback threads running, as in production);
* ``locksmith-client``: locksmith's ``Consul`` client alone (``kv.lock`` + ``kv.put(release=)``),
  to separate the transport's cost from the manager's;
* ``python-consul2``: python-consul2 as shipped (``requests`` transport):
  ``kv.put(k, v, acquire=sid)`` / ``kv.put(k, v, release=sid)``.

Each pair is timed on its own (perf_counter). Afterwards every competitor runs 50 more
pairs through a counting TCP proxy to report HTTP requests per pair (background requests
of locksmith's watcher included).

Run: ``python bench/acquire_release.py [--quick] [--repeat N] [--pairs N]``.
"""

from __future__ import annotations

import random
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from locksmith import Consul, LockManager

KEY = "bench/acquire-release/"
VALUE = b"bench"
TARGET = 1.2


class Competitor:
    """Set up on an address; ``pair()`` does one acquire+release; ``close()`` cleans up."""

    name = ""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.key = KEY + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in self.name)

    def pair(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Raw(Competitor):
    name = "raw-http"

    def __init__(self, addr: str) -> None:
        super().__init__(addr)
        self.http = c.RawConsul(addr)
        self.sid = self.http.session(ttl="120s", lock_delay="0s")

    def pair(self) -> None:
        if self.http.lock(self.key, VALUE, self.sid) is None:
            raise RuntimeError("raw acquire failed")
        if not self.http.release(self.key, VALUE, self.sid):
            raise RuntimeError("raw release failed")

    def close(self) -> None:
        self.http.destroy(self.sid)
        self.http.close()


class Locksmith(Competitor):
    name = "locksmith"

    def __init__(self, addr: str) -> None:
        super().__init__(addr)
        self.consul = Consul(addr)
        self.mgr = LockManager(self.consul, ttl="120s", lock_delay="0s", name="bench")
        self.lock = self.mgr.lock(self.key, VALUE)

    def pair(self) -> None:
        self.lock.acquire()
        self.lock.release()

    def close(self) -> None:
        self.mgr.close()
        self.consul.close()


class LocksmithClient(Competitor):
    name = "locksmith-client"

    def __init__(self, addr: str) -> None:
        super().__init__(addr)
        self.consul = Consul(addr)
        self.sid = self.consul.sessions.create(name="bench", ttl="120s", lock_delay="0s")

    def pair(self) -> None:
        if self.consul.kv.lock(self.key, VALUE, self.sid) is None:
            raise RuntimeError("locksmith-client acquire failed")
        self.consul.kv.put(self.key, VALUE, release=self.sid)

    def close(self) -> None:
        self.consul.sessions.destroy(self.sid)
        self.consul.close()


class Consul2(Competitor):
    name = "python-consul2"

    def __init__(self, addr: str) -> None:
        super().__init__(addr)
        import consul  # the bench measures python-consul2 itself

        host, port = addr.rsplit(":", 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.client: Any = consul.Consul(host=host, port=int(port))
        self.sid = self.client.session.create(name="bench-consul2", ttl=120, lock_delay=0)

    def pair(self) -> None:
        if not self.client.kv.put(self.key, VALUE, acquire=self.sid):
            raise RuntimeError("python-consul2 acquire failed")
        self.client.kv.put(self.key, VALUE, release=self.sid)

    def close(self) -> None:
        self.client.session.destroy(self.sid)
        self.client.http.session.close()


COMPETITORS: dict[str, Callable[[str], Competitor]] = {
    "raw-http": Raw,
    "locksmith": Locksmith,
    "locksmith-client": LocksmithClient,
    "python-consul2": Consul2,
}


def time_pairs(comp: Competitor, n: int) -> list[float]:
    """Time *n* pairs; milliseconds each."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        comp.pair()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def count_requests(addr: str, names: list[str], pairs: int = 50) -> dict[str, Any]:
    """Requests per pair for each competitor, counted by a proxy (background included)."""
    result: dict[str, Any] = {}
    proxy = c.CountingProxy(addr)
    try:
        for name in names:
            comp = COMPETITORS[name](proxy.addr)
            try:
                for _ in range(5):
                    comp.pair()
                time.sleep(0.3)
                proxy.reset()
                for _ in range(pairs):
                    comp.pair()
                time.sleep(0.5)  # let background requests the pairs caused land
                snap = proxy.snapshot()
            finally:
                comp.close()
            result[name] = {
                "requests_per_pair": sum(snap.values()) / pairs,
                "by_endpoint_per_pair": {k: v / pairs for k, v in snap.most_common()},
            }
    finally:
        proxy.close()
    return result


def run(
    addr: str, names: list[str], *, repeat: int, pairs: int, warmup: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    comps = {n: COMPETITORS[n](addr) for n in names}
    samples: dict[str, list[float]] = {n: [] for n in names}
    round_medians: dict[str, list[float]] = {n: [] for n in names}
    try:
        for comp in comps.values():
            time_pairs(comp, warmup)
        for r in range(repeat):
            order = list(names)
            rng.shuffle(order)
            for n in order:
                s = time_pairs(comps[n], pairs)
                samples[n] += s
                round_medians[n].append(c.summarize(s)["median"])
            print(
                f"round {r + 1}/{repeat}: "
                + ", ".join(f"{n} {round_medians[n][-1]:.3f} ms" for n in names)
            )
    finally:
        for comp in comps.values():
            comp.close()
    return {"samples": samples, "round_medians": round_medians}


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=None, help="timed pairs per competitor per round")
    p.add_argument("--only", nargs="*", default=list(COMPETITORS), choices=list(COMPETITORS))
    p.add_argument("--log-info", action="store_true", help="log locksmith's INFO events")
    args = p.parse_args()
    if args.log_info:
        c.log_info()
    repeat = args.repeat or (2 if args.quick else 5)
    pairs = args.pairs or (200 if args.quick else 1000)
    names = [n for n in COMPETITORS if n in args.only]
    if "raw-http" not in names:
        names.insert(0, "raw-http")
    with c.dev_agent(args.consul) as agent:
        info = c.machine_info(agent.binary)
        print(f"agent {agent.http_addr}; {repeat} rounds x {pairs} pairs per competitor")
        res = run(agent.http_addr, names, repeat=repeat, pairs=pairs, warmup=50, seed=args.seed)
        reqs = count_requests(agent.http_addr, names)
    stats = {n: c.summarize(v) for n, v in res["samples"].items()}
    floor = stats["raw-http"]["median"]
    floor_rounds = res["round_medians"]["raw-http"]
    rows = []
    summary: dict[str, Any] = {}
    for n in names:
        s = stats[n]
        per_round = [a / b for a, b in zip(res["round_medians"][n], floor_rounds, strict=True)]
        summary[n] = {
            "ms": s,
            "pairs_per_s_at_mean": 1000 / s["mean"],
            "ratio_median_vs_floor": s["median"] / floor,
            "ratio_p90_vs_floor": s["p90"] / stats["raw-http"]["p90"],
            "ratio_p99_vs_floor": s["p99"] / stats["raw-http"]["p99"],
            "ratio_per_round": per_round,
            "round_medians_ms": res["round_medians"][n],
            **reqs[n],
        }
        rows.append(
            [
                n,
                s["n"],
                c.fmt(s["median"]),
                c.fmt(s["p90"]),
                c.fmt(s["p99"]),
                f"{s['median'] / floor:.2f}x",
                f"{1000 / s['mean']:.0f}",
                c.fmt(reqs[n]["requests_per_pair"], 2),
            ]
        )
    print()
    c.print_table(
        ["competitor", "pairs", "median ms", "p90 ms", "p99 ms", "vs floor", "pairs/s", "req/pair"],
        rows,
    )
    ls_ratio = summary.get("locksmith", {}).get("ratio_median_vs_floor")
    if ls_ratio is not None:
        verdict = "MET" if ls_ratio <= TARGET else "MISSED"
        print(f"\ntarget locksmith <= {TARGET}x floor (median): {ls_ratio:.2f}x -> {verdict}")
    data = {
        "benchmark": "acquire_release",
        "quick": args.quick,
        "params": {"repeat": repeat, "pairs": pairs, "warmup": 50, "seed": args.seed},
        "machine": info,
        "target": {"locksmith_vs_floor_median_max": TARGET, "locksmith": ls_ratio},
        "results": summary,
    }
    c.save("acquire_release", args.quick, args.out, data)
    if not args.no_chart:
        c.bar_chart(
            c.chart_path("acquire_release", args.quick, args.out),
            f"Uncontended acquire+release, dev agent ({info['consul']}, {info['cores']} cores)",
            {"acquire+release": {n: stats[n] for n in names}},
            "ms per pair",
            ref_lines={f"{TARGET}x floor": TARGET * floor},
        )


if __name__ == "__main__":
    main()

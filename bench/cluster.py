"""Cost of a 3-server cluster vs the dev agent for the same lock operations.

Method. A dev agent (in memory) and a 3-server cluster (``locksmith.testing.ConsulCluster``:
127.0.0.2-4, Raft on disk in a temp dir, ``raft_multiplier`` 1) run side by side on this
host. Targets: the dev agent, the cluster's leader, one follower (a follower forwards every
write to the leader). Operations, each timed per call, targets and clients interleaved in
a shuffled order every round:

* acquire+release pair: ``raw-http`` (the floor, see acquire_release.py) and ``locksmith``
  (``LockManager`` + reused ``Lock``);
* session create+destroy and session renew: raw HTTP.

All servers share this machine's cores and disk, so the cluster numbers are a floor for
Raft's cost (no network latency) but include its fsyncs.

Run: ``python bench/cluster.py [--quick] [--repeat N] [--ops N]``.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
from acquire_release import Competitor, Locksmith, Raw

from locksmith.testing import ConsulCluster


class SessionCycle(Competitor):
    name = "raw session create+destroy"

    def __init__(self, addr: str) -> None:
        super().__init__(addr)
        self.http = c.RawConsul(addr)

    def pair(self) -> None:
        self.http.destroy(self.http.session(ttl="30s", name="bench-cycle"))

    def close(self) -> None:
        self.http.close()


class Renew(Competitor):
    name = "raw session renew"

    def __init__(self, addr: str) -> None:
        super().__init__(addr)
        self.http = c.RawConsul(addr)
        self.sid = self.http.session(ttl="60s", name="bench-renew")

    def pair(self) -> None:
        status, _, data = self.http.call("PUT", f"/v1/session/renew/{self.sid}")
        if status != 200:
            raise RuntimeError(f"renew: {status} {data!r}")

    def close(self) -> None:
        self.http.destroy(self.sid)
        self.http.close()


class RawPair(Raw):
    name = "raw acquire+release"


class LocksmithPair(Locksmith):
    name = "locksmith acquire+release"


OPS: list[Callable[[str], Competitor]] = [RawPair, LocksmithPair, SessionCycle, Renew]


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=None, help="timed operations per case per round")
    args = p.parse_args()
    repeat = args.repeat or (2 if args.quick else 5)
    ops = args.ops or (100 if args.quick else 500)
    rng = random.Random(args.seed)
    samples: dict[tuple[str, str], list[float]] = {}
    with c.dev_agent(args.consul) as agent, ConsulCluster(3, binary=args.consul) as cluster:
        info = c.machine_info(agent.binary)
        lead = cluster.wait_for_leader(60, all_nodes=True)
        follower = next(i for i in range(3) if i != lead)
        for i in range(3):
            cluster.nodes[i].wait_ready(60)  # leader known and the node in the catalog
        targets = {
            "dev agent": agent.http_addr,
            "cluster leader": cluster.http_addrs[lead],
            "cluster follower": cluster.http_addrs[follower],
        }
        print(f"targets: {targets}")
        cases: dict[tuple[str, str], Competitor] = {}
        try:
            for t, addr in targets.items():
                for op in OPS:
                    comp = op(addr)
                    cases[(t, comp.name)] = comp
                    for _ in range(20):
                        comp.pair()
            for r in range(repeat):
                order = list(cases)
                rng.shuffle(order)
                for case in order:
                    comp = cases[case]
                    out = samples.setdefault(case, [])
                    for _ in range(ops):
                        t0 = time.perf_counter()
                        comp.pair()
                        out.append((time.perf_counter() - t0) * 1000)
                print(f"round {r + 1}/{repeat} done")
        finally:
            for comp in cases.values():
                comp.close()
    stats = {case: c.summarize(v) for case, v in samples.items()}
    ops_names: list[str] = list(dict.fromkeys(name for _, name in stats))
    rows = []
    results: dict[str, Any] = {}
    for opn in ops_names:
        dev = stats[("dev agent", opn)]["median"]
        for t in targets:
            s = stats[(t, opn)]
            rows.append(
                [
                    opn,
                    t,
                    c.fmt(s["median"]),
                    c.fmt(s["p90"]),
                    c.fmt(s["p99"]),
                    f"{s['median'] / dev:.2f}x",
                ]
            )
            results.setdefault(opn, {})[t] = {"ms": s, "ratio_median_vs_dev": s["median"] / dev}
    print()
    c.print_table(["operation", "target", "median ms", "p90 ms", "p99 ms", "vs dev"], rows)
    data = {
        "benchmark": "cluster",
        "quick": args.quick,
        "params": {"repeat": repeat, "ops": ops, "seed": args.seed, "raft_multiplier": 1},
        "machine": info,
        "method": __doc__,
        "results": results,
    }
    c.save("cluster", args.quick, args.out, data)
    if not args.no_chart:
        c.bar_chart(
            c.chart_path("cluster", args.quick, args.out),
            "Dev agent vs 3-server cluster (same host, Raft on disk)",
            {
                op.replace(" acquire+release", "\nacquire+release").replace(
                    "raw session ", "session\n"
                ): {t: stats[(t, op)] for t in targets}
                for op in ops_names
            },
            "ms per operation",
        )


if __name__ == "__main__":
    main()

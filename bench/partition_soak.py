"""Partition soak: hundreds of seeded network-partition rounds, locksmith beside ``consul lock``.

Method. A :class:`locksmith.testing.NetnsCluster` (3 Consul servers, 3 agent hosts, each with
its application host, all in network namespaces) runs, on every application host, one
locksmith application (a lock, an election and a 2-slot semaphore on one ``LockManager``,
with fenced writes) and one ``consul lock`` loop. A seeded schedule
(:func:`locksmith.testing.make_schedule`) cuts hosts off, splits the Raft leader with one
application host from the rest, cuts applications from their agent and agents from the
servers, and flaps links, for short, long (past locksmith's server-side reaping) and very long
(past ``consul lock``'s) periods. The histories are checked afterwards
(:func:`locksmith.testing.check_history`, :func:`locksmith.testing.check_consul_lock`).

Output: ``bench/results/partitions-<run>.md`` (the summary, in git) and
``bench/results/raw/<run>/`` (every history, process log and ``result.json``; not in git).
The exit status is 1 if locksmith broke a rule (``consul lock``'s overlaps are reported, not
counted).

Run (as root, on Linux): ``python bench/partition_soak.py --rounds 500 --seed 1``. Needs root
and ``ip``; about 50 s a round on a 2-core machine. ``--check bench/results/raw/<run>`` checks
the histories of an earlier (or interrupted) run again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/partition_soak.py` from a checkout
    sys.path.insert(0, str(ROOT))

from locksmith.testing import (  # noqa: E402
    ROUND_KINDS,
    PartitionRun,
    RunConfig,
    netns_unavailable_reason,
    render_report,
)
from locksmith.testing._partitions import recheck  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=500)
    ap.add_argument("--kinds", default=",".join(ROUND_KINDS), help="comma-separated kinds")
    ap.add_argument(
        "--targets",
        default=None,
        help="comma-separated target choices, e.g. holder:consul-lock (default: all)",
    )
    ap.add_argument(
        "--lengths",
        default=None,
        help="weights of short,long,very_long, e.g. 0,0,1 (default: 0.35,0.45,0.2)",
    )
    ap.add_argument(
        "--cl-long-share",
        type=float,
        default=0.3,
        help="share of consul lock children that run 60-120 s (default 0.3)",
    )
    ap.add_argument("--ttl", type=float, default=10.0)
    ap.add_argument("--lock-delay", type=float, default=1.0)
    ap.add_argument("--servers", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument(
        "--front-end",
        choices=("mixed", "threaded", "async"),
        default="mixed",
        help="the applications' manager: threaded on even hosts and asyncio on odd (mixed, "
        "the default), or one of them on every host",
    )
    ap.add_argument("--no-consul-lock", action="store_true", help="skip the comparison")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the summary goes")
    ap.add_argument("--consul", default=None, help="consul binary (default: find_consul)")
    ap.add_argument(
        "--check",
        type=Path,
        metavar="RAW_DIR",
        help="check the histories of an earlier run again (no cluster, no root needed) and "
        "write its summary next to the raw folder's parent",
    )
    args = ap.parse_args(argv)
    if args.check is not None:
        result = recheck(args.check)
        cfg = result.config
        report = render_report(
            [result],
            title=f"Partition soak, seed {cfg.seed}, {result.rounds_done} rounds (re-checked)",
            command=f"python bench/partition_soak.py --seed {cfg.seed} --rounds {cfg.rounds}",
        )
        summary = args.out / f"{Path(args.check).name}.md"
        summary.write_text(report)
        print(report)
        print(json.dumps(result.summary(), indent=1))
        print(f"summary: {summary}")
        return 1 if result.violations else 0
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"partition soak skipped: network namespaces unavailable: {reason}")
        return 2
    cfg = RunConfig(
        seed=args.seed,
        rounds=args.rounds,
        kinds=tuple(args.kinds.split(",")),
        ttl=args.ttl,
        lock_delay=args.lock_delay,
        servers=args.servers,
        hosts=args.hosts,
        consul_lock=not args.no_consul_lock,
        front_end=args.front_end,
        targets=tuple(args.targets.split(",")) if args.targets else None,
        cl_long_hold_share=args.cl_long_share,
        lengths=(
            dict(
                zip(
                    ("short", "long", "very_long"), map(float, args.lengths.split(",")), strict=True
                )
            )
            if args.lengths
            else None
        ),
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = args.out / "raw" / f"partitions-{stamp}-seed{args.seed}"
    t0 = time.monotonic()
    result = PartitionRun(cfg, raw, binary=args.consul).run()
    command = (
        f"python bench/partition_soak.py --seed {args.seed} --rounds {args.rounds}"
        + (f" --kinds {args.kinds}" if args.kinds != ",".join(ROUND_KINDS) else "")
        + (f" --ttl {args.ttl:g}" if args.ttl != 10.0 else "")
        + (f" --lock-delay {args.lock_delay:g}" if args.lock_delay != 1.0 else "")
        + (" --no-consul-lock" if args.no_consul_lock else "")
        + (f" --targets {args.targets}" if args.targets else "")
        + (f" --lengths {args.lengths}" if args.lengths else "")
        + (f" --cl-long-share {args.cl_long_share:g}" if args.cl_long_share != 0.3 else "")
    )
    report = render_report(
        [result],
        title=f"Partition soak, seed {args.seed}, {result.rounds_done} rounds",
        command=command,
    )
    summary = args.out / f"partitions-{stamp}-seed{args.seed}.md"
    summary.write_text(report)
    print(report)
    print(json.dumps(result.summary(), indent=1))
    print(f"summary: {summary}\nraw histories: {raw}\ntook {time.monotonic() - t0:.0f} s")
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())

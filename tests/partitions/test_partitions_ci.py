"""Network partitions, CI profile: one seeded schedule playing every partition kind once.

Three Consul servers, three agent hosts with an application host each, in network
namespaces; on each application host a locksmith application (lock, election, 2-slot
semaphore, fenced writes) and a ``consul lock`` loop. Long cuts (past locksmith's server-side
reaping, so that a rival takes over while the cut holder still runs) for a host cut off, an
application cut from its agent and the leader split off with one host; short ones for the
rest. About three minutes on a 2-core machine. ``LOCKSMITH_PARTITION_SEED=N`` replays a seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from locksmith.testing import ROUND_KINDS, PartitionRun, RunConfig, render_report

pytestmark = [pytest.mark.partitions, pytest.mark.slow, pytest.mark.timeout(900)]

SEED = int(os.environ.get("LOCKSMITH_PARTITION_SEED", "20261201"))
CI_LENGTHS = {
    "isolate_host": "long",
    "cut_app": "long",
    "split_leader": "long",
    "cut_agent": "short",
    "isolate_leader": "short",
    "flap": "short",
}


def test_ci_profile_keeps_every_rule(netns_ok: None, tmp_path: Path) -> None:
    cfg = RunConfig(
        seed=SEED,
        rounds=len(ROUND_KINDS),
        length_by_kind=CI_LENGTHS,
        long_hold_share=0.5,
    )
    result = PartitionRun(cfg, tmp_path / "run").run()
    print(render_report([result], title=f"CI profile, seed {SEED}", command=f"seed {SEED}"))
    summary = result.summary()
    ls = summary["locksmith"]
    # The run did what it claims: every kind once, locks changing hands, writes, losses.
    assert {k: sum(v.values()) for k, v in summary["partitions"].items()} == dict.fromkeys(
        ROUND_KINDS, 1
    ), result.notes
    assert all(
        ls["acquisitions"].get(k, 0) >= 3 for k in ("lock", "election", "semaphore", "fair")
    ), ls["acquisitions"]
    assert ls["fenced_writes"]["accepted"] >= 100
    assert sum(ls["losses"].values()) >= 1, "no partition made a holder lose its lock"
    assert summary["consul_lock"]["children"] >= 2  # the comparison ran beside it
    # The lease-deadline rule has its evidence: every application recorded the manager's
    # renewals (from its stdlib log events), and the rule judged every lease_expired loss.
    renewing = {e["proc"] for e in result.events if e.get("ev") == "renewed"}
    apps = {
        e["proc"]
        for e in result.events
        if e.get("ev") == "start" and str(e["proc"]).startswith("app")
    }
    assert apps and apps <= renewing, f"no renewals recorded by {sorted(apps - renewing)}"
    expired = sum(
        1 for e in result.events if e.get("ev") == "lost" and e.get("reason") == "lease_expired"
    )
    assert ls["deadline_checks"]["leases"] >= min(expired, 1)
    # Every violation fails, those that look like the fixed findings P1 and P2 too (the
    # checker still labels them, which says where to look first).
    assert not result.violations, (
        f"seed {SEED}: {len(result.violations)} violations:\n"
        + "\n\n".join(
            f"{v.rule} ({v.known_finding or 'new'}): {v.message}\n{v.excerpt()}"
            for v in result.violations[:10]
        )
    )

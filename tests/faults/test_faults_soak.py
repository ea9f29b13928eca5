"""Fault injection, soak profile (on demand): hundreds of seeded rounds, with a report.

Run::

    LOCKSMITH_SOAK=1 LOCKSMITH_SOAK_ROUNDS=300 python -m pytest -m soak -n 0 -s \\
        tests/faults/test_faults_soak.py

It writes the summary ``bench/results/faults-<time>-seed<N>.md`` (counts, violations, the
command to replay the seed) and the raw report ``bench/results/raw/faults-<time>-seed<N>.json``
(every event and fault; ``raw/`` is git-ignored), then fails if any invariant broke.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faults.scenario import ALL_FAULTS, Scenario, ScenarioConfig, write_report
from locksmith.testing import ConsulCluster

pytestmark = [
    pytest.mark.soak,
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("LOCKSMITH_SOAK"),
        reason="soak profile runs on demand: set LOCKSMITH_SOAK=1 (see the module docstring)",
    ),
]

RESULTS = Path(
    os.environ.get("LOCKSMITH_SOAK_RESULTS")
    or Path(__file__).resolve().parents[2] / "bench" / "results"
)


@pytest.mark.timeout(0)
def test_soak(consul_cluster: ConsulCluster, tmp_path: Path) -> None:
    cfg = ScenarioConfig(
        seed=int(os.environ.get("LOCKSMITH_FAULT_SEED", "1")),
        rounds=int(os.environ.get("LOCKSMITH_SOAK_ROUNDS", "300")),
        faults=ALL_FAULTS,
        thread_holders=int(os.environ.get("LOCKSMITH_SOAK_THREADS", "3")),
        process_holders=int(os.environ.get("LOCKSMITH_SOAK_PROCESSES", "4")),
        keys=int(os.environ.get("LOCKSMITH_SOAK_KEYS", "3")),
        cover_all=True,
    )
    result = Scenario(consul_cluster, cfg, log_dir=tmp_path / "holders").run()
    js, md = write_report(result, RESULTS)
    print(f"report: {js} {md}")
    print(result.summary())
    assert len(result.faults) >= cfg.rounds // 2, result.notes
    assert not result.violations, "\n".join(result.violations[:50]) + f"\nreport: {md}"

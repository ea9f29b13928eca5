"""Network partitions, soak profile (on demand, never in CI): hundreds of seeded rounds.

Run (as root)::

    LOCKSMITH_SOAK=1 LOCKSMITH_PARTITION_ROUNDS=500 python -m pytest -m soak -n 0 -s \\
        tests/partitions/test_partition_soak.py

or the same through ``python bench/partition_soak.py --rounds 500 --seed 1``. It writes the
summary to ``bench/results/partitions-<time>-seed<N>.md`` and every history to
``bench/results/raw/`` (ignored by git), then fails if locksmith broke a rule.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from locksmith.testing import PartitionRun, RunConfig, render_report

pytestmark = [
    pytest.mark.soak,
    pytest.mark.partitions,
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
def test_partition_soak(netns_ok: None) -> None:
    seed = int(os.environ.get("LOCKSMITH_PARTITION_SEED", "1"))
    rounds = int(os.environ.get("LOCKSMITH_PARTITION_ROUNDS", "500"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = RESULTS / "raw" / f"partitions-{stamp}-seed{seed}"
    result = PartitionRun(RunConfig(seed=seed, rounds=rounds), raw).run()
    report = render_report(
        [result],
        title=f"Partition soak, seed {seed}, {result.rounds_done} rounds",
        command=f"python bench/partition_soak.py --seed {seed} --rounds {rounds}",
    )
    summary = RESULTS / f"partitions-{stamp}-seed{seed}.md"
    summary.write_text(report)
    print(report)
    assert result.rounds_done == rounds, result.notes
    assert not result.violations, "\n".join(v.message for v in result.violations[:50]) + (
        f"\nreport: {summary}"
    )

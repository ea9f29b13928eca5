"""Where the fault soak writes its reports: summaries next to the benchmarks, raw logs ignored.

A soak run's raw report is every event and fault (~1.5 MB, ~75,000 lines of JSON): it is
written to ``<results>/raw/``, which git ignores, while the short Markdown summary stays next
to the other results so that it can be committed and linked from ``docs/faults.md``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from faults.scenario import ScenarioConfig, ScenarioResult, write_report

REPO = Path(__file__).resolve().parents[2]


def _result() -> ScenarioResult:
    return ScenarioResult(
        config=ScenarioConfig(seed=7, rounds=1),
        run_id="t",
        events=[{"ev": "acquire", "t": 0.0}],
        faults=[],
        violations=[],
        paused={},
        killed={},
        duration=1.0,
    )


def test_raw_report_goes_to_the_raw_folder_and_the_summary_links_it(tmp_path: Path) -> None:
    raw, md = write_report(_result(), tmp_path)
    assert md.parent == tmp_path and md.suffix == ".md"
    assert raw.parent == tmp_path / "raw" and raw.suffix == ".json"
    assert raw.stem == md.stem
    assert json.loads(raw.read_text())["summary"]["seed"] == 7
    assert f"raw/{raw.name}" in md.read_text()


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)


@pytest.fixture
def git_checkout() -> None:
    if shutil.which("git") is None or _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout (e.g. an unpacked sdist)")


@pytest.mark.usefixtures("git_checkout")
def test_raw_reports_are_ignored_and_none_is_committed() -> None:
    assert _git("check-ignore", "-q", "bench/results/raw/faults-x-seed1.json").returncode == 0
    tracked = _git("ls-files", "bench/results").stdout.split()
    raw = [p for p in tracked if Path(p).name.startswith("faults-") and p.endswith(".json")]
    assert raw == [], f"raw fault reports are committed: {raw}"

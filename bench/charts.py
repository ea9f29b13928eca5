"""Draw the charts of docs/performance.md from the saved results, without running anything.

Each benchmark draws its chart when it runs (if matplotlib is installed); this script draws
them again from ``results/<name>.json``, so that the charts always show the numbers the docs
quote, and a run on a machine without matplotlib can be charted later. Writes
``results/<name>.png`` next to each JSON and, with ``--docs``, copies them to
``docs/assets/bench/``.

Run: ``python bench/charts.py [--docs]`` (needs ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
from scale import scale_chart

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "assets" / "bench"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        print(f"{path}: missing, no chart")
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _ms(results: dict[str, Any], names: list[str] | None = None) -> dict[str, Any]:
    return {n: results[n]["ms"] for n in (names or list(results))}


def draw() -> list[Path]:
    """Draw every chart whose results exist; return the PNG paths."""
    made: list[Path] = []
    if (d := _load("acquire_release")) is not None:
        floor = d["results"]["raw-http"]["ms"]["median"]
        target = d.get("target", {}).get("locksmith_vs_floor_median_max", 1.2)
        path = RESULTS / "acquire_release.png"
        c.bar_chart(
            path,
            f"Uncontended acquire+release, dev agent ({d['machine']['consul']})",
            {"acquire+release": _ms(d["results"])},
            "ms per pair",
            ref_lines={f"{target}x floor": target * floor},
        )
        made.append(path)
    if (d := _load("handoff")) is not None:
        path = RESULTS / "handoff.png"
        c.bar_chart(
            path,
            f"Graceful handoff (release -> next holder), dev agent, {d['machine']['consul']}",
            {"handoff": _ms(d["results"])},
            "ms",
        )
        made.append(path)
    if (d := _load("failover")) is not None:
        path = RESULTS / "failover.png"
        c.bar_chart(
            path,
            "Crash failover: acquired minus server bound (last renew + 2xTTL + lock-delay)",
            {n: {"excess ms": r["excess_over_bound_ms"]} for n, r in d["results"].items()},
            "ms after the server bound (log)",
            log=True,
            ref_lines={"target +100 ms": 100.0},
        )
        made.append(path)
    if (d := _load("cluster")) is not None:
        path = RESULTS / "cluster.png"
        c.bar_chart(
            path,
            "Dev agent vs 3-server cluster (same host, Raft on disk)",
            {
                op.replace(" acquire+release", "\nacquire+release").replace(
                    "raw session ", "session\n"
                ): {t: r["ms"] for t, r in targets.items()}
                for op, targets in d["results"].items()
            },
            "ms per operation",
        )
        made.append(path)
    if (d := _load("async_http")) is not None:
        floor = d["results"]["raw-asyncio"]["ms"]["median"]
        path = RESULTS / "async_http.png"
        c.bar_chart(
            path,
            f"Async acquire+release pairs, dev agent ({d['machine']['consul']})",
            {"acquire+release": _ms(d["results"])},
            "ms per pair",
            ref_lines={"1.2x floor": 1.2 * floor},
        )
        made.append(path)
    if (d := _load("scale")) is not None:
        path = RESULTS / "scale.png"
        plain = [r for r in d["holding"] if r.get("mode", "locks") == "locks"]
        scale_chart(path, plain, d["contention"])
        made.append(path)
    return [p for p in made if p.exists()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "charts")
    p.add_argument("--docs", action="store_true", help="copy the charts to docs/assets/bench")
    args = p.parse_args()
    made = draw()
    for path in made:
        print(f"drew {path}")
        if args.docs:
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS / path.name)


if __name__ == "__main__":
    main()

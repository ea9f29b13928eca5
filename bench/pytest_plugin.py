"""What does the ``locksmith.testing`` pytest plugin add to a pytest run that does not use it?

Target (issue #12): under 50 ms; it cost ~0.3 s, importing the whole harness on every run.
Every environment that installs locksmith loads the plugin (``pytest11`` entry point), so
an unrelated project's test run pays it. Method: a throw-away directory with one trivial
test; ``python -m pytest -q -p no:cacheprovider DIR`` with the plugin (as installed) and
without it (``-p no:locksmith``), ``--runs`` times each, interleaved in a shuffled order
after two warm-up rounds; the table shows median, p90 and min wall time in milliseconds and
the difference of the medians:

* ``as is``: the tree's code on PYTHONPATH (loading the plugin imports ``locksmith``, whose
  ``__init__`` imports the whole library: the library's business, not the plugin's);
* ``lazy init``: the tree's ``locksmith/__init__.py`` replaced by a generated lazy one
  (``_common.lazy_init_overlay``), so that the difference is what the plugin costs itself.

Needs the package installed (``pip install -e .``: the entry point registers the plugin).
Run: ``python bench/pytest_plugin.py [--quick] [--runs N] [--tree DIR] [--label NAME]``.
Writes ``results/pytest_plugin[.<label>][.quick].json``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c


def main() -> None:
    p = c.parser(__doc__.splitlines()[0] if __doc__ else "pytest plugin")
    p.add_argument("--runs", type=int, default=None, help="timed runs per command")
    p.add_argument("--tree", type=Path, default=c.ROOT, help="source tree whose plugin to load")
    p.add_argument("--label", default=None, help="suffix of the result file (e.g. before)")
    args = p.parse_args()
    runs = args.runs or (10 if args.quick else 30)
    tree = args.tree.resolve()
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "PYTEST")) and k != "CONSUL_HTTP_ADDR"
    }
    with c.lazy_init_overlay(tree) as overlay, tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "test_unrelated.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)]
        commands = {}
        # An eager locksmith/__init__ (before 0.2) is also measured with a lazy one.
        variants = [("as is", tree)] + ([("lazy init", overlay)] if overlay != tree else [])
        for variant, path in variants:
            env = {**base, "PYTHONPATH": str(path)}
            commands[f"{variant}: with the plugin"] = (pytest, env)
            commands[f"{variant}: -p no:locksmith"] = ([*pytest, "-p", "no:locksmith"], env)
        times = c.time_commands(commands, runs, seed=args.seed)
    rows = []
    results: dict[str, object] = {}
    for variant, _path in variants:
        with_ms = times[f"{variant}: with the plugin"]
        without_ms = times[f"{variant}: -p no:locksmith"]
        added = statistics.median(with_ms) - statistics.median(without_ms)
        results[variant] = {
            "with_plugin_ms": c.summarize(with_ms),
            "without_plugin_ms": c.summarize(without_ms),
            "added_median_ms": added,
            "samples_with_ms": with_ms,
            "samples_without_ms": without_ms,
        }
        for label, ms in ((f"{variant}: with the plugin", with_ms),
                          (f"{variant}: -p no:locksmith", without_ms)):  # fmt: skip
            s = c.summarize(ms)
            rows.append([label, c.fmt(s["median"], 1), c.fmt(s["p90"], 1), c.fmt(s["min"], 1), ""])
        rows.append([f"{variant}: added by the plugin", "", "", "", c.fmt(added, 1)])
    print(f"\nunrelated pytest run, wall time (ms), tree {tree}, {runs} runs each")
    c.print_table(["command", "median", "p90", "min", "added"], rows)
    name = f"pytest_plugin.{args.label}" if args.label else "pytest_plugin"
    c.save(
        name,
        args.quick,
        args.out,
        {
            "benchmark": "pytest_plugin",
            "target_added_ms": 50,
            "tree": str(tree),
            "tree_source_sha256": c.source_digest(tree),
            "runs": runs,
            "machine": c.machine_info(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()

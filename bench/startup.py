"""How long does ``locksmith --version`` take to start and exit, next to ``consul version``?

Target (issue #12): ``locksmith --version`` in at most 120 ms; it took 259 ms where
``consul version`` takes 26 ms. Every command runs ``--runs`` times, interleaved in a
shuffled order per round after two warm-up rounds (hyperfine-like, Python only), and the
table shows median, p90 and min wall time in milliseconds:

* ``python -c pass``: the interpreter's own floor;
* ``consul version``: the Go binary, for comparison;
* ``import locksmith``: the library's import (lazy since 0.2: the error tree only);
* ``locksmith --version`` / ``--help``: the console script pip installs (``from
  locksmith._cli import main; sys.exit(main())``), with the tree's code on PYTHONPATH;
* for a tree whose ``locksmith/__init__.py`` is eager (``--tree`` of 0.1), the same two
  ``(lazy init)``: with that file replaced by a generated lazy (PEP 562) one
  (``_common.lazy_init_overlay``), to show what its CLI cost by itself.

Run: ``python bench/startup.py [--quick] [--runs N] [--tree DIR] [--label NAME]``.
Writes ``results/startup[.<label>][.quick].json``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from locksmith.testing import find_consul

SCRIPT = """import sys
from locksmith._cli import main
if __name__ == "__main__":
    sys.exit(main())
"""


def main() -> None:
    p = c.parser(__doc__.splitlines()[0] if __doc__ else "startup")
    p.add_argument("--runs", type=int, default=None, help="timed runs per command")
    p.add_argument("--tree", type=Path, default=c.ROOT, help="source tree whose CLI to run")
    p.add_argument("--label", default=None, help="suffix of the result file (e.g. before)")
    args = p.parse_args()
    runs = args.runs or (10 if args.quick else 40)
    tree = args.tree.resolve()
    binary = args.consul or find_consul()
    py = sys.executable
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    with c.lazy_init_overlay(tree) as overlay, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "locksmith"
        script.write_text(f"#!{py}\n{SCRIPT}")
        script.chmod(0o755)
        env = {**base, "PYTHONPATH": str(tree)}
        lazy = {**base, "PYTHONPATH": str(overlay)}
        commands = {
            "python -c pass": ([py, "-c", "pass"], base),
            "consul version": ([str(binary), "version"], base),
            "import locksmith": ([py, "-c", "import locksmith"], env),
            "locksmith --version": ([str(script), "--version"], env),
            "locksmith --help": ([str(script), "--help"], env),
        }
        if overlay != tree:  # an eager locksmith/__init__ (before 0.2): also with a lazy one
            commands["locksmith --version (lazy init)"] = ([str(script), "--version"], lazy)
            commands["locksmith --help (lazy init)"] = ([str(script), "--help"], lazy)
        times = c.time_commands(commands, runs, seed=args.seed)
    rows = []
    results = {}
    for label, ms in times.items():
        s = c.summarize(ms)
        results[label] = {"ms": s, "samples_ms": ms}
        rows.append([label, c.fmt(s["median"], 1), c.fmt(s["p90"], 1), c.fmt(s["min"], 1)])
    print(f"\nstart-up wall time (ms), tree {tree}, {runs} runs each")
    c.print_table(["command", "median", "p90", "min"], rows)
    name = f"startup.{args.label}" if args.label else "startup"
    c.save(
        name,
        args.quick,
        args.out,
        {
            "benchmark": "startup",
            "target_ms": {"locksmith --version": 120},
            "tree": str(tree),
            "tree_source_sha256": c.source_digest(tree),
            "runs": runs,
            "machine": c.machine_info(binary),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()

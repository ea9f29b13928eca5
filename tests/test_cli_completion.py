"""Shell completion of the ``locksmith`` command through argcomplete (an optional extra).

A shell's completion function runs the command with ``_ARGCOMPLETE`` and ``COMP_LINE`` /
``COMP_POINT`` in the environment and reads the candidates from file descriptor 8, or from
the file named by ``_ARGCOMPLETE_STDOUT_FILENAME`` (what ``ARGCOMPLETE_USE_TEMPFILES`` does);
these tests do the latter with ``python -m locksmith``. Without ``_ARGCOMPLETE`` the CLI never
imports argcomplete, and without argcomplete installed it runs as usual.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import child_env

from locksmith import __version__
from locksmith import _cli as cli

IFS = "\013"  # argcomplete's default separator between candidates


def _complete(line: str, tmp_path: Path, *, point: int | None = None) -> list[str]:
    assert importlib.util.find_spec("argcomplete"), "argcomplete is in the dev extra"
    out_file = tmp_path / "completions"
    env = child_env(
        _ARGCOMPLETE="1",  # 1: the command is the first word (a console script)
        COMP_LINE=line,
        COMP_POINT=str(len(line) if point is None else point),
        _ARGCOMPLETE_STDOUT_FILENAME=str(out_file),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "locksmith"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    text = out_file.read_text(encoding="utf-8")
    return text.split(IFS) if text else []


def test_completes_the_commands(tmp_path: Path) -> None:
    candidates = _complete("locksmith ", tmp_path)
    assert {"sessions", "locks", "run", "elect", "leader"} <= set(candidates)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("locksmith se", ["sessions"]),
        ("locksmith sessions d", ["destroy"]),
        ("locksmith sessions list --st", ["--stale"]),
        ("locksmith --add", ["--address"]),
        ("locksmith run --pass", ["--pass-stdin"]),
    ],
)
def test_completes_subcommands_and_options(line: str, expected: list[str], tmp_path: Path) -> None:
    assert [c.strip() for c in _complete(line, tmp_path)] == expected


def test_entry_modules_carry_the_argcomplete_marker() -> None:
    # Global completion (activate-global-python-argcomplete) completes only scripts whose
    # module starts with the marker: the console script's package and `python -m locksmith`.
    package = Path(cli.__file__)
    for entry in (package, package.parent.with_name("__main__.py")):
        assert "PYTHON_ARGCOMPLETE_OK" in entry.read_text(encoding="utf-8")[:1024], entry


#: Runs ``locksmith --version`` through ``main()`` and reports what it returned and imported.
_PROBE = """
import contextlib, io, json, sys
{block}
from locksmith._cli import main
sys.argv = ["locksmith", "--version"]
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main()
modules = sorted(m for m in sys.modules if m.startswith("argcomplete"))
print(json.dumps({{"code": code, "out": out.getvalue().strip(), "modules": modules}}))
"""


def _probe(block: str = "", **env: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(block=block)],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_an_ordinary_run_does_not_import_argcomplete() -> None:
    assert _probe() == {"code": 0, "out": f"locksmith {__version__}", "modules": []}


def test_without_argcomplete_a_completion_request_runs_the_command() -> None:
    # sys.modules[name] = None makes `import argcomplete` raise ImportError.
    result = _probe(
        "sys.modules['argcomplete'] = None",
        _ARGCOMPLETE="1",
        COMP_LINE="locksmith ",
        COMP_POINT="10",
    )
    assert (result["code"], result["out"]) == (0, f"locksmith {__version__}")

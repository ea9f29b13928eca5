"""The layout of the ``locksmith._cli`` package: documented modules, imports only downwards.

The command line is split by responsibility (see the package docstring). These tests keep it
that way: every module says what it is for, lower modules never import higher ones (so the
imports stay acyclic), and every command of the parser is wired to a function.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from locksmith import _cli as cli
from locksmith._cli import _parser

PACKAGE = Path(cli.__file__).parent

#: Each module's layer; a module may import only modules of a strictly lower layer.
LAYERS = {
    "_exit": 0,
    "_logging": 0,
    "_output": 1,
    "_parser": 2,
    "_context": 2,
    "_cleanup": 2,
    "_status": 2,
    "_sessions": 3,
    "_locks": 3,
    "_guard": 3,
    "_run": 4,
    "_hold": 4,
    "_leader": 3,
    "__init__": 5,
}


def test_every_module_has_a_layer() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(LAYERS)


def _cli_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "locksmith._cli":
                found.update(a.name for a in node.names)
            elif node.module.startswith("locksmith._cli."):
                found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            found.update(
                a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("locksmith._cli.")
            )
    return found


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_modules_import_only_lower_layers(module: str) -> None:
    for imported in _cli_imports(module):
        assert LAYERS[imported] < LAYERS[module], f"{module} imports {imported}"


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_every_module_says_what_it_is_for(module: str) -> None:
    name = "locksmith._cli" if module == "__init__" else f"locksmith._cli.{module}"
    doc = importlib.import_module(name).__doc__
    assert doc and len(doc.strip()) > 40


def test_package_docstring_names_every_module() -> None:
    assert cli.__doc__ is not None
    for module in LAYERS:
        if module != "__init__":
            assert f"``{module}``" in cli.__doc__, module


#: Positional arguments that make each command's command line complete.
ARGUMENTS = {"sessions node": ["n1"], "sessions info": ["ID"], "sessions renew": ["ID"]}
ARGUMENTS |= {"sessions destroy": ["ID"], "run": ["p"], "elect": ["k"], "leader": ["k"]}
ARGUMENTS |= {"hold": ["p"]}


def test_every_command_is_wired_to_a_function() -> None:
    assert set(cli.COMMANDS) == set(_parser.COMMAND_PATHS)
    parser = cli.build_parser()
    for path in _parser.COMMAND_PATHS:
        args = parser.parse_args([*path.split(), *ARGUMENTS.get(path, [])])
        assert args.handler is cli.COMMANDS[path], path
        assert callable(cli.COMMANDS[path].resolve()), path  # the module has the function


#: Run in a fresh interpreter: ``locksmith._cli.main(argv)`` with the ``locksmith`` package
#: stubbed, so that only the CLI package's own imports count (``import locksmith`` itself
#: belongs to the library); prints the modules it loaded.
_PROBE = """
import contextlib, importlib.util, io, json, sys, types
spec = importlib.util.find_spec("locksmith")
stub = types.ModuleType("locksmith")
stub.__path__ = list(spec.submodule_search_locations)
stub.__version__ = "0.0.0+probe"
sys.modules["locksmith"] = stub
before = set(sys.modules)
out = io.StringIO()
from locksmith._cli import main
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
loaded = sorted(set(sys.modules) - before)
print(json.dumps({"code": code, "out": out.getvalue(), "loaded": loaded}))
"""

#: What ``--version`` and ``--help`` must not load: the logging stack, the retry library,
#: the HTTP client and transport, the manager, and the optional completion package.
HEAVY = ("structlog", "tenacity", "consul", "requests", "urllib3", "argcomplete", "ssl")
HEAVY_LOCKSMITH = ("_client", "_transport", "_endpoints", "_manager", "_engine", "_child")


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "--help"], ["hold", "-h"]])
def test_version_and_help_load_none_of_the_heavy_parts(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(PACKAGE.parents[1])},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0
    assert "0.0.0+probe" in result["out"] or "usage:" in result["out"]
    heavy = [m for m in result["loaded"] if m.split(".")[0] in HEAVY]
    heavy += [
        m
        for m in result["loaded"]
        if m.startswith("locksmith.") and m.split(".")[1] in HEAVY_LOCKSMITH
    ]
    assert not heavy, f"`locksmith {' '.join(argv)}` loaded {heavy}"

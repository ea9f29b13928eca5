"""How the distribution presents itself: metadata, the package index page, the sdist.

``consul-locksmith`` ships a library, a command line and a pytest plugin. Its metadata says so
(classifiers, a ``testing`` extra for the Docker fixture), its long description (README.md)
has no link that breaks on the package index page (relative links resolve against the index's
own address there), and its sdist carries what it takes to check the release: the tests, the
documentation they run, and the changelog.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data["project"]  # type: ignore[no-any-return]


def test_classifiers_say_what_the_distribution_is(project: dict[str, Any]) -> None:
    classifiers = set(project["classifiers"])
    assert {
        "Development Status :: 3 - Alpha",
        "Framework :: Pytest",
        "Environment :: Console",
        "Operating System :: POSIX :: Linux",
        "Operating System :: MacOS",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
    } <= classifiers
    # A license expression (PEP 639) and a license classifier may not both be given.
    assert not any(c.startswith("License ::") for c in classifiers)
    assert project["license"] == "Apache-2.0"


def test_the_docker_fixture_has_a_testing_extra(project: dict[str, Any]) -> None:
    testing = project["optional-dependencies"]["testing"]
    assert any(req.startswith("testcontainers") for req in testing)
    # The plugin is registered for every pytest run of an environment that installs us.
    assert project["entry-points"]["pytest11"] == {"locksmith": "locksmith.testing.plugin"}


def test_project_urls_are_absolute(project: dict[str, Any]) -> None:
    for label, url in project.get("urls", {}).items():
        assert re.match(r"https://[^/\s]+\.[^/\s]+/", url), f"{label}: {url!r} is not absolute"


#: ``[text](target)`` and ``<https://...>``-free Markdown links; images too.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


def test_readme_links_work_on_the_package_index_page() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = _LINK.findall(text) + re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, re.M)
    relative = [t for t in targets if not re.match(r"(https?://|mailto:|#)", t)]
    assert relative == [], f"README.md links that break on the index page: {relative}"


@pytest.mark.timeout(300)
def test_sdist_carries_docs_tests_and_changelog(tmp_path: Path) -> None:
    if importlib.util.find_spec("build") is None:
        pytest.skip("the `build` frontend is not installed: pip install -e '.[dev]'")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = tmp_path.glob("consul_locksmith-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for wanted in (
        "CHANGELOG.md",
        "README.md",
        "mkdocs.yml",
        "docs/index.md",
        "docs/cli.md",
        "docs/assets/bench/failover.png",
        "tests/conftest.py",
        "tests/support/__init__.py",
        "tests/faults/scenario.py",
        "tests/test_cli_run.py",
        "docker-compose.yml",
        "docker/Dockerfile",
        "locksmith/py.typed",
        "locksmith/testing/plugin.py",
    ):
        assert wanted in names, f"{wanted} is not in {sdist.name}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("bench/results/raw/")]

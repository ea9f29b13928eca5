"""The documentation cannot rot: every Python sample runs, and the site builds strictly.

Every fenced ```` ```python ```` block of ``README.md`` and ``docs/**/*.md`` is executed against
the real Consul agent of the ``consul_addr`` fixture, with ``CONSUL_HTTP_ADDR`` pointing at it
(so ``Consul()`` and ``LockManager()`` built from the environment work). Each block must be
self-contained and fast. A sample that must not run (it needs a Docker engine, waits for TTLs,
or is a deliberately incomplete fragment) is preceded by the marker line

    <!-- not-tested: <reason> -->

and is reported as skipped with that reason, so the count and the reasons show in every test
report (``-ra``). A sample that defines ``test_*`` functions (a test module for the
``locksmith.testing`` plugin) has them called with the ``consul_addr``/``consul_agent``
fixtures. A sample that leaves a session behind on the agent fails: the docs teach clean
shutdown.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import structlog

from locksmith import Consul

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))] if p.is_file()]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_MARKER = re.compile(r"^\s*<!--\s*not-tested:\s*(?P<reason>.*?)\s*-->\s*$")
_ANY_MARKER = re.compile(r"<!--\s*not-tested")
_PYTHON_LANGS = {"python", "py", "python3"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip_reason: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """Return every fenced block of ``path``, with its not-tested marker if it has one.

    Raises:
        ValueError: A fence is not closed, or a not-tested marker is not directly followed
            by a fenced block.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (line, reason) of a marker awaiting its fence
    i = 0
    while i < len(lines):
        text = lines[i]
        marker = _MARKER.match(text)
        if marker:
            pending = (i + 1, marker.group("reason"))
            i += 1
            continue
        if _ANY_MARKER.search(text):
            raise ValueError(f"{path}:{i + 1}: malformed not-tested marker: {text.strip()!r}")
        m = _FENCE.match(text)
        if not m:
            if text.strip() and pending is not None:
                raise ValueError(
                    f"{path}:{pending[0]}: not-tested marker is not followed by a code block"
                )
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        info = m.group("info").strip()
        lang = info.split()[0].lower() if info else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and set(close) == {fence[0]}:
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        else:
            raise ValueError(f"{path}:{i + 1}: code block is never closed")
        reason = pending[1] if pending is not None else None
        blocks.append(Block(path, i + 1, lang, textwrap.dedent("\n".join(body)) + "\n", reason))
        pending = None
        i = j + 1
    if pending is not None:
        raise ValueError(f"{path}:{pending[0]}: not-tested marker at the end of the file")
    return blocks


def _python_blocks() -> list[Block]:
    out: list[Block] = []
    for path in DOC_FILES:
        out.extend(b for b in parse_blocks(path) if b.lang in _PYTHON_LANGS)
    return out


PYTHON_BLOCKS = _python_blocks()


# ------------------------------------------------------------------ the extraction itself


def test_parser_finds_blocks_and_markers(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "# t\n\n```python\nprint(1)\n```\n\n<!-- not-tested: needs Docker -->\n"
        "```python\nimport docker\n```\n\n!!! note\n    ```python\n    x = 1\n    ```\n"
        "\n````markdown\n```python\nnot a block\n```\n````\n",
        encoding="utf-8",
    )
    blocks = parse_blocks(doc)
    assert [(b.lang, b.code, b.skip_reason) for b in blocks] == [
        ("python", "print(1)\n", None),
        ("python", "import docker\n", "needs Docker"),
        ("python", "x = 1\n", None),
        ("markdown", "```python\nnot a block\n```\n", None),
    ]


def test_parser_rejects_dangling_marker_and_unclosed_fence(tmp_path: Path) -> None:
    dangling = tmp_path / "d.md"
    dangling.write_text("<!-- not-tested: why -->\nsome text\n```python\nx\n```\n")
    with pytest.raises(ValueError, match="not followed by a code block"):
        parse_blocks(dangling)
    unclosed = tmp_path / "u.md"
    unclosed.write_text("```python\nx = 1\n")
    with pytest.raises(ValueError, match="never closed"):
        parse_blocks(unclosed)


def test_every_doc_file_parses() -> None:
    for path in DOC_FILES:
        parse_blocks(path)  # raises on a dangling marker or an unclosed fence


def test_samples_are_found_in_readme_and_docs() -> None:
    by_file: dict[str, int] = {}
    for b in PYTHON_BLOCKS:
        by_file[str(b.path.relative_to(ROOT))] = by_file.get(str(b.path.relative_to(ROOT)), 0) + 1
    # The README has the Session API ten-liner plus one example per recipe.
    assert by_file.get("README.md", 0) >= 7, by_file
    recipes = sorted((ROOT / "docs" / "recipes").glob("*.md"))
    assert recipes, "docs/recipes/ is empty"
    for page in recipes:
        runnable = [b for b in PYTHON_BLOCKS if b.path == page and b.skip_reason is None]
        assert runnable, f"{page.relative_to(ROOT)} has no runnable Python sample"


def test_not_tested_samples_are_few_and_justified() -> None:
    skipped = [b for b in PYTHON_BLOCKS if b.skip_reason is not None]
    for b in skipped:
        assert len(b.skip_reason or "") >= 15, f"{b.id}: give a real reason, not {b.skip_reason!r}"
    # Untested samples are the exception: at most one in ten.
    assert len(skipped) * 10 <= len(PYTHON_BLOCKS), [b.id for b in skipped]


# ------------------------------------------------------------------ running the samples


def _our_sessions(addr: str) -> set[str]:
    with Consul(addr) as consul:
        return {s.id for s in consul.sessions.list()}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_sample_runs(
    block: Block,
    consul_agent: Any,
    consul_addr: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    if block.skip_reason is not None:
        pytest.skip(f"not-tested: {block.skip_reason}")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul_addr)
    monkeypatch.chdir(tmp_path)
    external = getattr(consul_agent, "pid", None) is None  # a user-supplied agent is shared
    before = set() if external else _our_sessions(consul_addr)
    code = compile(block.code, f"<{block.id}>", "exec")
    namespace: dict[str, Any] = {"__name__": "__docs_sample__"}
    logging_config = structlog.get_config()  # a sample may configure logging, as apps do
    loggers = [logging.getLogger(), logging.getLogger("locksmith")]
    saved = [(lg.level, list(lg.handlers)) for lg in loggers]
    try:
        exec(code, namespace)
    finally:
        structlog.configure(**logging_config)
        for lg, (level, handlers) in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            lg.handlers[:] = handlers
    # A sample that is a pytest test module: call its tests with the fixtures pytest would pass.
    fixtures = {"consul_addr": consul_addr, "consul_agent": consul_agent}
    for name, fn in list(namespace.items()):
        if name.startswith("test_") and inspect.isfunction(fn):
            if fn.__code__.co_filename != code.co_filename:
                continue  # imported, not defined by the sample
            params = inspect.signature(fn).parameters
            unknown = set(params) - set(fixtures)
            assert not unknown, f"{block.id}: {name} wants fixtures {sorted(unknown)}"
            fn(**{p: fixtures[p] for p in params})
    if not external:
        leaked = _our_sessions(consul_addr) - before
        assert not leaked, f"{block.id} left sessions behind: {sorted(leaked)}"


# ------------------------------------------------------------------ README shape


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = parse_blocks(ROOT / "README.md")[0]
    assert "make demo" in first.code and "make test" in first.code
    assert "docs/" in text or "mkdocs" in text  # links to the documentation
    assert "3.11" in text and "1.8.7" in text  # the support matrix


# ------------------------------------------------------------------ the site


def _missing_docs_tools() -> list[str]:
    wanted = ["mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"]
    missing = []
    for name in wanted:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


def _visible_text(page: str) -> str:
    """The text a reader sees on an HTML page (no tags, attributes, scripts or styles)."""

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.hidden = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self.hidden += tag in ("script", "style")

        def handle_endtag(self, tag: str) -> None:
            self.hidden -= tag in ("script", "style")

        def handle_data(self, data: str) -> None:
            if not self.hidden:
                self.parts.append(data)

    parser = Text()
    parser.feed(page)
    return " ".join(parser.parts)


def test_every_public_name_is_in_the_reference_once() -> None:
    import locksmith.aio
    import locksmith.testing

    entries = [
        m.group(1)
        for page in sorted((ROOT / "docs" / "reference").glob("*.md"))
        for m in re.finditer(r"^::: (\S+)", page.read_text(encoding="utf-8"), re.M)
    ]
    assert not [e for e in entries if "._" in e], "the reference names private paths"
    twice = sorted({e for e in entries if entries.count(e) > 1})
    assert not twice, f"documented more than once: {twice}"
    for module in (locksmith, locksmith.aio, locksmith.testing):
        missing = [n for n in module.__all__ if f"{module.__name__}.{n}" not in entries]
        assert not missing, f"{module.__name__} names missing from docs/reference: {missing}"


@pytest.mark.timeout(600)
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    missing = _missing_docs_tools()
    if missing:
        pytest.skip(f"docs tools not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    # The API reference was generated from the docstrings, not left as `::: ...` text.
    manager_page = (site / "reference" / "manager" / "index.html").read_text(encoding="utf-8")
    assert "::: locksmith" not in manager_page
    assert "LockManager" in manager_page and "fenced_put" in manager_page
    # Docstrings' Sphinx roles were rendered (links or code), and no link was left unresolved.
    # Private paths appear only on the pages about internals.
    for page in sorted(site.rglob("*.html")):
        text = _visible_text(page.read_text(encoding="utf-8"))
        rel = page.relative_to(site).as_posix()
        roles = re.findall(r":(?:meth|class|func|attr|data|exc|mod|obj):`?", text)
        assert not roles, f"{rel}: unrendered Sphinx roles {roles[:5]}"
        assert "][locksmith." not in text, f"{rel}: an unresolved cross-reference"
        if not rel.startswith(("internals/", "changelog/", "faults/")):
            private = re.findall(r"locksmith\._[a-z_]+", text)
            assert not private, f"{rel}: private paths {sorted(set(private))}"
    # Every concept page carries its timeline figure.
    for page in sorted((ROOT / "docs" / "concepts").glob("*.md")):
        if page.name == "index.md":
            continue
        langs = {b.lang for b in parse_blocks(page)}
        assert "text" in langs or "<svg" in page.read_text(), f"{page.name} has no timeline figure"

"""Locate (and, on Debian-family machines, fetch) a ``consul`` binary for tests.

Resolution order, first hit wins:

1. ``$CONSUL_BIN`` (an error if it is set but not an executable file);
2. ``consul`` on ``$PATH``;
3. a cached copy at ``<cache>/consul/consul``, where ``<cache>`` is ``$LOCKSMITH_CACHE_DIR``,
   else ``<repo>/.cache`` in a source checkout, else ``~/.cache/locksmith``;
4. on a Debian-family machine, Debian's ``consul`` package from the *bullseye* suite, fetched
   with a private apt configuration (own sources list, lists and cache directories, reusing the
   mirror URI the machine is already configured with) and unpacked into the cache.

Nothing system-wide is changed. Step 4 downloads about 66 MB (the suite's package index and
the package): it is announced first, on stderr or, under pytest, on the terminal (see
:func:`set_announcer`), and ``LOCKSMITH_CONSUL_DOWNLOAD=0`` turns it off, making a missing
binary an error that says how to install one. ``python -m locksmith.testing fetch`` always
downloads: it is the explicit way. Anywhere else :class:`ConsulNotFoundError` explains what to
do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "DOWNLOAD_ENV",
    "ConsulNotFoundError",
    "announce",
    "cache_dir",
    "consul_version",
    "debian_mirror_uri",
    "download_consul_deb",
    "find_consul",
    "set_announcer",
]

_DEBIAN_SUITE = "bullseye"
_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_DEB822_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
_ONE_LINE_SOURCES = Path("/etc/apt/sources.list")
_HINT = (
    "Install Consul (a `consul` binary on PATH) or point CONSUL_BIN at one, "
    "or run Consul in Docker with `docker compose up` and point the tests at it with "
    "--consul-addr 127.0.0.1:8500 (or LOCKSMITH_TEST_CONSUL_ADDR)."
)
#: Set to 0 (or no, false, off) to refuse downloading a consul binary (step 4).
DOWNLOAD_ENV = "LOCKSMITH_CONSUL_DOWNLOAD"
_OFF = ("0", "no", "false", "off")


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


_announcer: list[Callable[[str], None]] = [_to_stderr]


def set_announcer(announcer: Callable[[str], None] | None) -> None:
    """Where :func:`announce` writes (None: stderr). The pytest plugin sets the terminal."""
    _announcer[0] = announcer or _to_stderr


def announce(line: str) -> None:
    """Tell the user what the harness fetches, and where (one line)."""
    _announcer[0](line)


def downloads_allowed() -> bool:
    """Whether step 4 may run: unless ``$LOCKSMITH_CONSUL_DOWNLOAD`` says 0/no/false/off."""
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() not in _OFF


def _install_help(cached: Path) -> str:
    return (
        f"no consul binary found (looked at CONSUL_BIN, PATH and {cached}), and downloading "
        f"one is turned off ({DOWNLOAD_ENV}=0). Install Consul: put a `consul` binary on PATH "
        "(HashiCorp's release or your distribution's package, e.g. Debian bullseye's `consul`) "
        "or point CONSUL_BIN at one; or download Debian's package into the cache with "
        "`python -m locksmith.testing fetch`; or test against an agent you run with "
        "--consul-addr HOST:PORT (or LOCKSMITH_TEST_CONSUL_ADDR)."
    )


class ConsulNotFoundError(RuntimeError):
    """No usable ``consul`` binary could be found or fetched."""


def _repo_root() -> Path | None:
    """Return the source checkout this package lives in, if it lives in one."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "locksmith").is_dir():
        return root
    return None


def cache_dir() -> Path:
    """Return the base cache directory (not created).

    Returns:
        ``$LOCKSMITH_CACHE_DIR`` if set, else ``<repo>/.cache`` in a source checkout, else
        ``~/.cache/locksmith``.
    """
    env = os.environ.get("LOCKSMITH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    root = _repo_root()
    if root is not None:
        return root / ".cache"
    return Path.home() / ".cache" / "locksmith"


_verified: dict[tuple[str, int, int], str] = {}


def consul_version(binary: Path | str, timeout: float = 20.0) -> str:
    """Run ``consul version`` and return its first line (e.g. ``Consul v1.8.7``).

    Args:
        binary: Path of the binary to check.
        timeout: Seconds to wait for it.

    Raises:
        ConsulNotFoundError: If it does not run or does not look like Consul.
    """
    try:
        st = Path(binary).stat()
    except OSError as exc:
        raise ConsulNotFoundError(f"{binary} does not exist: {exc}. {_HINT}") from exc
    key = (str(binary), st.st_mtime_ns, st.st_size)
    if key in _verified:
        return _verified[key]
    try:
        proc = subprocess.run(
            [str(binary), "version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConsulNotFoundError(f"{binary} does not run: {exc}. {_HINT}") from exc
    first = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not first.startswith("Consul v"):
        detail = (proc.stdout + proc.stderr).strip()[-500:]
        raise ConsulNotFoundError(
            f"{binary} is not a working consul binary (exit {proc.returncode}): {detail}. {_HINT}"
        )
    _verified[key] = first
    return first


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_consul(*, download: bool | None = None) -> Path:
    """Return the path of a working ``consul`` binary (see the module docstring for the order).

    Args:
        download: Whether step 4 (fetching Debian's package, announced first) may run;
            None: unless ``$LOCKSMITH_CONSUL_DOWNLOAD`` is 0.

    Raises:
        ConsulNotFoundError: With instructions, if no binary can be found or fetched.
    """
    allowed = downloads_allowed() if download is None else download
    env = os.environ.get("CONSUL_BIN")
    if env:
        path = Path(env).expanduser()
        if not _is_executable(path):
            raise ConsulNotFoundError(f"CONSUL_BIN={env!r} is not an executable file. {_HINT}")
        consul_version(path)
        return path.resolve()
    on_path = shutil.which("consul")
    if on_path:
        consul_version(on_path)
        return Path(on_path).resolve()
    cached = cache_dir() / "consul" / "consul"
    if _is_executable(cached):
        consul_version(cached)
        return cached
    if not allowed:
        if download is False:
            raise ConsulNotFoundError(
                f"no consul binary found (looked at CONSUL_BIN, PATH, {cached})."
            )
        raise ConsulNotFoundError(_install_help(cached))
    if not _is_debian_family():
        raise ConsulNotFoundError(
            f"no consul binary found (looked at CONSUL_BIN, PATH and {cached}), and this is not "
            f"a Debian-family machine with apt-get and dpkg-deb to fetch one. {_HINT}"
        )
    mirror = debian_mirror_uri()
    announce(
        f"locksmith.testing: no consul binary found (CONSUL_BIN, PATH, {cached}): downloading "
        f"Debian bullseye's consul package (about 66 MB with the package index) from "
        f"{mirror or 'the configured Debian mirror'} into {cached.parent} "
        f"({DOWNLOAD_ENV}=0 refuses downloads)"
    )
    path = download_consul_deb(cached.parent, mirror)
    announce(f"locksmith.testing: fetched {path}")
    return path


def _is_debian_family() -> bool:
    return (
        Path("/etc/debian_version").is_file()
        and shutil.which("apt-get") is not None
        and shutil.which("dpkg-deb") is not None
    )


def _parse_deb822(text: str) -> list[dict[str, str]]:
    """Parse deb822 paragraphs into ``{lower-case field: value}`` dicts (comments dropped)."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last_key: str | None = None
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if not raw.strip():
            if current:
                paragraphs.append(current)
            current, last_key = {}, None
            continue
        if raw[0] in " \t" and last_key is not None:
            current[last_key] += " " + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if sep:
            last_key = key.strip().lower()
            current[last_key] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def _is_main_suite(suite: str) -> bool:
    """True for a main suite (``bookworm``, ``stable``), not ``-security`` or ``-updates``."""
    return "-" not in suite and "/" not in suite


def _is_debian_archive(uri: str) -> bool:
    return uri.rstrip("/").endswith("/debian")


def debian_mirror_uri(
    deb822_path: Path = _DEB822_SOURCES, one_line_path: Path = _ONE_LINE_SOURCES
) -> str | None:
    """Return the Debian archive mirror URI this machine's apt is configured with.

    Reads the ``URIs:`` of the ``deb`` entry for a main suite (not ``-security``) in the deb822
    file, else the first matching ``deb`` line of the one-line-style file.

    Args:
        deb822_path: The deb822 sources file to read.
        one_line_path: The one-line-style sources list to read.

    Returns:
        The URI, or None if neither file names a Debian archive mirror.
    """
    with contextlib.suppress(OSError):
        for para in _parse_deb822(deb822_path.read_text()):
            if para.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in para.get("types", "").split():
                continue
            if not any(_is_main_suite(s) for s in para.get("suites", "").split()):
                continue
            for uri in para.get("uris", "").split():
                if _is_debian_archive(uri):
                    return uri
    with contextlib.suppress(OSError):
        for raw in one_line_path.read_text().splitlines():
            line = re.sub(r"\[[^\]]*\]", " ", raw.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                uri, suite = line[1], line[2]
                if _is_main_suite(suite) and _is_debian_archive(uri):
                    return uri
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on *path* (serialises concurrent downloads, e.g. xdist)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 300.0) -> None:
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        detail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise ConsulNotFoundError(
            f"fetching Debian's consul package failed: `{' '.join(cmd)}` exited "
            f"{proc.returncode}:\n{detail}\n{_HINT}"
        )


def download_consul_deb(target_dir: Path, mirror: str | None = None) -> Path:
    """Fetch Debian bullseye's ``consul`` package with a private apt setup; keep the binary.

    Args:
        target_dir: Directory that receives ``consul`` (created if needed).
        mirror: Archive URI; defaults to :func:`debian_mirror_uri`.

    Returns:
        Path of the verified binary, ``target_dir / "consul"``.

    Raises:
        ConsulNotFoundError: If no mirror is configured or a step fails.
    """
    target = target_dir / "consul"
    with _file_lock(target_dir / ".lock"):
        if _is_executable(target):  # another process fetched it while we waited
            consul_version(target)
            return target
        uri = mirror or debian_mirror_uri()
        if uri is None:
            raise ConsulNotFoundError(
                f"no consul binary found, and no Debian mirror is configured in "
                f"{_DEB822_SOURCES} or {_ONE_LINE_SOURCES} to fetch one from. {_HINT}"
            )
        with tempfile.TemporaryDirectory(prefix="apt-", dir=target_dir) as tmp_name:
            tmp = Path(tmp_name)
            sources = tmp / "sources.list"
            sources.write_text(f"deb [signed-by={_KEYRING}] {uri} {_DEBIAN_SUITE} main\n")
            lists, cache, debs = tmp / "lists", tmp / "cache", tmp / "debs"
            for d in (lists / "partial", cache / "archives" / "partial", debs):
                d.mkdir(parents=True)
            # Host hooks that run after `apt-get update` (appstream, packagekit) act on the
            # system's caches: a config file read after the defaults clears them for this run.
            conf = tmp / "apt.conf"
            conf.write_text(
                "#clear APT::Update::Post-Invoke;\n"
                "#clear APT::Update::Post-Invoke-Success;\n"
                "#clear DPkg::Post-Invoke;\n"
            )
            apt = [
                "apt-get",
                "-q",
                "-c",
                str(conf),
                "-o",
                f"Dir::Etc::sourcelist={sources}",
                "-o",
                "Dir::Etc::sourceparts=/dev/null",
                "-o",
                f"Dir::State::Lists={lists}",
                "-o",
                f"Dir::Cache={cache}",
                "-o",
                "Dir::Cache::pkgcache=",
                "-o",
                "Dir::Cache::srcpkgcache=",
            ]
            if os.geteuid() == 0:
                # Our private dirs are not readable by apt's `_apt` sandbox user.
                apt += ["-o", "APT::Sandbox::User=root"]
            _run([*apt, "update"])
            _run([*apt, "download", "consul"], cwd=debs)
            found = sorted(debs.glob("consul_*.deb"))
            if not found:
                raise ConsulNotFoundError(f"apt-get download left no consul_*.deb. {_HINT}")
            unpacked = tmp / "root"
            _run(["dpkg-deb", "-x", str(found[0]), str(unpacked)])
            binary = unpacked / "usr" / "bin" / "consul"
            if not binary.is_file():
                raise ConsulNotFoundError(f"{found[0].name} holds no usr/bin/consul. {_HINT}")
            binary.chmod(0o755)
            consul_version(binary)
            os.replace(binary, target)
    return target

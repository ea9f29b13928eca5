"""The ``locksmith`` CLI in-process (``main(argv)``) against a real Consul agent.

Covers every command's ``--help``, the docs reference, ``sessions``, ``locks``, ``leader``,
``--json`` field names, error lines and exit codes, and that the ACL token never shows.
Subprocess runs of ``run``/``elect`` are in ``test_cli_run.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import unique

from locksmith import (
    FAIR_QUEUE_FLAGS,
    ACLNotFound,
    BadRequest,
    ConfigurationError,
    Consul,
    ConsulUnavailable,
    KVEntry,
    LockConflict,
    LockLost,
    LockManager,
    LockTimeout,
    PermissionDenied,
    ProtocolError,
    Session,
    SessionNotFound,
    TLSError,
    ValidationError,
)
from locksmith import _cli as cli
from locksmith._child import EXIT_LOCK_LOST, EXIT_NOT_ACQUIRED, EXIT_USAGE
from locksmith._cli._cleanup import (
    Cleanup,
    delete_if_unchanged,
    destroy_fair_key,
    destroy_lock_key,
    destroy_semaphore_key,
)
from locksmith._cli._hold import HOLD_FIELDS
from locksmith._cli._output import lock_state_text
from locksmith._cli._status import HOLDER_FIELDS, STATUS_EVENT, STATUS_FIELDS, WaitingStatus
from locksmith._compat import CONSUL_LOCK_FLAGS, CONSUL_SEMAPHORE_FLAGS
from locksmith.testing import find_consul

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
SECRET = "5f1c2d3e-aaaa-bbbb-cccc-0123456789ab"


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(consul_addr: str, capsys: pytest.CaptureFixture[str]) -> Run:
    """Call ``main`` with ``--address`` of the test agent; return (code, stdout, stderr)."""

    def call(*argv: str, address: bool = True) -> tuple[int, str, str]:
        capsys.readouterr()
        args = ["--address", consul_addr, *argv] if address else list(argv)
        code = cli.main(args)
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def sessions_made(consul: Consul) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for sid in made:
        consul.sessions.destroy(sid)


# -- parser, help and docs -----------------------------------------------------------------
def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def _options(parser: argparse.ArgumentParser, *, shown: bool = False) -> list[str]:
    """Option strings of ``parser`` (``shown``: only those its ``--help`` lists)."""
    return [
        opt
        for a in parser._actions
        if not (shown and a.help == argparse.SUPPRESS)
        for opt in a.option_strings
        if opt not in ("-h", "--help")
    ]


COMMANDS = [path for path, _ in _walk(cli.build_parser())]
GLOBAL_OPTIONS = [o for o in _options(cli.build_parser()) if o != "--version"]


def test_parser_has_every_command() -> None:
    assert set(COMMANDS) >= {
        (),
        ("sessions",),
        ("sessions", "list"),
        ("sessions", "node"),
        ("sessions", "info"),
        ("sessions", "create"),
        ("sessions", "renew"),
        ("sessions", "destroy"),
        ("locks",),
        ("run",),
        ("elect",),
        ("leader",),
    }


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "locksmith")
def test_help_of_every_command_is_complete(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = dict(_walk(cli.build_parser()))[path]
    assert cli.main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    for opt in _options(parser, shown=True):
        assert opt in out, f"{opt} missing from `locksmith {' '.join(path)} --help`"
    assert "examples:" in out
    assert "exit codes:" in out
    for code in ("64", "66", "69", "77"):
        assert f"\n  {code} " in out
    assert parser.description and parser.description.splitlines()[0] in out


def test_top_level_help_lists_the_global_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert {"--address", "--token", "--ca-file", "--dc", "--log-format", "-q"} <= set(
        GLOBAL_OPTIONS
    )
    for opt in GLOBAL_OPTIONS:
        assert f"  {opt}" in out or f", {opt}" in out, f"{opt} not described by locksmith --help"
    assert "CONSUL_HTTP_ADDR" in out


@pytest.mark.parametrize("path", COMMANDS[1:], ids=" ".join)
def test_command_help_shows_only_its_own_options_and_points_to_the_global_ones(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    described = {line.split()[0].rstrip(",") for line in out.splitlines() if line.startswith("  -")}
    for opt in GLOBAL_OPTIONS:
        assert f"[{opt}" not in out, f"{opt} in the usage of `locksmith {' '.join(path)}`"
        assert opt not in described, f"{opt} repeated by `locksmith {' '.join(path)} --help`"
    pointers = [line for line in out.splitlines() if line.startswith("global options")]
    assert len(pointers) == 1
    assert "'locksmith --help'" in pointers[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["--address", "h:1", "-v", "sessions", "list"],
        ["sessions", "--address", "h:1", "-v", "list"],
        ["sessions", "list", "--address", "h:1", "-v"],
        ["locks", "p/", "--address", "h:1", "-v"],
        ["run", "--address", "h:1", "-v", "p", "true"],
        ["leader", "k", "--address", "h:1", "--verbose"],
    ],
)
def test_global_options_are_accepted_before_and_after_the_command(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert (args.address, args.verbose) == ("h:1", 1)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "locksmith")
def test_docs_cli_md_covers_every_command_and_option(path: tuple[str, ...]) -> None:
    text = DOCS.read_text(encoding="utf-8")
    parser = dict(_walk(cli.build_parser()))[path]
    if path:
        assert f"locksmith {' '.join(path)}" in text
    for opt in _options(parser):
        assert f"`{opt}" in text, f"{opt} of `locksmith {' '.join(path)}` not in docs/cli.md"


def test_docs_cli_md_lists_every_exit_code_and_json_field() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for line in cli.EXIT_CODES_TEXT.splitlines()[1:]:
        code = line.split()[0]
        assert f"| {code} " in text, f"exit code {code} not documented"
    for field in (*cli.SESSION_FIELDS, *cli.META_FIELDS, *cli.LOCK_FIELDS, *cli.LEADER_FIELDS):
        assert f"`{field}`" in text, f"JSON field {field} not documented"
    for field in (*STATUS_FIELDS, *HOLDER_FIELDS, *HOLD_FIELDS):
        assert f"`{field}`" in text, f"waiting status or hold field {field} not documented"
    assert f"`{STATUS_EVENT}`" in text


COMPARISON = DOCS.with_name("comparison.md")


def _consul_lock_flags() -> list[str]:
    """Every flag ``consul lock -h`` lists (e.g. ``-shell``, ``-http-addr``)."""
    proc = subprocess.run(
        [str(find_consul()), "lock", "-h"], capture_output=True, text=True, timeout=60, check=False
    )
    flags = re.findall(r"^  (-[a-z][a-z-]*)", proc.stdout + proc.stderr, re.M)
    assert "-shell" in flags and "-child-exit-code" in flags, proc.stdout + proc.stderr
    return flags


def _migration_section() -> str:
    text = COMPARISON.read_text(encoding="utf-8")
    match = re.search(r"^## Migrating from `consul lock`\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "docs/comparison.md has no '## Migrating from `consul lock`' section"
    return match.group(1)


def test_migration_from_consul_lock_maps_every_consul_lock_flag() -> None:
    section = _migration_section()
    rows = [line for line in section.splitlines() if line.startswith("| `-")]
    mapped = {flag for row in rows for flag in re.findall(r"`(-[a-z][a-z-]*)", row.split("|")[1])}
    missing = [flag for flag in _consul_lock_flags() if flag not in mapped]
    assert not missing, f"consul lock flags without a locksmith equivalent in the table: {missing}"
    # The difference that bites first: consul lock runs COMMAND through a shell by default.
    assert "--shell" in section and "$SHELL" in section
    assert "-child-exit-code" in section


def test_migration_names_only_real_locksmith_options() -> None:
    parser = dict(_walk(cli.build_parser()))[("run",)]
    known = set(_options(parser)) | set(GLOBAL_OPTIONS)
    named = set(re.findall(r"`(--?[a-z][a-z-]*)", _migration_section()))
    consul_flags = set(_consul_lock_flags())
    unknown = sorted(o for o in named if o.startswith("--") and o not in known)
    unknown += sorted(o for o in named if not o.startswith("--") and o not in consul_flags | known)
    assert not unknown, f"options in the migration section that neither tool has: {unknown}"


def test_exit_codes_match_the_child_module() -> None:
    assert cli.EXIT_USAGE == EXIT_USAGE == 64
    assert cli.EXIT_NOT_ACQUIRED == EXIT_NOT_ACQUIRED == 75
    assert cli.EXIT_LOCK_LOST == EXIT_LOCK_LOST == 76


def test_python_dash_m_entry_point_exists() -> None:
    main_py = Path(cli.__file__).parent.with_name("__main__.py").read_text(encoding="utf-8")
    assert "from locksmith._cli import main" in main_py


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ValidationError("ttl", "bad"), 64),
        (ConfigurationError("bad address"), 78),
        (BadRequest("x"), 65),
        (LockConflict("x"), 65),
        (SessionNotFound("x"), 66),
        (ConsulUnavailable("x"), 69),
        (TLSError("x"), 69),
        (ProtocolError("x"), 70),
        (LockTimeout("x"), 75),
        (LockLost("x"), 76),
        (PermissionDenied("x"), 77),
        (ACLNotFound("x"), 77),
        (FileNotFoundError(2, "No such file", "nope"), 127),
        (PermissionError(13, "Permission denied", "x"), 126),
    ],
)
def test_exit_code_mapping(exc: BaseException, code: int) -> None:
    assert cli.exit_code_for(exc) == code


# -- usage errors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["sessions"],
        ["nope"],
        ["sessions", "create", "--ttl", "ten"],
        ["sessions", "list", "--stale", "--consistent"],
        ["sessions", "list", "--index", "-3"],
        ["sessions", "create", "--behavior", "Delete"],
        ["run", "-n", "0", "p", "--", "true"],
        ["run", "--fair", "-n", "2", "p", "--", "true"],
        ["hold", "--fair", "-n", "3", "p"],
        ["locks", "--log-format", "xml"],
    ],
)
def test_usage_errors_exit_64_with_one_error_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 64
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = [ln for ln in captured.err.splitlines() if "error:" in ln]
    assert len(errors) == 1
    assert errors[0].startswith("locksmith: error: ")
    assert "Traceback" not in captured.err


def test_range_errors_from_the_library_exit_64_before_any_request(run: Run) -> None:
    # Port 1 is closed: a request would give 69, so 64 proves validation came first.
    code, _out, err = run("--address", "127.0.0.1:1", "sessions", "create", "--ttl", "5s")
    assert code == 64
    assert err.strip().splitlines() == [err.strip()]
    assert "ttl" in err and "10s" in err


def test_wait_without_index_is_a_usage_error(run: Run) -> None:
    code, _, err = run("sessions", "list", "--wait", "5s")
    assert code == 64
    assert "--wait needs --index" in err


def test_run_without_command_is_a_usage_error(run: Run) -> None:
    code, _, err = run("run", "some/prefix")
    assert code == 64
    assert "COMMAND is missing" in err


@pytest.mark.parametrize(
    "case",
    [
        ("not-on-path", 127, "COMMAND not found: 'no-such-cmd-xyz'"),
        ("missing-path", 127, "COMMAND not found: "),
        ("not-executable", 126, "COMMAND is not executable: "),
        ("directory", 126, "COMMAND is not executable: "),
        ("on-path-not-executable", 126, "COMMAND is not executable: "),
    ],
    ids=lambda case: case[0],
)
def test_missing_or_unexecutable_command_exits_before_any_request(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: tuple[str, int, str]
) -> None:
    kind, code, message = case
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\nexit 0\n")
    plain.chmod(0o644)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    command = {
        "not-on-path": "no-such-cmd-xyz",
        "missing-path": str(tmp_path / "nope"),
        "not-executable": str(plain),
        "directory": str(tmp_path),
        "on-path-not-executable": "plain.sh",
    }[kind]
    # Port 1 is closed: a request would give 69 (or 75 after --timeout), so 126/127 proves
    # the command was looked at before anything talked to Consul.
    for what in (["run", "p"], ["elect", "k", "--value", "v"]):
        got, _out, err = run(
            "--address", "127.0.0.1:1", *what, "--timeout", "20s", "--", command, "x"
        )
        assert got == code, err
        assert err.strip().splitlines() == [err.strip()]
        assert err.startswith(f"locksmith: error: {message}"), err


def test_shell_mode_needs_bin_sh_before_any_request(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from locksmith._cli import _run

    monkeypatch.setattr(_run, "SHELL", str(tmp_path / "no-sh"))
    code, _out, err = run(
        "--address", "127.0.0.1:1", "run", "--shell", "--timeout", "20s", "p", "--", "true"
    )
    assert code == 127, err
    assert "--shell needs" in err and "no-sh" in err


# -- connection errors and the token -------------------------------------------------------
def test_unreachable_consul_is_69_one_line_without_traceback(run: Run) -> None:
    code, out, err = run("--address", "127.0.0.1:1", "sessions", "list", address=False)
    assert code == 69
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("locksmith: error: ")
    assert "127.0.0.1:1" in err
    assert "Traceback" not in err


def test_verbose_adds_traceback_but_never_the_token(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "env-" + SECRET)
    code, out, err = run(
        "-vv", "--token", SECRET, "--address", "127.0.0.1:1", "sessions", "list", address=False
    )
    assert code == 69
    assert "Traceback" in err
    assert SECRET not in out + err


def test_malformed_address_is_one_line_without_traceback(run: Run) -> None:
    code, out, err = run("--address", "http://[::1", "sessions", "list", address=False)
    assert code == 78
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("locksmith: error: ")


@pytest.mark.parametrize("address", ["nonsense:::1", "::1", "bad host:8500", "host/path:8500"])
@pytest.mark.parametrize("source", ["option", "environment"])
def test_unparseable_address_is_a_configuration_error(
    run: Run, monkeypatch: pytest.MonkeyPatch, address: str, source: str
) -> None:
    # The host part is neither an IP address nor a DNS name: nothing to connect to (78),
    # not an unreachable Consul (69) nor an unexpected error (1).
    if source == "option":
        code, out, err = run("--address", address, "sessions", "list", address=False)
    else:
        monkeypatch.setenv("CONSUL_HTTP_ADDR", address)
        code, out, err = run("locks", address=False)
    assert code == 78, err
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("locksmith: error: address: cannot parse ")
    assert repr(address) in err
    assert ("--address" if source == "option" else "CONSUL_HTTP_ADDR") in err


@pytest.mark.parametrize("address", ["[::1]:1", ":::1", "localhost:1", "consul_server-1.:1"])
def test_well_formed_addresses_are_not_configuration_errors(run: Run, address: str) -> None:
    code, _, err = run("--address", address, "sessions", "list", address=False)
    assert code == 69, err
    assert "cannot reach Consul" in err


def test_unreadable_token_file_is_a_configuration_error(run: Run, tmp_path: Path) -> None:
    code, _, err = run("--token-file", str(tmp_path / "missing"), "sessions", "list")
    assert code == 78
    assert err.startswith("locksmith: error: ")


def test_acl_permission_denied_is_77_and_the_token_is_never_shown(
    consul_agent_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    master = str(uuid.uuid4())
    agent = consul_agent_factory(acl_master_token=master)
    addr = agent.http_addr

    def call(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(["--address", addr, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = call("sessions", "create", "--name", "denied")
    assert code == 77
    assert "permission denied" in err.lower()
    assert err.count("\n") == 1

    unknown = str(uuid.uuid4())
    code, out, err = call("-vv", "--token", unknown, "sessions", "create")
    assert code == 77
    assert unknown not in out + err

    token_file = tmp_path / "token"
    token_file.write_text(master + "\n", encoding="utf-8")
    code, out, err = call(
        "-vv",
        "--log-format",
        "json",
        "--token-file",
        str(token_file),
        "sessions",
        "create",
        "--name",
        "allowed",
        "--json",
    )
    assert code == 0, err
    sid = json.loads(out)["id"]
    assert master not in out + err
    code, out, err = call("-vv", "--token", master, "sessions", "info", sid, "--json")
    assert code == 0
    assert json.loads(out)["session"]["name"] == "allowed"
    assert master not in out + err
    code, out, err = call("--token", master, "sessions", "destroy", sid)
    assert code == 0


# -- sessions ------------------------------------------------------------------------------
def test_sessions_create_info_list_node_renew_destroy(
    run: Run, consul: Consul, sessions_made: list[str]
) -> None:
    node = consul.agent_node()
    name = unique("cli-create")
    code, out, err = run(
        "sessions", "create", "--name", name, "--ttl", "30s", "--lock-delay", "2s",
        "--behavior", "delete", "--node", node, "--node-checks", "", "--json",
    )  # fmt: skip
    assert code == 0, err
    sid = json.loads(out)["id"]
    sessions_made.append(sid)

    code, out, _ = run("sessions", "info", sid, "--json")
    assert code == 0
    data = json.loads(out)
    assert tuple(data) == ("session", "meta")
    assert tuple(data["session"]) == cli.SESSION_FIELDS
    assert tuple(data["meta"]) == cli.META_FIELDS
    s = data["session"]
    assert (s["id"], s["name"], s["node"], s["behavior"]) == (sid, name, node, "delete")
    assert s["ttl"] == 30.0
    assert s["lock_delay"] == 2.0
    assert s["node_checks"] == []
    assert data["meta"]["index"] > 0
    assert data["meta"]["known_leader"] is True

    code, out, _ = run("sessions", "info", sid)
    assert code == 0
    assert sid in out and name in out and "30s" in out

    for argv in (("sessions", "list"), ("sessions", "node", node)):
        code, out, _ = run(*argv, "--json")
        assert code == 0
        listed = json.loads(out)
        assert sid in [x["id"] for x in listed["sessions"]]
        assert tuple(listed["meta"]) == cli.META_FIELDS
        code, out, _ = run(*argv)
        assert code == 0
        header, *rows = out.splitlines()
        assert header.split() == ["ID", "NAME", "NODE", "BEHAVIOR", "TTL", "LOCK-DELAY", "CHECKS"]
        row = next(r for r in rows if r.startswith(sid))
        assert row.split()[:5] == [sid, name, node, "delete", "30s"]

    code, out, _ = run("sessions", "renew", sid, "--json")
    assert code == 0
    assert json.loads(out)["session"]["id"] == sid

    code, out, _ = run("sessions", "destroy", sid)
    assert code == 0
    assert consul.sessions.info(sid) is None

    code, out, err = run("sessions", "info", sid, "--json")
    assert code == 66
    assert json.loads(out)["session"] is None
    assert err.startswith("locksmith: error: ") and sid in err
    code, out, err = run("sessions", "renew", sid)
    assert code == 66
    assert out == ""
    assert err.count("\n") == 1


@pytest.mark.parametrize("json_output", [False, True])
def test_sessions_destroy_of_an_unknown_session_is_not_found(
    run: Run, consul: Consul, json_output: bool
) -> None:
    gone = consul.sessions.create(name=unique("cli-gone"))
    consul.sessions.destroy(gone)
    for sid in (str(uuid.uuid4()), gone):  # never existed; already destroyed
        code, out, err = run("sessions", "destroy", sid, *(["--json"] if json_output else []))
        assert code == 66, (out, err)
        assert err == f"locksmith: error: session {sid} not found\n"
        if json_output:
            assert json.loads(out) == {"id": sid, "destroyed": False}
        else:
            assert out == ""


def test_sessions_destroy_json(run: Run, consul: Consul) -> None:
    sid = consul.sessions.create(name=unique("cli-destroy"))
    code, out, _ = run("sessions", "destroy", sid, "--json")
    assert code == 0
    assert json.loads(out) == {"id": sid, "destroyed": True}
    assert consul.sessions.info(sid) is None


def test_sessions_create_checks_options(run: Run, consul: Consul, sessions_made: list[str]) -> None:
    code, out, _ = run("sessions", "create", "--checks", "serfHealth")
    assert code == 0
    sessions_made.append(out.strip())
    s = consul.sessions.info(out.strip())
    assert s is not None and s.node_checks == ("serfHealth",)

    code, out, err = run("sessions", "create", "--service-checks", "no-such-check")
    assert code == 65, err
    assert "no-such-check" in err

    code, out, err = run("sessions", "create", "--node", "no-such-node-" + uuid.uuid4().hex[:6])
    assert code == 65
    assert err.count("\n") == 1


def test_sessions_read_modes_and_blocking_query(
    run: Run, consul: Consul, sessions_made: list[str]
) -> None:
    sid = consul.sessions.create(name=unique("cli-block"))
    sessions_made.append(sid)
    for mode in ("--stale", "--consistent"):
        code, out, _ = run("sessions", "info", sid, mode, "--json")
        assert code == 0
        assert json.loads(out)["session"]["id"] == sid
    code, out, _ = run("sessions", "info", sid, "--json")
    index = json.loads(out)["meta"]["index"]

    # A blocking query on the current index returns when the session changes (destroy).
    result: dict[str, Any] = {}

    def destroy_soon() -> None:
        time.sleep(0.3)
        consul.sessions.destroy(sid)

    t = threading.Thread(target=destroy_soon)
    t.start()
    code, out, _ = run("sessions", "info", sid, "--json", "--index", str(index), "--wait", "60s")
    t.join()
    result = json.loads(out)
    assert code == 66
    assert result["session"] is None
    assert result["meta"]["index"] > index


def test_sessions_list_blocking_with_short_wait_returns_same_index(run: Run) -> None:
    code, out, _ = run("sessions", "list", "--json")
    index = json.loads(out)["meta"]["index"]
    code, out, _ = run("sessions", "list", "--json", "--index", str(index), "--wait", "200ms")
    assert code == 0
    assert json.loads(out)["meta"]["index"] >= index


def test_global_options_after_the_command(run: Run, consul_addr: str) -> None:
    code, out, _ = run("sessions", "list", "--json", "--address", consul_addr, "--dc", "dc1",
                       address=False)  # fmt: skip
    assert code == 0
    assert "sessions" in json.loads(out)


def test_unknown_datacenter_is_reported(run: Run) -> None:
    code, _, err = run("--datacenter", "nowhere", "sessions", "list")
    assert code != 0
    assert err.count("\n") == 1
    assert err.startswith("locksmith: error: ")


# -- locks ---------------------------------------------------------------------------------
def test_locks_shows_holders_kinds_and_free_lock_keys(run: Run, consul: Consul) -> None:
    prefix = unique("cli-locks")
    name = unique("holder")
    consul.kv.put(f"{prefix}/plain", b"not a lock")
    with LockManager(consul, name=name, ttl="15s", lock_delay=0) as mgr:
        plain = mgr.lock(f"{prefix}/app")
        plain_lease = plain.acquire(timeout=10)
        compat = mgr.consul_lock(f"{prefix}/job")
        compat_lease = compat.acquire(timeout=10)
        sem = mgr.semaphore(f"{prefix}/sem", 2)
        sem.acquire(timeout=10)
        # What `consul lock` leaves behind after a release: its flags, no session.
        consul.kv.put(f"{prefix}/done/.lock", b"", flags=CONSUL_LOCK_FLAGS)
        assert plain_lease is not None and compat_lease is not None

        code, out, err = run("locks", prefix + "/", "--json")
        assert code == 0, err
        data = json.loads(out)
        assert tuple(data) == ("locks", "meta")
        rows = {r["key"]: r for r in data["locks"]}
        for r in rows.values():
            assert tuple(r) == cli.LOCK_FIELDS
        assert f"{prefix}/plain" not in rows
        app = rows[f"{prefix}/app"]
        assert (app["kind"], app["state"], app["session_name"]) == ("locksmith", "held", name)
        assert app["session"] == plain_lease.session_id
        assert app["node"] == consul.agent_node()
        assert app["fencing_token"] == plain_lease.fencing_token
        assert app["lock_index"] >= 1
        job = rows[f"{prefix}/job/.lock"]
        assert (job["kind"], job["state"]) == ("consul-lock", "held")
        assert job["flags"] == CONSUL_LOCK_FLAGS
        assert job["fencing_token"] == compat_lease.fencing_token
        sem_lock = rows[f"{prefix}/sem/.lock"]
        assert sem_lock["state"] == "semaphore"
        assert sem_lock["flags"] == CONSUL_SEMAPHORE_FLAGS
        assert sem_lock["limit"] == 2
        assert sem.holders() == sem_lock["holders"] and len(sem_lock["holders"]) == 1
        contender = rows[f"{prefix}/sem/{sem_lock['holders'][0]}"]
        assert (contender["kind"], contender["state"]) == ("consul-semaphore", "held")
        done = rows[f"{prefix}/done/.lock"]
        assert (done["state"], done["session"], done["maybe_lock_delay"]) == ("free", None, True)

        code, out, _ = run("locks", prefix)
        assert code == 0
        header, *lines = out.splitlines()
        assert header.split() == [
            "KEY", "KIND", "STATE", "SESSION", "NAME", "NODE", "LOCK-INDEX", "FENCING",
        ]  # fmt: skip
        by_key = {ln.split()[0]: ln for ln in lines}
        assert f"{prefix}/plain" not in by_key
        assert name in by_key[f"{prefix}/app"]
        assert "free (maybe in lock-delay)" in by_key[f"{prefix}/done/.lock"]
        assert "1/2 held" in by_key[f"{prefix}/sem/.lock"]
        sem.release()
    consul.kv.delete(prefix + "/", recurse=True)


def test_locks_empty_prefix_prints_no_locks(run: Run) -> None:
    code, out, _ = run("locks", unique("cli-nothing") + "/")
    assert code == 0
    assert out.startswith("no locks")


def _entry(key: str, flags: int, session: str | None, value: bytes = b"", mi: int = 10) -> KVEntry:
    return KVEntry(key, value, flags, session, 1 if session else 0, 5, mi)


def test_lock_rows_semaphore_waiting_contender_and_other_flags() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    sem_value = json.dumps({"Limit": 1, "Holders": {a: True}}).encode()
    entries = [
        _entry("s/.lock", CONSUL_SEMAPHORE_FLAGS, None, sem_value),
        _entry(f"s/{a}", CONSUL_SEMAPHORE_FLAGS, a, mi=11),
        _entry(f"s/{b}", CONSUL_SEMAPHORE_FLAGS, b, mi=12),
        _entry("x", 42, b, mi=13),
        _entry("y", 42, None),
        _entry("z", 0, None),
    ]
    sess = Session(a, "holder-a", "n1", "delete", 15.0, 0.0, (), (), 1, 1)
    rows = {r["key"]: r for r in cli.lock_rows(entries, {a: sess})}
    assert set(rows) == {"s/.lock", f"s/{a}", f"s/{b}", "x"}
    assert rows["s/.lock"]["holders"] == [a] and rows["s/.lock"]["limit"] == 1
    assert rows[f"s/{a}"]["state"] == "held" and rows[f"s/{a}"]["fencing_token"] == 11
    assert rows[f"s/{a}"]["session_name"] == "holder-a"
    assert rows[f"s/{b}"]["state"] == "waiting" and rows[f"s/{b}"]["fencing_token"] is None
    assert rows["x"]["kind"] == "other" and rows["x"]["session_name"] is None


def test_lock_rows_of_a_fair_queue() -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    q = FAIR_QUEUE_FLAGS
    entries = [
        KVEntry("f/.lock", b"", q, None, 0, 2, 2),
        KVEntry(f"f/{c}-1", b"", q + 3, c, 1, 3, 9),  # released by its holder
        KVEntry(f"f/{a}-1", b"", q + 1, a, 1, 5, 5),  # holds
        KVEntry(f"f/{b}-1", b"", q + 1, b, 1, 7, 7),  # waits behind a
    ]
    sess = Session(a, "holder-a", "n1", "delete", 15.0, 0.0, (), (), 1, 1)
    rows = {r["key"]: r for r in cli.lock_rows(entries, {a: sess})}
    assert {r["kind"] for r in rows.values()} == {cli.KIND_FAIR} == {cli.kind_of(q + 2)}
    assert rows["f/.lock"]["state"] == "queue" and rows["f/.lock"]["holders"] == [a]
    assert lock_state_text(rows["f/.lock"]) == "queue, 1 holding"
    held = rows[f"f/{a}-1"]
    assert (held["state"], held["fencing_token"], held["session_name"]) == ("held", 5, "holder-a")
    assert rows[f"f/{b}-1"]["state"] == "waiting" and rows[f"f/{b}-1"]["fencing_token"] is None
    assert rows[f"f/{c}-1"]["state"] == "released"


# -- leader --------------------------------------------------------------------------------
def test_leader_none_then_current_leader(run: Run, consul: Consul) -> None:
    key = unique("cli-leader")
    code, out, _err = run("leader", key, "--json")
    assert code == 66
    data = json.loads(out)
    assert tuple(data) == cli.LEADER_FIELDS
    assert data["leader"] is False and data["session"] is None
    code, out, _ = run("leader", key)
    assert code == 66
    assert "no leader" in out

    name = unique("candidate")
    with LockManager(consul, name=name, lock_delay=0) as mgr:
        election = mgr.election(key, b"host-a:8080")
        lease = election.campaign(timeout=10)
        code, out, _ = run("leader", key, "--json")
        assert code == 0
        data = json.loads(out)
        assert data["leader"] is True
        assert data["value"] == "host-a:8080"
        assert data["session"] == lease.session_id
        assert data["session_name"] == name
        assert data["node"] == consul.agent_node()
        assert data["since_index"] == lease.fencing_token
        code, out, _ = run("leader", key)
        assert code == 0
        assert "host-a:8080" in out and lease.session_id in out and name in out
        election.resign()
    consul.kv.delete(key)


# -- PREFIX/.lock cleanup ------------------------------------------------------------------
def test_destroy_lock_key_only_when_nobody_holds_it(consul: Consul) -> None:
    prefix = unique("cli-destroy-lock")
    key = f"{prefix}/.lock"
    with LockManager(consul, name=unique("holder"), lock_delay=0) as mgr:
        lock = mgr.consul_lock(prefix)
        lease = lock.acquire(timeout=10)
        assert lease is not None
        assert destroy_lock_key(consul, prefix) is Cleanup.IN_USE
        entry = consul.kv.get(key)
        assert entry is not None and entry.session == lease.session_id
        lock.release()
    assert destroy_lock_key(consul, prefix) is Cleanup.DELETED
    assert consul.kv.get(key) is None
    assert destroy_lock_key(consul, prefix) is Cleanup.ABSENT
    consul.kv.put(key, b"someone else's", flags=7)
    assert destroy_lock_key(consul, prefix) is Cleanup.FOREIGN
    assert consul.kv.get(key) is not None
    consul.kv.delete(key)


def test_the_delete_is_a_check_and_set_that_spares_a_new_holder(
    consul: Consul, new_session: Callable[..., str]
) -> None:
    key = f"{unique('cli-destroy-cas')}/.lock"
    consul.kv.put(key, b"", flags=CONSUL_LOCK_FLAGS)
    free = consul.kv.get(key)
    assert free is not None and free.session is None
    sid = new_session(lock_delay="0s")
    assert consul.kv.put(key, b"", flags=CONSUL_LOCK_FLAGS, acquire=sid)  # taken after the read
    assert delete_if_unchanged(consul, key, free.modify_index, 10.0) is False
    entry = consul.kv.get(key)
    assert entry is not None and entry.session == sid
    consul.kv.put(key, b"", release=sid)
    consul.kv.delete(key)


def test_destroy_fair_key_only_when_nobody_waits_or_holds(consul: Consul) -> None:
    prefix = unique("cli-destroy-fair")
    assert destroy_fair_key(consul, prefix) is Cleanup.ABSENT
    with LockManager(consul, name=unique("holder"), lock_delay=0) as mgr:
        fl = mgr.fair_lock(prefix)
        assert fl.acquire(timeout=10) is not None
        assert destroy_fair_key(consul, prefix) is Cleanup.IN_USE
        fl.release()  # its released entry stays while its session lives: dead, deleted too
        assert destroy_fair_key(consul, prefix) is Cleanup.DELETED
        assert consul.kv.list(f"{prefix}/") == []
        assert fl.acquire(timeout=10) is not None  # the next contender makes a marker again
        marker = consul.kv.get(f"{prefix}/.lock")
        assert marker is not None and marker.flags == FAIR_QUEUE_FLAGS
        fl.release()
    consul.kv.put(f"{prefix}/.lock", b"", flags=CONSUL_LOCK_FLAGS)
    assert destroy_fair_key(consul, prefix) is Cleanup.FOREIGN
    assert consul.kv.get(f"{prefix}/.lock") is not None
    consul.kv.delete(prefix, recurse=True)


@pytest.mark.parametrize("when", ["before the second read", "before the delete"])
def test_destroy_fair_key_spares_a_contender_joining_meanwhile(
    consul: Consul, consul_addr: str, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A contender joins while the marker is being deleted: it keeps its lock, the marker
    stays (open), whichever step it comes in between."""
    prefix = unique("cli-destroy-fair-race")
    with (
        LockManager(consul, name=unique("first"), lock_delay=0) as first,
        Consul(consul_addr) as other_client,
        LockManager(other_client, name=unique("joiner"), lock_delay=0) as second,
    ):
        fl = first.fair_lock(prefix)
        assert fl.acquire(timeout=10) is not None
        fl.release()  # a marker, and nobody in the queue
        joiner = second.fair_lock(prefix)
        joined: list[Any] = []
        real_list, real_txn = consul.kv.list, consul.kv.txn
        calls = {"list": 0, "txn": 0}

        def join_at(kind: str, n: int) -> None:
            calls[kind] += 1
            target = ("list", 2) if when == "before the second read" else ("txn", 2)
            if (kind, calls[kind]) == target:
                joined.append(joiner.acquire(timeout=10))

        def list_hook(*args: Any, **kwargs: Any) -> Any:
            join_at("list", calls["list"])
            return real_list(*args, **kwargs)

        def txn_hook(*args: Any, **kwargs: Any) -> Any:
            join_at("txn", calls["txn"])
            return real_txn(*args, **kwargs)

        monkeypatch.setattr(consul.kv, "list", list_hook)
        monkeypatch.setattr(consul.kv, "txn", txn_hook)
        outcome = destroy_fair_key(consul, prefix)
        monkeypatch.undo()
        expected = Cleanup.IN_USE if when == "before the second read" else Cleanup.CHANGED
        assert outcome is expected
        assert joined and joined[0] is not None and joiner.held
        marker = consul.kv.get(f"{prefix}/.lock")
        assert marker is not None and marker.value == b""  # open again
        assert joiner.release() is True
    consul.kv.delete(prefix, recurse=True)


def test_destroy_semaphore_key_only_without_holders_or_contenders(
    consul: Consul, new_session: Callable[..., str]
) -> None:
    prefix = unique("cli-destroy-sem")
    key = f"{prefix}/.lock"
    with LockManager(consul, name=unique("holder"), lock_delay=0) as mgr:
        sem = mgr.semaphore(prefix, 2)
        assert sem.acquire(timeout=10) is not None
        assert destroy_semaphore_key(consul, prefix) is Cleanup.IN_USE
        sem.release()
        assert destroy_semaphore_key(consul, prefix) is Cleanup.DELETED
    assert consul.kv.list(f"{prefix}/") == []
    # A contender waiting for a slot (its key held, not listed in .lock) keeps .lock too.
    sid = new_session(behavior="delete", lock_delay="0s")
    assert consul.kv.put(f"{prefix}/{sid}", b"", flags=CONSUL_SEMAPHORE_FLAGS, acquire=sid)
    consul.kv.put(key, b'{"Limit":2,"Holders":{}}', flags=CONSUL_SEMAPHORE_FLAGS)
    assert destroy_semaphore_key(consul, prefix) is Cleanup.IN_USE
    consul.sessions.destroy(sid)  # Behavior=delete: its contender key goes with it
    assert destroy_semaphore_key(consul, prefix) is Cleanup.DELETED
    assert consul.kv.list(f"{prefix}/") == []


# -- waiting status ------------------------------------------------------------------------
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_waiting_status_shows_holder_name_and_node(consul: Consul, tty: bool) -> None:
    key = unique("cli-status") + "/.lock"
    name = unique("the-holder")
    stream: io.StringIO = _Tty() if tty else io.StringIO()
    with LockManager(consul, name=name, lock_delay=0) as mgr:
        lock = mgr.lock(key)
        assert lock.acquire(timeout=10) is not None
        done = threading.Event()
        status = WaitingStatus(
            consul, key, is_done=done.is_set, own=set, stream=stream, show_after=0.0
        ).start()
        deadline = time.monotonic() + 20
        while name not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
        status.stop()
        lock.release()
    text = stream.getvalue()
    assert name in text
    assert consul.agent_node() in text
    if tty:
        assert "\r\x1b[K" in text
        assert text.endswith("\r\x1b[K")  # the status line is cleared when waiting ends
    else:
        assert "\r" not in text
        assert text.startswith("locksmith: waiting")
    consul.kv.delete(key)


def test_waiting_status_shows_nothing_when_nothing_blocks(consul: Consul) -> None:
    key = unique("cli-status-free") + "/.lock"
    stream = io.StringIO()
    done = threading.Event()
    status = WaitingStatus(
        consul, key, is_done=done.is_set, own=set, stream=stream, show_after=0.0
    ).start()
    time.sleep(1.0)  # several checks of a free key
    done.set()
    status.stop()
    assert stream.getvalue() == ""

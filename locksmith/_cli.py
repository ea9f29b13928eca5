"""The ``locksmith`` command line: sessions, locks, ``run``, ``elect`` and ``leader``.

Built on :mod:`argparse` only. Every command has a complete ``--help`` (description,
options, exit codes, examples); ``docs/cli.md`` is the same reference in prose, and a test
checks that every command and option of the parser appears there.

This module is the only place where locksmith configures logging (structlog, to stderr):
the library itself never does. The ACL token is never printed: it is redacted from log
events and error messages, also with ``-v``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, NoReturn

import structlog

from locksmith._child import EXIT_LOCK_LOST, EXIT_NOT_ACQUIRED, EXIT_USAGE
from locksmith._client import Consul, KVEntry, QueryMeta, ServiceCheck, Session, next_index
from locksmith._compat import CONSUL_LOCK_FLAGS, CONSUL_SEMAPHORE_FLAGS, lock_key
from locksmith._durations import format_duration, parse_duration
from locksmith._exceptions import (
    BadRequest,
    ConfigurationError,
    ConsulError,
    ConsulUnavailable,
    LockConflict,
    LockLost,
    LocksmithError,
    LockTimeout,
    PermissionDenied,
    ProtocolError,
    SessionNotFound,
    ValidationError,
)
from locksmith._validate import Consistency

__all__ = [
    "EXIT_CONFIG",
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_LOCK_LOST",
    "EXIT_NOT_ACQUIRED",
    "EXIT_NOT_FOUND",
    "EXIT_NO_PERMISSION",
    "EXIT_OK",
    "EXIT_PROTOCOL",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

log = structlog.get_logger(__name__)

PROG = "locksmith"

# Exit codes (sysexits.h where one fits). run/elect return the child's own status instead
# when the child ran; these are locksmith's own outcomes.
EXIT_OK = 0
EXIT_ERROR = 1  # an unexpected locksmith error
EXIT_CONFLICT = 65  # EX_DATAERR: Consul rejected the request, or the key belongs to another recipe
EXIT_NOT_FOUND = 66  # EX_NOINPUT: no such session; no leader
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: Consul unreachable, no cluster leader, TLS failure
EXIT_PROTOCOL = 70  # EX_SOFTWARE: Consul answered something unexpected
EXIT_NO_PERMISSION = 77  # EX_NOPERM: the ACL token lacks a permission, or is unknown
EXIT_CONFIG = 78  # EX_CONFIG: bad environment or settings (address, token file, TLS files)
EXIT_INTERRUPTED = 130  # interrupted (Ctrl-C) while waiting
EXIT_CANNOT_EXECUTE = 126  # run/elect: COMMAND found but not executable
EXIT_COMMAND_NOT_FOUND = 127  # run/elect: COMMAND not found

EXIT_CODES_TEXT = f"""\
exit codes:
  0    success (run/elect: the child's own exit status is returned instead)
  1    unexpected error
  {EXIT_USAGE}   usage error: bad command line, option value out of range
  {EXIT_CONFLICT}   Consul rejected the request, or the key belongs to another lock recipe
  {EXIT_NOT_FOUND}   not found: no such session; leader: nobody leads
  {EXIT_UNAVAILABLE}   Consul unavailable: connection refused, timeout, no cluster leader, TLS
  {EXIT_PROTOCOL}   Consul answered something locksmith does not understand
  {EXIT_NOT_ACQUIRED}   run/elect: --timeout passed before the lock was acquired
  {EXIT_LOCK_LOST}   run/elect: the lock was lost while COMMAND ran (COMMAND was terminated)
  {EXIT_NO_PERMISSION}   permission denied: the ACL token lacks a right, or is unknown
  {EXIT_CONFIG}   configuration error: bad address, unreadable token file, bad TLS files
  {EXIT_CANNOT_EXECUTE}  run/elect: COMMAND is not executable
  {EXIT_COMMAND_NOT_FOUND}  run/elect: COMMAND not found
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C) while waiting; leader --watch exits 0 instead
"""

ENV_TEXT = """\
environment (used when the matching option is not given):
  CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, CONSUL_CACERT, CONSUL_CAPATH,
  CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL,
  CONSUL_HTTP_SSL_VERIFY
"""

#: KV flags → the lock recipe that writes them (``locks`` reports this as ``kind``).
KIND_LOCKSMITH = "locksmith"
KIND_CONSUL_LOCK = "consul-lock"
KIND_CONSUL_SEMAPHORE = "consul-semaphore"
KIND_OTHER = "other"
_KINDS = {CONSUL_LOCK_FLAGS: KIND_CONSUL_LOCK, CONSUL_SEMAPHORE_FLAGS: KIND_CONSUL_SEMAPHORE}

#: Field names of the ``--json`` outputs (documented in docs/cli.md; tests check them).
SESSION_FIELDS = (
    "id",
    "name",
    "node",
    "behavior",
    "ttl",
    "lock_delay",
    "node_checks",
    "service_checks",
    "create_index",
    "modify_index",
)
META_FIELDS = ("index", "known_leader", "last_contact")
LOCK_FIELDS = (
    "key",
    "kind",
    "flags",
    "state",
    "session",
    "session_name",
    "node",
    "lock_index",
    "fencing_token",
    "since_index",
    "limit",
    "holders",
    "maybe_lock_delay",
)
LEADER_FIELDS = ("key", "leader", "value", "session", "session_name", "node", "since_index")


# --------------------------------------------------------------------------------------
# Errors and exit codes
# --------------------------------------------------------------------------------------
class CLIError(Exception):
    """A failure the CLI reports as one line with a chosen exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception raised while running a command."""
    if isinstance(exc, CLIError):
        return exc.code
    if isinstance(exc, ValidationError):
        return EXIT_USAGE
    if isinstance(exc, ConfigurationError):
        return EXIT_CONFIG
    if isinstance(exc, PermissionDenied):
        return EXIT_NO_PERMISSION
    if isinstance(exc, SessionNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, ConsulUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, BadRequest | LockConflict):
        return EXIT_CONFLICT
    if isinstance(exc, ProtocolError):
        return EXIT_PROTOCOL
    if isinstance(exc, LockTimeout):
        return EXIT_NOT_ACQUIRED
    if isinstance(exc, LockLost):
        return EXIT_LOCK_LOST
    if isinstance(exc, FileNotFoundError):
        return EXIT_COMMAND_NOT_FOUND
    if isinstance(exc, PermissionError):
        return EXIT_CANNOT_EXECUTE
    return EXIT_ERROR


class _Redactor:
    """Replaces the ACL token wherever it could leak: messages, log events, tracebacks."""

    def __init__(self) -> None:
        self.secrets: list[str] = []

    def add(self, secret: str | None) -> None:
        if secret and secret not in self.secrets:
            self.secrets.append(secret)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, "<redacted>")
        return value

    def __call__(
        self, logger: object, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """structlog processor."""
        del logger, method
        for k, v in list(event_dict.items()):
            if isinstance(v, str):
                event_dict[k] = self.text(v)
            elif isinstance(v, BaseException):
                event_dict[k] = self.text(str(v))
        return event_dict


class _StdlibRedactFilter(logging.Filter):
    def __init__(self, redactor: _Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.text(record.getMessage())
        record.args = None
        return True


class _StderrLogger:
    """A structlog logger writing lines to whatever ``sys.stderr`` is at call time."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line and exit with EXIT_USAGE."""

    def error(self, message: str) -> NoReturn:
        hint = ""
        if "unrecognized arguments" in message and self.prog.endswith((" run", " elect")):
            hint = " (put -- before COMMAND when it has options of its own)"
        self.exit(
            EXIT_USAGE, f"{PROG}: error: {self.prog}: {message}{hint} (see '{self.prog} --help')\n"
        )


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _duration(text: str) -> float:
    """argparse type: seconds as a number, or a Go duration such as ``15s`` / ``1m30s``."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(
                f"invalid duration {text!r}: use seconds (e.g. 15) or a duration such as 15s, "
                "1m30s, 250ms"
            ) from exc
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}")
    return seconds


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _global_options() -> argparse.ArgumentParser:
    """Options accepted before or after the command (``default=SUPPRESS`` merges both)."""
    g = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    conn = g.add_argument_group("connection options (fall back to Consul's environment variables)")
    conn.add_argument(
        "--address",
        metavar="ADDR",
        default=s,
        help="Consul HTTP API: host:port or http(s)://host:port "
        "(env CONSUL_HTTP_ADDR; default 127.0.0.1:8500)",
    )
    conn.add_argument(
        "--token",
        metavar="TOKEN",
        default=s,
        help="ACL token (env CONSUL_HTTP_TOKEN); never printed. Prefer --token-file: "
        "arguments are visible to other local users",
    )
    conn.add_argument(
        "--token-file",
        metavar="PATH",
        default=s,
        help="file holding the ACL token (env CONSUL_HTTP_TOKEN_FILE)",
    )
    conn.add_argument(
        "--ca-file",
        metavar="PATH",
        default=s,
        help="PEM bundle of CAs to verify Consul's certificate (env CONSUL_CACERT)",
    )
    conn.add_argument(
        "--ca-path",
        metavar="DIR",
        default=s,
        help="directory of CA certificates (env CONSUL_CAPATH)",
    )
    conn.add_argument(
        "--client-cert",
        metavar="PATH",
        default=s,
        help="client certificate for mutual TLS (env CONSUL_CLIENT_CERT)",
    )
    conn.add_argument(
        "--client-key",
        metavar="PATH",
        default=s,
        help="client key for mutual TLS (env CONSUL_CLIENT_KEY)",
    )
    conn.add_argument(
        "--tls-server-name",
        metavar="NAME",
        default=s,
        help="host name to verify Consul's certificate against (env CONSUL_TLS_SERVER_NAME)",
    )
    conn.add_argument(
        "--datacenter",
        "--dc",
        dest="datacenter",
        metavar="DC",
        default=s,
        help="datacenter to query (default: the agent's)",
    )
    out = g.add_argument_group("logging options")
    out.add_argument(
        "--log-format",
        choices=("console", "json"),
        default=s,
        help="format of log lines on stderr (default: console)",
    )
    out.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=s,
        help="more log output (-v: info, -vv: debug) and tracebacks on errors",
    )
    out.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=s,
        help="only errors on stderr (no warnings, no waiting status)",
    )
    return g


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON (stable field names, durations in seconds) instead of a table",
    )


def _read_options(p: argparse.ArgumentParser, blocking: bool = True) -> None:
    grp = p.add_argument_group("read options")
    if blocking:
        grp.add_argument(
            "--index",
            type=_non_negative_int,
            metavar="N",
            help="blocking query: wait until Consul's index for this read exceeds N "
            "(take N from a previous --json output's meta.index)",
        )
        grp.add_argument(
            "--wait",
            type=_duration,
            metavar="DURATION",
            help="with --index: the longest the query may block (e.g. 30s; Consul's default "
            "5m, at most 10m)",
        )
    mode = grp.add_mutually_exclusive_group()
    mode.add_argument(
        "--stale",
        action="store_const",
        dest="consistency",
        const="stale",
        default="default",
        help="let any server answer (fast, possibly stale; see meta.last_contact)",
    )
    mode.add_argument(
        "--consistent",
        action="store_const",
        dest="consistency",
        const="consistent",
        help="strongly consistent read (the leader confirms its leadership first)",
    )
    _json_option(p)


def _epilog(examples: str) -> str:
    return f"examples:\n{examples.rstrip()}\n\n{EXIT_CODES_TEXT}\n{ENV_TEXT}"


def build_parser() -> argparse.ArgumentParser:
    """Build the ``locksmith`` argument parser (every command and option)."""
    common = _global_options()
    parser = _Parser(
        prog=PROG,
        formatter_class=_Formatter,
        parents=[common],
        description=(
            "Distributed locks, semaphores and leader election on Consul sessions.\n\n"
            "Global options may come before or after the command."
        ),
        epilog=_epilog(
            "  locksmith sessions list\n"
            "  locksmith locks jobs/\n"
            "  locksmith run jobs/nightly -- ./nightly-report.sh\n"
            "  locksmith run -n 3 --timeout 30s jobs/encoders -- ffmpeg -i in.mp4 out.webm\n"
            "  locksmith elect service/web/leader --value host-a:8080 -- ./serve\n"
            "  locksmith leader service/web/leader --watch"
        ),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", title="commands")

    def add(
        parent: Any, name: str, summary: str, description: str, examples: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name,
            help=summary,
            description=f"{summary}\n\n{description}".rstrip(),
            epilog=_epilog(examples),
            formatter_class=_Formatter,
            parents=[common],
        )
        return p

    # -- sessions ------------------------------------------------------------------------
    sessions = add(
        sub,
        "sessions",
        "Create, inspect, renew and destroy Consul sessions.",
        "Every endpoint of /v1/session. Reads print a table, or with --json an object with\n"
        "the session fields and the query meta (index, known_leader, last_contact).",
        "  locksmith sessions list --json\n"
        "  locksmith sessions create --name backup --ttl 30s --behavior delete\n"
        "  locksmith sessions destroy 0b9e6b8a-7f0a-4a3c-9d7e-0c3c2f6a1e55",
    )
    ssub = sessions.add_subparsers(dest="sessions_command", metavar="SUBCOMMAND", title="commands")
    sessions.set_defaults(handler=_cmd_help(sessions))

    p = add(
        ssub,
        "list",
        "List every active session of the datacenter.",
        "GET /v1/session/list. With --index, a blocking query: returns when the list changes\n"
        "or after --wait.",
        "  locksmith sessions list\n"
        "  locksmith sessions list --json --stale\n"
        "  locksmith sessions list --json --index 1234 --wait 30s",
    )
    _read_options(p)
    p.set_defaults(handler=_cmd_sessions_list)

    p = add(
        ssub,
        "node",
        "List the active sessions bound to one node.",
        "GET /v1/session/node/NODE. An unknown node has no sessions (an empty list).",
        "  locksmith sessions node web-1\n  locksmith sessions node web-1 --json",
    )
    p.add_argument("node", metavar="NODE", help="node name")
    _read_options(p)
    p.set_defaults(handler=_cmd_sessions_node)

    p = add(
        ssub,
        "info",
        "Show one session.",
        f"GET /v1/session/info/ID. A session that does not exist exits {EXIT_NOT_FOUND} (with\n"
        '--json it also prints {"session": null, "meta": ...}). Note: with ACLs, Consul\n'
        "answers the same for a live session the token may not read.",
        "  locksmith sessions info 0b9e6b8a-7f0a-4a3c-9d7e-0c3c2f6a1e55\n"
        "  locksmith sessions info ID --json --index 1234 --wait 1m   # wait for a change",
    )
    p.add_argument("session_id", metavar="ID", help="session ID (UUID)")
    _read_options(p)
    p.set_defaults(handler=_cmd_sessions_info)

    p = add(
        ssub,
        "create",
        "Create a session and print its ID.",
        "PUT /v1/session/create. Options left out take Consul's defaults: the agent's node,\n"
        "lock-delay 15s, behavior release, no TTL, node checks [serfHealth].\n"
        "Check lists are comma-separated and may be repeated; an empty value (e.g.\n"
        "--node-checks '') sends an empty list, which binds the session to no node check.",
        "  locksmith sessions create --name backup --ttl 30s\n"
        "  locksmith sessions create --behavior delete --lock-delay 0 --node-checks ''\n"
        "  locksmith sessions create --service-checks service:web --json",
    )
    p.add_argument("--name", metavar="NAME", help="human-readable session name")
    p.add_argument("--node", metavar="NODE", help="node to bind the session to (must be known)")
    p.add_argument(
        "--checks",
        action="append",
        metavar="ID[,ID...]",
        help="legacy Checks list; Consul keeps serfHealth alongside these",
    )
    p.add_argument(
        "--node-checks",
        action="append",
        metavar="ID[,ID...]",
        help="node health checks (replaces serfHealth; '' for none)",
    )
    p.add_argument(
        "--service-checks",
        action="append",
        metavar="ID[@NS][,...]",
        help="service health checks, optionally with a namespace (Enterprise)",
    )
    p.add_argument(
        "--lock-delay",
        type=_duration,
        metavar="DURATION",
        help="0s..60s during which the session's keys stay locked after it is invalidated",
    )
    p.add_argument(
        "--behavior",
        choices=("release", "delete"),
        help="what happens to held keys when the session ends (default release)",
    )
    p.add_argument(
        "--ttl",
        type=_duration,
        metavar="DURATION",
        help="10s..86400s; the session ends unless renewed within it (0: no TTL)",
    )
    _json_option(p)
    p.set_defaults(handler=_cmd_sessions_create)

    p = add(
        ssub,
        "renew",
        "Renew a session's TTL and show it.",
        "PUT /v1/session/renew/ID. The TTL shown is the one Consul asks for, which may be\n"
        f"higher than the one requested. A session that does not exist exits {EXIT_NOT_FOUND}.",
        "  locksmith sessions renew 0b9e6b8a-7f0a-4a3c-9d7e-0c3c2f6a1e55",
    )
    p.add_argument("session_id", metavar="ID", help="session ID (UUID)")
    _json_option(p)
    p.set_defaults(handler=_cmd_sessions_renew)

    p = add(
        ssub,
        "destroy",
        "Destroy a session; its keys are released or deleted per its behavior.",
        "PUT /v1/session/destroy/ID. Destroying a session that does not exist succeeds, as in\n"
        "Consul. Keys it held enter their lock-delay window.",
        "  locksmith sessions destroy 0b9e6b8a-7f0a-4a3c-9d7e-0c3c2f6a1e55",
    )
    p.add_argument("session_id", metavar="ID", help="session ID (UUID)")
    _json_option(p)
    p.set_defaults(handler=_cmd_sessions_destroy)

    # -- locks ---------------------------------------------------------------------------
    p = add(
        sub,
        "locks",
        "Show who holds which lock.",
        "Lists keys under PREFIX that are held by a session, plus unheld keys that carry the\n"
        "flags of a known lock recipe. For each: key, kind (locksmith = plain session lock\n"
        "with flags 0, consul-lock, consul-semaphore, other), state, session, session name,\n"
        "node, LockIndex, fencing token (the entry's ModifyIndex while held: the Raft index\n"
        "of the holder's acquisition or last write) and since_index (the same index: Consul\n"
        "stores no wall-clock time, so 'since' is a Raft index). A semaphore's .lock key\n"
        "shows holders/limit; its contender keys show 'held' or 'waiting'.\n"
        "An unheld lock key is shown 'free (maybe in lock-delay)': Consul does not expose\n"
        "lock-delay windows, and a key whose holder's session was invalidated in the last\n"
        "lock-delay (<= 60s) cannot be acquired yet.",
        "  locksmith locks\n  locksmith locks jobs/ --json\n  locksmith locks --stale",
    )
    p.add_argument(
        "prefix", metavar="PREFIX", nargs="?", default="", help="key prefix (default: all keys)"
    )
    _read_options(p)
    p.set_defaults(handler=_cmd_locks)

    # -- run -----------------------------------------------------------------------------
    p = add(
        sub,
        "run",
        "Run COMMAND while holding a lock (or one of N semaphore slots) on PREFIX.",
        "Like `consul lock`, and interoperable with it on the same PREFIX: with -n 1 the\n"
        "lock is PREFIX/.lock with Consul's lock flags; with -n N > 1 it is Consul's\n"
        "semaphore layout (contender keys PREFIX/<session> and PREFIX/.lock).\n"
        "COMMAND starts only once the lock is held, in its own process group, with\n"
        "LOCKSMITH_KEY, LOCKSMITH_SESSION, LOCKSMITH_FENCING_TOKEN and CONSUL_LOCK_HELD=true\n"
        "in its environment. SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to locksmith\n"
        "are forwarded to COMMAND. If the lock is lost, COMMAND's process group gets SIGTERM\n"
        f"and, after --grace, SIGKILL; locksmith then exits {EXIT_LOCK_LOST}. When COMMAND exits,\n"
        "the lock is released and COMMAND's exit status is returned.\n"
        "While waiting, a terminal shows who holds the lock (session name, node) and for\n"
        "how long, updated in place; in a pipe, a log line per change.",
        "  locksmith run jobs/nightly -- ./nightly-report.sh --full\n"
        '  locksmith run --timeout 10s jobs/nightly -- ./report.sh || echo "exit $?"\n'
        "  locksmith run -n 3 jobs/encoders -- ./encode.sh   # at most 3 at once\n"
        "  locksmith run --shell jobs/backup -- 'pg_dump db | gzip > db.gz'",
    )
    _run_options(p, semaphore=True)
    p.add_argument("prefix", metavar="PREFIX", help="lock prefix (the lock is PREFIX/.lock)")
    p.add_argument(
        "command", metavar="COMMAND", nargs="*", help="the command to run (after --) and its args"
    )
    p.set_defaults(handler=_cmd_run)

    # -- elect ---------------------------------------------------------------------------
    p = add(
        sub,
        "elect",
        "Run COMMAND while this process is the leader of KEY.",
        "Campaigns for KEY (publishing --value as the leader's value), starts COMMAND once\n"
        "elected, and handles it like `run` does: the same environment, signal forwarding,\n"
        f"SIGTERM/SIGKILL on loss of leadership (exit {EXIT_LOCK_LOST}), resigning (no\n"
        "lock-delay for the next candidate) when COMMAND exits, COMMAND's status returned.",
        "  locksmith elect service/web/leader --value host-a:8080 -- ./serve --port 8080\n"
        "  locksmith elect --timeout 1m jobs/cron-leader --value $(hostname) -- ./cron.sh",
    )
    p.add_argument(
        "--value",
        default="",
        metavar="V",
        help="value to publish while leading (shown by `locksmith leader`)",
    )
    _run_options(p, semaphore=False)
    p.add_argument("key", metavar="KEY", help="election key")
    p.add_argument(
        "command", metavar="COMMAND", nargs="*", help="the command to run (after --) and its args"
    )
    p.set_defaults(handler=_cmd_elect)

    # -- leader --------------------------------------------------------------------------
    p = add(
        sub,
        "leader",
        "Print the current leader of an election KEY.",
        "Prints the leader's value, session, session name and node. With --watch, prints\n"
        "the current leader and then every change (new leader, new value, no leader) until\n"
        f"interrupted (Ctrl-C exits 0). Without --watch, no leader exits {EXIT_NOT_FOUND}.\n"
        "With --json, one JSON object per line.",
        "  locksmith leader service/web/leader\n"
        "  locksmith leader service/web/leader --watch --json",
    )
    p.add_argument("key", metavar="KEY", help="election key")
    p.add_argument("--watch", action="store_true", help="keep printing every change")
    _json_option(p)
    p.set_defaults(handler=_cmd_leader)

    return parser


def _run_options(p: argparse.ArgumentParser, *, semaphore: bool) -> None:
    grp = p.add_argument_group("lock options")
    if semaphore:
        grp.add_argument(
            "-n",
            "--limit",
            type=_positive_int,
            default=1,
            metavar="N",
            help="how many may run at once: 1 = lock (default), N > 1 = semaphore",
        )
    grp.add_argument(
        "--timeout",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help=f"give up waiting after this long and exit {EXIT_NOT_ACQUIRED} (0: wait forever, "
        "the default)",
    )
    grp.add_argument(
        "--ttl",
        type=_duration,
        default=15.0,
        metavar="DURATION",
        help="session TTL, 10s..86400s (default 15s); a crashed holder's lock is freed "
        "within 2xTTL",
    )
    grp.add_argument(
        "--lock-delay",
        type=_duration,
        default=15.0,
        metavar="DURATION",
        help="0s..60s: after a holder's session is invalidated, nobody may take the lock for "
        "this long (default 15s)",
    )
    grp.add_argument(
        "--name",
        metavar="NAME",
        help="session name, shown by `locksmith locks` and to waiters "
        "(default: 'locksmith run|elect KEY on HOST')",
    )
    child = p.add_argument_group("child options")
    child.add_argument(
        "--grace",
        type=_duration,
        default=5.0,
        metavar="DURATION",
        help="after the lock is lost, SIGTERM then wait this long before SIGKILL (default 5s)",
    )
    child.add_argument(
        "--shell",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run COMMAND through /bin/sh -c (--no-shell, the default: execute it directly)",
    )
    child.add_argument(
        "--pass-stdin",
        action="store_true",
        help="give COMMAND locksmith's stdin (default: /dev/null)",
    )
    child.add_argument(
        "--monitor-retry",
        type=_non_negative_int,
        default=3,
        metavar="N",
        help="accepted for compatibility with `consul lock -monitor-retry` and currently "
        "unused: locksmith presumes the lock lost when no renewal succeeded within the TTL, "
        "and rides out shorter Consul outages",
    )


def _version() -> str:
    from locksmith import __version__  # noqa: PLC0415 - avoids an import cycle at load

    return __version__


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------
def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _print_json(data: Any) -> None:
    _out(json.dumps(data, indent=2, sort_keys=False))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align columns: two spaces apart, the last column unpadded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(round(seconds, 3))


def session_json(s: Session) -> dict[str, Any]:
    """The documented JSON object for a session (durations in seconds)."""
    return {
        "id": s.id,
        "name": s.name,
        "node": s.node,
        "behavior": s.behavior,
        "ttl": s.ttl,
        "lock_delay": s.lock_delay,
        "node_checks": list(s.node_checks),
        "service_checks": [{"id": c.id, "namespace": c.namespace} for c in s.service_checks],
        "create_index": s.create_index,
        "modify_index": s.modify_index,
    }


def meta_json(m: QueryMeta) -> dict[str, Any]:
    """The documented JSON object for a read's query meta (last_contact in seconds)."""
    return {"index": m.index, "known_leader": m.known_leader, "last_contact": m.last_contact}


def _checks_text(s: Session) -> str:
    items = list(s.node_checks) + [
        f"{c.id}@{c.namespace}" if c.namespace else c.id for c in s.service_checks
    ]
    return ",".join(items) or "-"


def _sessions_table(sessions: Sequence[Session]) -> str:
    rows = [
        [
            s.id,
            s.name or "-",
            s.node,
            s.behavior,
            _dur(s.ttl),
            _dur(s.lock_delay),
            _checks_text(s),
        ]
        for s in sorted(sessions, key=lambda x: (x.node, x.name, x.id))
    ]
    return _table(["ID", "NAME", "NODE", "BEHAVIOR", "TTL", "LOCK-DELAY", "CHECKS"], rows)


def _session_detail(s: Session) -> str:
    rows = [
        ["ID", s.id],
        ["Name", s.name or "-"],
        ["Node", s.node],
        ["Behavior", s.behavior],
        ["TTL", _dur(s.ttl)],
        ["LockDelay", _dur(s.lock_delay)],
        ["NodeChecks", ",".join(s.node_checks) or "-"],
        [
            "ServiceChecks",
            ",".join(f"{c.id}@{c.namespace}" if c.namespace else c.id for c in s.service_checks)
            or "-",
        ],
        ["CreateIndex", str(s.create_index)],
        ["ModifyIndex", str(s.modify_index)],
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


# --------------------------------------------------------------------------------------
# Context: the client and settings shared by the commands
# --------------------------------------------------------------------------------------
@dataclass
class _Ctx:
    args: argparse.Namespace
    redactor: _Redactor
    verbose: int
    quiet: bool

    def consul(self) -> Consul:
        a = self.args
        client = Consul(
            getattr(a, "address", None),
            token=getattr(a, "token", None),
            token_file=getattr(a, "token_file", None),
            datacenter=getattr(a, "datacenter", None),
            ca_file=getattr(a, "ca_file", None),
            ca_path=getattr(a, "ca_path", None),
            client_cert=getattr(a, "client_cert", None),
            client_key=getattr(a, "client_key", None),
            tls_server_name=getattr(a, "tls_server_name", None),
        )
        self.redactor.add(client.config.token)
        log.debug("cli.consul", address=client.config.url, dc=client.config.datacenter)
        return client


_CTX: threading.local = threading.local()


def _ctx() -> _Ctx:
    ctx: _Ctx = _CTX.value
    return ctx


def _read_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    consistency: Consistency = args.consistency
    kw: dict[str, Any] = {"consistency": consistency}
    if getattr(args, "index", None) is not None:
        kw["index"] = args.index
        if args.wait is not None:
            kw["wait"] = args.wait
    elif getattr(args, "wait", None) is not None:
        raise CLIError("--wait needs --index (it is the longest a blocking query waits)", 64)
    return kw


# --------------------------------------------------------------------------------------
# sessions
# --------------------------------------------------------------------------------------
def _cmd_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(args: argparse.Namespace) -> int:
        del args
        parser.print_usage(sys.stderr)
        _err(f"{PROG}: error: {parser.prog}: a subcommand is required (see '{parser.prog} --help')")
        return EXIT_USAGE

    return show


def _cmd_sessions_list(args: argparse.Namespace) -> int:
    kw = _read_kwargs(args)
    with _ctx().consul() as consul:
        res = consul.sessions.list_with_meta(**kw)
    _print_sessions(args, res.value, res.meta)
    return EXIT_OK


def _cmd_sessions_node(args: argparse.Namespace) -> int:
    kw = _read_kwargs(args)
    with _ctx().consul() as consul:
        res = consul.sessions.node_with_meta(args.node, **kw)
    _print_sessions(args, res.value, res.meta)
    return EXIT_OK


def _print_sessions(args: argparse.Namespace, sessions: Sequence[Session], meta: QueryMeta) -> None:
    if args.json:
        _print_json({"sessions": [session_json(s) for s in sessions], "meta": meta_json(meta)})
    elif sessions:
        _out(_sessions_table(sessions))
    else:
        _out("no sessions")


def _cmd_sessions_info(args: argparse.Namespace) -> int:
    kw = _read_kwargs(args)
    with _ctx().consul() as consul:
        res = consul.sessions.info_with_meta(args.session_id, **kw)
    if args.json:
        _print_json(
            {
                "session": session_json(res.value) if res.value else None,
                "meta": meta_json(res.meta),
            }
        )
    elif res.value is not None:
        _out(_session_detail(res.value))
    if res.value is None:
        raise CLIError(f"session {args.session_id} not found", EXIT_NOT_FOUND)
    return EXIT_OK


def _split_list(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [item.strip() for v in values for item in v.split(",") if item.strip()]


def _cmd_sessions_create(args: argparse.Namespace) -> int:
    service_checks = None
    if args.service_checks is not None:
        service_checks = []
        for item in _split_list(args.service_checks) or []:
            cid, _, ns = item.partition("@")
            service_checks.append(ServiceCheck(id=cid, namespace=ns))
    with _ctx().consul() as consul:
        sid = consul.sessions.create(
            name=args.name,
            node=args.node,
            checks=_split_list(args.checks),
            node_checks=_split_list(args.node_checks),
            service_checks=service_checks,
            lock_delay=args.lock_delay,
            behavior=args.behavior,
            ttl=args.ttl,
        )
    if args.json:
        _print_json({"id": sid})
    else:
        _out(sid)
    return EXIT_OK


def _cmd_sessions_renew(args: argparse.Namespace) -> int:
    with _ctx().consul() as consul:
        session = consul.sessions.renew(args.session_id)
    if args.json:
        _print_json({"session": session_json(session)})
    else:
        _out(_session_detail(session))
    return EXIT_OK


def _cmd_sessions_destroy(args: argparse.Namespace) -> int:
    with _ctx().consul() as consul:
        consul.sessions.destroy(args.session_id)
    if args.json:
        _print_json({"id": args.session_id, "destroyed": True})
    else:
        _out(f"destroyed {args.session_id}")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# locks
# --------------------------------------------------------------------------------------
def kind_of(flags: int) -> str:
    """The lock recipe a KV entry's flags belong to."""
    if flags == 0:
        return KIND_LOCKSMITH
    return _KINDS.get(flags, KIND_OTHER)


def _semaphore_state(entry: KVEntry) -> tuple[int | None, list[str]]:
    try:
        data = json.loads(entry.value or b"{}")
        limit = int(data.get("Limit") or 0) or None
        holders = sorted(k for k, v in (data.get("Holders") or {}).items() if v)
    except (ValueError, TypeError, AttributeError):
        return None, []
    return limit, holders


def lock_rows(entries: Sequence[KVEntry], sessions: Mapping[str, Session]) -> list[dict[str, Any]]:
    """Turn KV entries into the ``locks`` rows (documented JSON fields, see LOCK_FIELDS)."""
    semaphores: dict[str, tuple[int | None, list[str]]] = {}
    for e in entries:
        if e.flags == CONSUL_SEMAPHORE_FLAGS and e.key.rsplit("/", 1)[-1] == ".lock":
            semaphores[e.key.rsplit("/", 1)[0] if "/" in e.key else ""] = _semaphore_state(e)
    rows: list[dict[str, Any]] = []
    for e in sorted(entries, key=lambda x: x.key):
        kind = kind_of(e.flags)
        if e.session is None and kind in (KIND_LOCKSMITH, KIND_OTHER):
            continue  # an ordinary key, not a lock
        row: dict[str, Any] = dict.fromkeys(LOCK_FIELDS)
        row.update(
            key=e.key,
            kind=kind,
            flags=e.flags,
            lock_index=e.lock_index,
            maybe_lock_delay=False,
        )
        parent = e.key.rsplit("/", 1)[0] if "/" in e.key else ""
        is_sem_lock = kind == KIND_CONSUL_SEMAPHORE and e.key.rsplit("/", 1)[-1] == ".lock"
        if is_sem_lock:
            limit, holders = semaphores.get(parent, (None, []))
            row.update(state="semaphore", limit=limit, holders=holders)
        elif e.session is not None:
            s = sessions.get(e.session)
            state = "held"
            if kind == KIND_CONSUL_SEMAPHORE and parent in semaphores:
                state = "held" if e.session in semaphores[parent][1] else "waiting"
            row.update(
                state=state,
                session=e.session,
                session_name=s.name if s else None,
                node=s.node if s else None,
                fencing_token=e.modify_index if state == "held" else None,
                since_index=e.modify_index,
            )
        else:
            row.update(state="free", maybe_lock_delay=True)
        rows.append(row)
    return rows


def _lock_state_text(row: Mapping[str, Any]) -> str:
    if row["state"] == "semaphore":
        limit = row["limit"] if row["limit"] is not None else "?"
        return f"{len(row['holders'])}/{limit} held"
    if row["state"] == "free":
        return "free (maybe in lock-delay)"
    return str(row["state"])


def _cmd_locks(args: argparse.Namespace) -> int:
    kw = _read_kwargs(args)
    with _ctx().consul() as consul:
        res = consul.kv.list_with_meta(args.prefix, **kw)
        held = {e.session for e in res.value if e.session}
        sessions: dict[str, Session] = {}
        if held:
            sessions = {
                s.id: s for s in consul.sessions.list(consistency=kw["consistency"]) if s.id in held
            }
    rows = lock_rows(res.value, sessions)
    if args.json:
        _print_json({"locks": rows, "meta": meta_json(res.meta)})
        return EXIT_OK
    if not rows:
        _out(f"no locks under {args.prefix!r}" if args.prefix else "no locks")
        return EXIT_OK
    table = [
        [
            r["key"],
            r["kind"],
            _lock_state_text(r),
            r["session"] or "-",
            r["session_name"] or "-",
            r["node"] or "-",
            str(r["lock_index"]),
            str(r["fencing_token"]) if r["fencing_token"] is not None else "-",
        ]
        for r in rows
    ]
    _out(
        _table(["KEY", "KIND", "STATE", "SESSION", "NAME", "NODE", "LOCK-INDEX", "FENCING"], table)
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------
# Waiting status for run / elect
# --------------------------------------------------------------------------------------
class _HolderDisplay:
    """Shows who holds a lock while this process waits for it.

    On a terminal, one status line on stderr rewritten in place every second; otherwise a
    plain log line each time the holders change.
    """

    def __init__(
        self,
        consul: Consul,
        key: str,
        *,
        semaphore_prefix: str | None,
        is_done: Callable[[], bool],
        own: Callable[[], set[str]],
        stream: IO[str],
    ) -> None:
        self._own = own
        self._consul = consul
        self._key = key
        self._sem_prefix = semaphore_prefix
        self._is_done = is_done
        self._stream = stream
        self._tty = _isatty(stream)
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._first_seen: dict[str, float] = {}
        self._names: dict[str, tuple[str, str]] = {}
        self._shown_line = False
        self._last_holders: tuple[str, ...] | None = None
        self._thread = threading.Thread(target=self._run, name="locksmith-cli-status", daemon=True)

    def start(self) -> _HolderDisplay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._clear()

    def _clear(self) -> None:
        if self._tty and self._shown_line:
            with contextlib.suppress(ValueError, OSError):
                self._stream.write("\r\x1b[K")
                self._stream.flush()
            self._shown_line = False

    def _holders(self, index: int) -> tuple[tuple[str, ...], int]:
        wait = 1.0 if self._tty else 10.0
        if self._sem_prefix is None:
            res = self._consul.kv.get_with_meta(self._key, index=index or None, wait=wait)
            holders = (res.value.session,) if res.value and res.value.session else ()
            return holders, res.meta.index
        lst = self._consul.kv.list_with_meta(self._sem_prefix + "/", index=index or None, wait=wait)
        lock_entry = next((e for e in lst.value if e.key == self._key), None)
        _, names = _semaphore_state(lock_entry) if lock_entry else (None, [])
        return tuple(names), lst.meta.index

    def _describe(self, sid: str) -> str:
        if sid not in self._names:
            try:
                s = self._consul.sessions.info(sid)
            except LocksmithError:
                s = None
            self._names[sid] = (s.name if s and s.name else "?", s.node if s else "?")
        name, node = self._names[sid]
        held = time.monotonic() - self._first_seen.get(sid, self._started)
        return f"{name!r} on node {node} (session {sid[:8]}) for >={_seconds_text(held)}"

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set() and not self._is_done():
            try:
                holders, new_index = self._holders(index)
            except LocksmithError:
                self._stop.wait(1.0)
                index = 0
                continue
            index = next_index(index, new_index)
            own = self._own()
            holders = tuple(h for h in holders if h not in own)
            now = time.monotonic()
            for sid in holders:
                self._first_seen.setdefault(sid, now)
            if self._stop.is_set() or self._is_done():
                break
            waited = _seconds_text(now - self._started)
            if holders:
                who = "; ".join(self._describe(s) for s in holders)
                if self._is_done():
                    break
                line = f"waiting {waited} for {self._key}: held by {who}"
            else:
                line = f"waiting {waited} for {self._key}: free (maybe in lock-delay)"
            with contextlib.suppress(ValueError, OSError):
                if self._tty:
                    self._stream.write("\r\x1b[K" + line[:200])
                    self._stream.flush()
                    self._shown_line = True
                elif holders != self._last_holders:
                    self._stream.write(f"{PROG}: {line}\n")
                    self._stream.flush()
            self._last_holders = holders


def _seconds_text(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------------------
# run / elect / leader
# --------------------------------------------------------------------------------------
def _child_argv(args: argparse.Namespace) -> list[str]:
    if not args.command:
        raise CLIError(
            f"{PROG} {args.command_name}: COMMAND is missing (usage: {PROG} "
            f"{args.command_name} ... -- COMMAND [ARGS...])",
            EXIT_USAGE,
        )
    return list(args.command)


def _session_name(args: argparse.Namespace, what: str, key: str) -> str:
    if args.name:
        return str(args.name)
    return f"{PROG} {what} {key} on {os.uname().nodename} (pid {os.getpid()})"


def _timeout(args: argparse.Namespace) -> float | None:
    if args.timeout < 0:
        raise ValidationError("--timeout", f"must be >= 0 (0: wait forever), got {args.timeout}")
    return None if args.timeout == 0 else float(args.timeout)


class _Terminated(Exception):  # noqa: N818 - internal control flow
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """While waiting for a lock, SIGTERM/SIGHUP end the wait cleanly (session destroyed).

    run_exclusive installs its own forwarding handlers while the child runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        del frame
        raise _Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _waiting_status(
    consul: Consul,
    key: str,
    semaphore_prefix: str | None,
    is_done: Callable[[], bool],
    own: Callable[[], set[str]],
) -> Iterator[None]:
    if _ctx().quiet:
        yield
        return
    display = _HolderDisplay(
        consul,
        key,
        semaphore_prefix=semaphore_prefix,
        is_done=is_done,
        own=own,
        stream=sys.stderr,
    ).start()
    try:
        yield
    finally:
        display.stop()


def _close_in_fresh_thread(mgr: Any, consul: Consul) -> None:
    """Close the manager (release, destroy the session) from a new thread.

    A Ctrl-C or SIGTERM while waiting interrupts a request half-way, leaving this thread's
    keep-alive connection unusable; a fresh thread gets a fresh connection, so the session is
    still destroyed and no contender key is left behind.
    """
    t = threading.Thread(target=mgr.close, name="locksmith-cli-close", daemon=True)
    t.start()
    t.join(timeout=30.0)
    consul.close()


def _own_sessions(mgr: Any) -> set[str]:
    """This process's session IDs (the manager's and its delete-behavior companion's)."""
    own = {mgr.current_session_id}
    companion = getattr(mgr, "_ephemeral_mgr", None)
    if companion is not None:
        own.add(companion.current_session_id)
    return {s for s in own if s}


def _run_guarded(
    args: argparse.Namespace,
    argv: list[str],
    *,
    make_guard: Callable[[Any], Any],
    key: str,
    semaphore_prefix: str | None,
    what: str,
) -> int:
    from locksmith._child import run_exclusive  # noqa: PLC0415 - loaded on demand
    from locksmith._manager import LockManager  # noqa: PLC0415

    timeout = _timeout(args)
    consul = _ctx().consul()
    mgr = LockManager(
        consul,
        ttl=args.ttl,
        lock_delay=args.lock_delay,
        name=_session_name(args, what, key),
    )
    started = threading.Event()

    def on_started(lease: Any, pid: int) -> None:
        started.set()
        log.info("cli.child_started", key=lease.key, pid=pid, fencing_token=lease.fencing_token)

    try:
        with _terminate_raises():
            guard = make_guard(mgr)
            with _waiting_status(
                consul,
                key,
                semaphore_prefix,
                lambda: started.is_set() or bool(guard.held),
                lambda: _own_sessions(mgr),
            ):
                status = run_exclusive(
                    guard,
                    argv,
                    shell=args.shell,
                    grace=args.grace,
                    pass_stdin=args.pass_stdin,
                    timeout=timeout,
                    on_started=on_started,
                )
    except _Terminated as exc:
        _err(f"{PROG}: {signal.Signals(exc.signum).name} while waiting for {key}: gave up")
        return 128 + exc.signum
    finally:
        _close_in_fresh_thread(mgr, consul)
    if status == EXIT_LOCK_LOST:
        log.warning("cli.lock_lost", key=key)
    return int(status)


def _cmd_run(args: argparse.Namespace) -> int:
    argv = _child_argv(args)
    prefix = str(args.prefix).rstrip("/")
    if not prefix:
        raise ValidationError("PREFIX", "must be a non-empty key prefix")
    key = lock_key(prefix)
    limit = int(args.limit)
    if limit == 1:
        return _run_guarded(
            args,
            argv,
            make_guard=lambda m: m.consul_lock(prefix),
            key=key,
            semaphore_prefix=None,
            what="run",
        )
    return _run_guarded(
        args,
        argv,
        make_guard=lambda m: m.semaphore(prefix, limit),
        key=key,
        semaphore_prefix=prefix,
        what="run",
    )


def _cmd_elect(args: argparse.Namespace) -> int:
    argv = _child_argv(args)
    key = str(args.key)
    value = str(args.value)
    return _run_guarded(
        args,
        argv,
        make_guard=lambda m: m.election(key, value).lock,
        key=key,
        semaphore_prefix=None,
        what="elect",
    )


def leader_json(key: str, info: Any) -> dict[str, Any]:
    """The documented JSON object for ``leader`` (``leader`` false when nobody leads)."""
    if info is None:
        return {
            "key": key,
            "leader": False,
            "value": None,
            "session": None,
            "session_name": None,
            "node": None,
            "since_index": None,
        }
    return {
        "key": key,
        "leader": True,
        "value": info.value.decode("utf-8", "replace"),
        "session": info.session_id,
        "session_name": info.session_name,
        "node": info.node,
        "since_index": info.since_index,
    }


def _leader_text(key: str, info: Any) -> str:
    if info is None:
        return f"{key}: no leader"
    value = info.value.decode("utf-8", "replace")
    return (
        f"{key}: leader {value!r} session {info.session_id} "
        f"name {info.session_name or '-'!r} node {info.node or '-'} since index "
        f"{info.since_index}"
    )


def _cmd_leader(args: argparse.Namespace) -> int:
    from locksmith._manager import LockManager  # noqa: PLC0415

    consul = _ctx().consul()
    mgr = LockManager(consul, name="locksmith leader")
    try:
        election = mgr.election(args.key)
        if not args.watch:
            info = election.leader()
            if args.json:
                _print_json(leader_json(election.key, info))
            else:
                _out(_leader_text(election.key, info))
            return EXIT_OK if info is not None else EXIT_NOT_FOUND
        try:
            for info in election.observe():
                if args.json:
                    _out(json.dumps(leader_json(election.key, info)))
                else:
                    _out(_leader_text(election.key, info))
                sys.stdout.flush()
        except KeyboardInterrupt:
            return EXIT_OK
        return EXIT_OK
    finally:
        mgr.close()
        consul.close()


# --------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------
def _configure_logging(fmt: str, verbose: int, quiet: bool, redactor: _Redactor) -> None:
    if quiet:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *a: _StderrLogger(),
        cache_logger_on_first_use=False,
    )


@contextlib.contextmanager
def _stdlib_logging(level: int, redactor: _Redactor) -> Iterator[None]:
    """Route third-party stdlib logging to stderr at ``level`` for the command's duration."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.addFilter(_StdlibRedactFilter(redactor))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(min(old_level or logging.WARNING, level))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------
def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Split ``run``/``elect`` argv at the first ``--``; the rest belongs to COMMAND."""
    if "--" not in argv:
        return argv, None
    idx = argv.index("--")
    if not any(t in ("run", "elect") for t in argv[:idx]):
        return argv, None
    return argv[:idx], argv[idx + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``locksmith`` command line and return its exit status.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    raw = list(sys.argv[1:] if argv is None else argv)
    head, tail = _split_command(raw)
    parser = build_parser()
    try:
        args = parser.parse_args(head)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if tail is not None:
        # `run P cmd -- x`: the -- belonged to COMMAND; `run P -- cmd`: COMMAND follows it.
        args.command = [*args.command, "--", *tail] if args.command else tail
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        _err(f"{PROG}: error: a command is required (see '{PROG} --help')")
        return EXIT_USAGE

    verbose = int(getattr(args, "verbose", 0) or 0)
    quiet = bool(getattr(args, "quiet", False))
    redactor = _Redactor()
    redactor.add(getattr(args, "token", None))
    redactor.add(os.environ.get("CONSUL_HTTP_TOKEN"))
    was_configured = structlog.is_configured()
    old_config = structlog.get_config()
    _configure_logging(getattr(args, "log_format", "console"), verbose, quiet, redactor)
    _CTX.value = _Ctx(args=args, redactor=redactor, verbose=verbose, quiet=quiet)
    std_level = logging.DEBUG if verbose >= 2 else logging.WARNING
    try:
        with _stdlib_logging(std_level, redactor):
            return int(handler(args))
    except KeyboardInterrupt:
        _err(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error worth a message.
        with contextlib.suppress(OSError, ValueError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaced for interpreter exit
        return EXIT_OK
    except (LocksmithError, CLIError, OSError) as exc:
        _report(exc, verbose, redactor)
        return exit_code_for(exc)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback only with -v
        _report(exc, verbose, redactor, prefix=f"unexpected {type(exc).__name__}: ")
        return EXIT_ERROR
    finally:
        _CTX.value = None
        if was_configured:
            structlog.configure(**old_config)
        else:
            structlog.reset_defaults()


def _report(exc: BaseException, verbose: int, redactor: _Redactor, prefix: str = "") -> None:
    if verbose:
        _err(redactor.text("".join(traceback.format_exception(exc))).rstrip())
    message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, ConsulError):
        message = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    one_line = " ".join(redactor.text(message).split())
    _err(f"{PROG}: error: {prefix}{one_line}")

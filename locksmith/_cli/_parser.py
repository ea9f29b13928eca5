"""The ``locksmith`` argument parser: every command, option, help text and argument type.

Built on :mod:`argparse` only. Every command has a complete ``--help`` (description,
options, examples, exit codes); ``docs/cli.md`` is the same reference in prose, and a test
checks that every command and option of this parser appears there.

The parser knows the commands but not their code: :func:`build_parser` takes the handlers
as a mapping from command path (``"sessions list"``, ``"run"``...) to function, which the
package's ``__init__`` supplies. Without them the parser parses but dispatches nothing
(enough for introspection, e.g. the docs test).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from locksmith._cli._exit import (
    EXIT_CODES_TEXT,
    EXIT_LOCK_LOST,
    EXIT_NOT_ACQUIRED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
)
from locksmith._cli._output import PROG, err
from locksmith._durations import parse_duration
from locksmith._exceptions import ValidationError

__all__ = [
    "COMMAND_PATHS",
    "ENV_TEXT",
    "GLOBAL_OPTIONS_POINTER",
    "Handler",
    "build_parser",
    "split_command",
]

#: A command's code: the parsed arguments in, the exit status out.
Handler = Callable[[argparse.Namespace], int]

#: The commands that run something, by the key :func:`build_parser` looks their handler up with.
COMMAND_PATHS = (
    "sessions list",
    "sessions node",
    "sessions info",
    "sessions create",
    "sessions renew",
    "sessions destroy",
    "locks",
    "run",
    "hold",
    "elect",
    "leader",
)

#: The line each command's ``--help`` shows instead of repeating the global options.
GLOBAL_OPTIONS_POINTER = (
    f"global options (--address, --token, TLS, --dc, -v, -q...) work here too: see '{PROG} --help'"
)

ENV_TEXT = """\
environment (used when the matching option is not given):
  CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, CONSUL_CACERT, CONSUL_CAPATH,
  CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL,
  CONSUL_HTTP_SSL_VERIFY
"""


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


# -- argument types ------------------------------------------------------------------------
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


# -- option groups -------------------------------------------------------------------------
def _global_options(*, shown: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the command (``default=SUPPRESS`` merges both).

    ``locksmith --help`` lists them (``shown``); each command's parser accepts them as well,
    with their help suppressed so that its ``--help`` shows only its own options and
    :data:`GLOBAL_OPTIONS_POINTER`.
    """
    g = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS

    def h(text: str) -> str:
        return text if shown else s

    conn = g.add_argument_group("connection options (fall back to Consul's environment variables)")
    conn.add_argument(
        "--address",
        metavar="ADDR",
        default=s,
        help=h(
            "Consul HTTP API: host:port or http(s)://host:port "
            "(env CONSUL_HTTP_ADDR; default 127.0.0.1:8500)"
        ),
    )
    conn.add_argument(
        "--token",
        metavar="TOKEN",
        default=s,
        help=h(
            "ACL token (env CONSUL_HTTP_TOKEN); never printed. Prefer --token-file: "
            "arguments are visible to other local users"
        ),
    )
    conn.add_argument(
        "--token-file",
        metavar="PATH",
        default=s,
        help=h("file holding the ACL token (env CONSUL_HTTP_TOKEN_FILE)"),
    )
    conn.add_argument(
        "--ca-file",
        metavar="PATH",
        default=s,
        help=h("PEM bundle of CAs to verify Consul's certificate (env CONSUL_CACERT)"),
    )
    conn.add_argument(
        "--ca-path",
        metavar="DIR",
        default=s,
        help=h("directory of CA certificates (env CONSUL_CAPATH)"),
    )
    conn.add_argument(
        "--client-cert",
        metavar="PATH",
        default=s,
        help=h("client certificate for mutual TLS (env CONSUL_CLIENT_CERT)"),
    )
    conn.add_argument(
        "--client-key",
        metavar="PATH",
        default=s,
        help=h("client key for mutual TLS (env CONSUL_CLIENT_KEY)"),
    )
    conn.add_argument(
        "--tls-server-name",
        metavar="NAME",
        default=s,
        help=h("host name to verify Consul's certificate against (env CONSUL_TLS_SERVER_NAME)"),
    )
    conn.add_argument(
        "--datacenter",
        "--dc",
        dest="datacenter",
        metavar="DC",
        default=s,
        help=h("datacenter to query (default: the agent's)"),
    )
    out = g.add_argument_group("logging options")
    out.add_argument(
        "--log-format",
        choices=("console", "json"),
        default=s,
        help=h("format of log lines on stderr (default: console)"),
    )
    out.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=s,
        help=h("more log output (-v: info, -vv: debug) and tracebacks on errors"),
    )
    out.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=s,
        help=h("only errors on stderr (no warnings, no waiting status)"),
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


def _run_options(p: argparse.ArgumentParser, *, semaphore: bool) -> None:
    _lock_options(p, semaphore=semaphore)
    _child_options(p)


def _lock_options(p: argparse.ArgumentParser, *, semaphore: bool) -> None:
    grp = p.add_argument_group("lock options")
    if semaphore:
        grp.add_argument(
            "-n",
            "--limit",
            type=_positive_int,
            default=1,
            metavar="N",
            help="how many may hold the lock at once: 1 = lock (default), N > 1 = semaphore",
        )
        grp.add_argument(
            "--fair",
            action="store_true",
            help="first come, first served: locksmith's fair queue under PREFIX (one entry "
            "per waiter, PREFIX/.lock its marker) instead of Consul's lock layout; refuses, "
            "and is refused by, consul lock on PREFIX. Not with -n N > 1",
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
        "(default: 'locksmith run|elect|hold KEY on HOST (pid N)')",
    )


def _child_options(p: argparse.ArgumentParser) -> None:
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


def _epilog(examples: str, *, top: bool = False) -> str:
    """Examples and exit codes; the top level adds the environment, commands the pointer."""
    if top:
        return f"examples:\n{examples.rstrip()}\n\n{EXIT_CODES_TEXT}\n{ENV_TEXT}"
    return f"{GLOBAL_OPTIONS_POINTER}\n\nexamples:\n{examples.rstrip()}\n\n{EXIT_CODES_TEXT}"


def _require_subcommand(parser: argparse.ArgumentParser) -> Handler:
    """The handler of a command group given without its subcommand: a usage error."""

    def show(args: argparse.Namespace) -> int:
        del args
        parser.print_usage(sys.stderr)
        err(f"{PROG}: error: {parser.prog}: a subcommand is required (see '{parser.prog} --help')")
        return EXIT_USAGE

    return show


def _version() -> str:
    from locksmith import __version__  # noqa: PLC0415 - avoids an import cycle at load

    return __version__


# -- the parser ----------------------------------------------------------------------------
def build_parser(handlers: Mapping[str, Handler] | None = None) -> argparse.ArgumentParser:
    """Build the ``locksmith`` argument parser (every command and option).

    Args:
        handlers: The function of each command of :data:`COMMAND_PATHS`, stored as the
            ``handler`` of the parsed arguments. Without them nothing is dispatched.
    """

    def handle(p: argparse.ArgumentParser, path: str) -> None:
        assert path in COMMAND_PATHS, path
        if handlers is not None:
            p.set_defaults(handler=handlers[path])

    hidden = _global_options(shown=False)
    parser = _Parser(
        prog=PROG,
        formatter_class=_Formatter,
        parents=[_global_options(shown=True)],
        description=(
            "Distributed locks, semaphores and leader election on Consul sessions.\n\n"
            "The global options below may come before or after the command. Each command's\n"
            f"help ({PROG} COMMAND --help) lists only its own options."
        ),
        epilog=_epilog(
            "  locksmith sessions list\n"
            "  locksmith locks jobs/\n"
            "  locksmith run jobs/nightly -- ./nightly-report.sh\n"
            "  locksmith run -n 3 --timeout 30s jobs/encoders -- ffmpeg -i in.mp4 out.webm\n"
            "  locksmith run --fair jobs/deploy -- ./deploy.sh\n"
            "  locksmith elect service/web/leader --value host-a:8080 -- ./serve\n"
            "  locksmith leader service/web/leader --watch",
            top=True,
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
            parents=[hidden],
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
    sessions.set_defaults(handler=_require_subcommand(sessions))

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
    handle(p, "sessions list")

    p = add(
        ssub,
        "node",
        "List the active sessions bound to one node.",
        "GET /v1/session/node/NODE. An unknown node has no sessions (an empty list).",
        "  locksmith sessions node web-1\n  locksmith sessions node web-1 --json",
    )
    p.add_argument("node", metavar="NODE", help="node name")
    _read_options(p)
    handle(p, "sessions node")

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
    handle(p, "sessions info")

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
    handle(p, "sessions create")

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
    handle(p, "sessions renew")

    p = add(
        ssub,
        "destroy",
        "Destroy a session; its keys are released or deleted per its behavior.",
        "PUT /v1/session/destroy/ID. Keys the session held enter their lock-delay window.\n"
        "Consul answers true for a session that does not exist, so locksmith looks it up\n"
        f"first (GET /v1/session/info/ID) and exits {EXIT_NOT_FOUND} when there is none (with\n"
        '--json it also prints {"id": ID, "destroyed": false}). Note: with ACLs, a live\n'
        "session the token may not read looks the same.",
        "  locksmith sessions destroy 0b9e6b8a-7f0a-4a3c-9d7e-0c3c2f6a1e55",
    )
    p.add_argument("session_id", metavar="ID", help="session ID (UUID)")
    _json_option(p)
    handle(p, "sessions destroy")

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
    handle(p, "locks")

    # -- run -----------------------------------------------------------------------------
    p = add(
        sub,
        "run",
        "Run COMMAND while holding a lock (or one of N semaphore slots) on PREFIX.",
        "Like `consul lock`, and interoperable with it on the same PREFIX: with -n 1 the\n"
        "lock is PREFIX/.lock with Consul's lock flags; with -n N > 1 it is Consul's\n"
        "semaphore layout (contender keys PREFIX/<session> and PREFIX/.lock).\n"
        "With --fair, waiters take the lock in the order they arrived: locksmith's own\n"
        "queue of entries under PREFIX (consul lock has no equivalent, and each refuses\n"
        "the other's PREFIX).\n"
        "COMMAND starts only once the lock is held, in its own process group, with\n"
        "LOCKSMITH_KEY, LOCKSMITH_SESSION, LOCKSMITH_FENCING_TOKEN and CONSUL_LOCK_HELD=true\n"
        "in its environment. SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to locksmith\n"
        "are forwarded to COMMAND. If the lock is lost, COMMAND's process group gets SIGTERM\n"
        f"and, after --grace, SIGKILL; locksmith then exits {EXIT_LOCK_LOST}. When COMMAND exits,\n"
        "the lock is released and COMMAND's exit status is returned.\n"
        "After a second of waiting, stderr shows what blocks the lock (a holder's session\n"
        "name and node, or a lock-delay window and its end): on a terminal one line updated\n"
        "in place, in a pipe a line per change, with --log-format json a cli.waiting event.",
        "  locksmith run jobs/nightly -- ./nightly-report.sh --full\n"
        '  locksmith run --timeout 10s jobs/nightly -- ./report.sh || echo "exit $?"\n'
        "  locksmith run -n 3 jobs/encoders -- ./encode.sh   # at most 3 at once\n"
        "  locksmith run --fair jobs/deploy -- ./deploy.sh   # in order of arrival\n"
        "  locksmith run --shell jobs/backup -- 'pg_dump db | gzip > db.gz'",
    )
    _run_options(p, semaphore=True)
    p.add_argument("prefix", metavar="PREFIX", help="lock prefix (the lock is PREFIX/.lock)")
    p.add_argument(
        "command", metavar="COMMAND", nargs="*", help="the command to run (after --) and its args"
    )
    handle(p, "run")

    # -- hold ----------------------------------------------------------------------------
    p = add(
        sub,
        "hold",
        "Hold a lock (or one of N semaphore slots) on PREFIX until SIGINT or SIGTERM.",
        "For shell scripts, like `etcdctl lock NAME`: takes the same lock as `run` (and as\n"
        "`consul lock`) on PREFIX, prints the lease on stdout once it is held, and holds it\n"
        "until SIGINT, SIGTERM or SIGHUP; then releases it (deleting an unused PREFIX/.lock)\n"
        "and exits 0. With --fair, waiters take it in order of arrival (as `run --fair`).\n"
        "The lease is one line, 'FENCING_TOKEN SESSION KEY' (the key last, so\n"
        "`read -r token session key` reads any key), or with --json one JSON object:\n"
        '{"key": ..., "session": ..., "fencing_token": ..., "limit": ...}.\n'
        f"If the lock is lost while held, locksmith exits {EXIT_LOCK_LOST} at once. A signal\n"
        "while still waiting exits 128+N (SIGINT: 130) and prints nothing on stdout.",
        "  coproc LOCK { locksmith hold --timeout 30s jobs/deploy; }\n"
        '  read -r token session key <&"${LOCK[0]}" || exit 1   # EOF: not acquired\n'
        '  ./deploy.sh --fencing-token "$token"\n'
        '  kill "$LOCK_PID"; wait "$LOCK_PID"                     # released: exit 0\n'
        "  locksmith hold -n 3 --json jobs/encoders\n"
        "  locksmith hold --fair jobs/deploy",
    )
    _lock_options(p, semaphore=True)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the lease as one JSON object (key, session, fencing_token, limit)",
    )
    p.add_argument("prefix", metavar="PREFIX", help="lock prefix (the lock is PREFIX/.lock)")
    handle(p, "hold")

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
    handle(p, "elect")

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
    handle(p, "leader")

    return parser


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Split ``run``/``elect`` argv at the first ``--``; the rest belongs to COMMAND."""
    if "--" not in argv:
        return argv, None
    idx = argv.index("--")
    if not any(t in ("run", "elect") for t in argv[:idx]):
        return argv, None
    return argv[:idx], argv[idx + 1 :]

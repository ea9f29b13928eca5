# PYTHON_ARGCOMPLETE_OK: argcomplete's global completion looks for this marker.
"""The ``locksmith`` command line: sessions, locks, ``run``, ``hold``, ``elect``, ``leader``.

The console script ``locksmith = "locksmith._cli:main"`` and ``python -m locksmith`` both
call :func:`main`. The package is split by responsibility; lower modules never import
higher ones:

- ``_exit``: exit codes, :class:`CLIError`, :func:`exit_code_for`, the exit-code help text.
- ``_output``: printing, tables, JSON helpers, session/lock/leader rows and their fields.
- ``_logging``: structlog configuration for a command and redaction of the ACL token.
- ``_parser``: the argparse parser (every command, option, help text and argument type).
- ``_context``: the running command's settings and its Consul client; the read options.
- ``_status``: the waiting status of ``run``/``elect`` (what blocks the lock, after 1 s).
- ``_cleanup``: deleting an unused ``PREFIX/.lock`` after a release, as Consul's recipes do
  (and, safely, a fair queue's marker).
- ``_guard``: what ``run``, ``elect`` and ``hold`` share: the lock taken for the command's
  lifetime, its waiting status, and the shut-down within one deadline.
- ``_sessions``, ``_locks``, ``_run`` (``run`` and ``elect``), ``_hold``, ``_leader``: one
  module per command, built on the modules above.
- this ``__init__``: wires the command modules to the parser, and :func:`main`, which
  hands the parser to argcomplete when a shell asks for completions (``_ARGCOMPLETE`` in
  the environment, and argcomplete installed: ``pip install consul-locksmith[completion]``).

Start-up stays light: until a command runs, only ``_exit``, ``_output`` and ``_parser`` are
loaded, with the library's light modules (exceptions, durations, models). A command's
module, and with it the client, structlog and tenacity, is imported when the command runs
(:class:`_Lazy`), so ``--version``, ``--help`` and usage errors load none of them.

This package is the only place where locksmith configures logging (structlog, to stderr):
the library itself never does. The ACL token is never printed: it is redacted from log
events and error messages, also with ``-v``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Mapping, Sequence
from importlib import import_module
from typing import TYPE_CHECKING

from locksmith._cli._exit import (
    EXIT_CANNOT_EXECUTE,
    EXIT_CODES_TEXT,
    EXIT_COMMAND_NOT_FOUND,
    EXIT_CONFIG,
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_LOCK_LOST,
    EXIT_NO_PERMISSION,
    EXIT_NOT_ACQUIRED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CLIError,
    exit_code_for,
)
from locksmith._cli._output import (
    KIND_CONSUL_LOCK,
    KIND_CONSUL_SEMAPHORE,
    KIND_FAIR,
    KIND_LOCKSMITH,
    KIND_OTHER,
    LEADER_FIELDS,
    LOCK_FIELDS,
    META_FIELDS,
    PROG,
    SESSION_FIELDS,
    err,
    kind_of,
    leader_json,
    lock_rows,
    meta_json,
    session_json,
)
from locksmith._cli._parser import ENV_TEXT, Handler, split_command
from locksmith._cli._parser import build_parser as _build_parser
from locksmith._exceptions import ConsulError, LocksmithError

if TYPE_CHECKING:
    from locksmith._cli._logging import Redactor

__all__ = [
    "COMMANDS",
    "ENV_TEXT",
    "EXIT_CANNOT_EXECUTE",
    "EXIT_CODES_TEXT",
    "EXIT_COMMAND_NOT_FOUND",
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
    "KIND_CONSUL_LOCK",
    "KIND_CONSUL_SEMAPHORE",
    "KIND_FAIR",
    "KIND_LOCKSMITH",
    "KIND_OTHER",
    "LEADER_FIELDS",
    "LOCK_FIELDS",
    "META_FIELDS",
    "PROG",
    "SESSION_FIELDS",
    "CLIError",
    "build_parser",
    "exit_code_for",
    "kind_of",
    "leader_json",
    "lock_rows",
    "main",
    "meta_json",
    "session_json",
]


class _Lazy:
    """A command's function, imported from its module when the command runs."""

    def __init__(self, module: str, function: str) -> None:
        self.module = f"{__name__}.{module}"
        self.function = function

    def __repr__(self) -> str:
        return f"<command {self.module}.{self.function}>"

    def resolve(self) -> Handler:
        """The function itself (imports its module)."""
        handler: Handler = getattr(import_module(self.module), self.function)
        return handler

    def __call__(self, args: argparse.Namespace) -> int:
        return self.resolve()(args)


#: Each command's function, by the command path the parser knows it by.
COMMANDS: Mapping[str, _Lazy] = {
    "sessions list": _Lazy("_sessions", "cmd_list"),
    "sessions node": _Lazy("_sessions", "cmd_node"),
    "sessions info": _Lazy("_sessions", "cmd_info"),
    "sessions create": _Lazy("_sessions", "cmd_create"),
    "sessions renew": _Lazy("_sessions", "cmd_renew"),
    "sessions destroy": _Lazy("_sessions", "cmd_destroy"),
    "locks": _Lazy("_locks", "cmd_locks"),
    "run": _Lazy("_run", "cmd_run"),
    "hold": _Lazy("_hold", "cmd_hold"),
    "elect": _Lazy("_run", "cmd_elect"),
    "leader": _Lazy("_leader", "cmd_leader"),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the ``locksmith`` argument parser, each command wired to its function."""
    return _build_parser(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``locksmith`` command line and return its exit status.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``, and the
            process exits right after: the console script and ``python -m locksmith``).
    """
    try:
        return _main(argv)
    finally:
        if argv is None:
            # The interpreter exits next. Its final garbage collection walks every object
            # the libraries made (~25 ms here); everything is closed and released by now,
            # so let it skip them and exit within milliseconds of the deadline or signal.
            gc.freeze()


def _main(argv: Sequence[str] | None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    head, tail = split_command(raw)
    parser = build_parser()
    if argv is None and "_ARGCOMPLETE" in os.environ:
        _complete(parser)
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
        err(f"{PROG}: error: a command is required (see '{PROG} --help')")
        return EXIT_USAGE

    return _dispatch(args, handler)


def _dispatch(args: argparse.Namespace, handler: Handler) -> int:
    """Run a parsed command: logging, context, and the error lines and exit codes."""
    import structlog  # noqa: PLC0415 - loaded only when a command runs

    from locksmith._cli._context import Context, set_ctx  # noqa: PLC0415
    from locksmith._cli._logging import (  # noqa: PLC0415
        Redactor,
        configure_logging,
        stdlib_logging,
    )

    verbose = int(getattr(args, "verbose", 0) or 0)
    quiet = bool(getattr(args, "quiet", False))
    redactor = Redactor()
    redactor.add(getattr(args, "token", None))
    redactor.add(os.environ.get("CONSUL_HTTP_TOKEN"))
    was_configured = structlog.is_configured()
    old_config = structlog.get_config()
    configure_logging(getattr(args, "log_format", "console"), verbose, quiet, redactor)
    set_ctx(Context(args=args, redactor=redactor, verbose=verbose, quiet=quiet))
    try:
        with stdlib_logging(getattr(args, "log_format", "console"), verbose, quiet, redactor):
            return int(handler(args))
    except KeyboardInterrupt:
        err(f"{PROG}: interrupted")
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
        set_ctx(None)
        if was_configured:
            structlog.configure(**old_config)
        else:
            structlog.reset_defaults()


def _complete(parser: argparse.ArgumentParser) -> None:
    """Answer a shell's completion request (argcomplete prints the candidates and exits).

    Only called when the shell's completion function set ``_ARGCOMPLETE``, so an ordinary
    run never imports argcomplete; without argcomplete installed, the command just runs.
    """
    try:
        import argcomplete  # noqa: PLC0415 - optional, and only while completing
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def _report(exc: BaseException, verbose: int, redactor: Redactor, prefix: str = "") -> None:
    if verbose:
        import traceback  # noqa: PLC0415 - only for -v

        err(redactor.text("".join(traceback.format_exception(exc))).rstrip())
    message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, ConsulError):
        message = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    one_line = " ".join(redactor.text(message).split())
    err(f"{PROG}: error: {prefix}{one_line}")

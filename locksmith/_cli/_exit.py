"""Exit codes of the ``locksmith`` command, the error that carries one, and their help text.

The lowest layer of the CLI package: it imports nothing from the other CLI modules. Codes
follow sysexits.h where one fits; ``run``/``elect`` return the child's own status instead
when the child ran, so these are locksmith's own outcomes. The three codes
:func:`locksmith.run_exclusive` returns as well are repeated here rather than imported, so
that ``--help`` loads nothing heavy (a test checks that both agree).
"""

from __future__ import annotations

from locksmith._exceptions import (
    BadRequest,
    ConfigurationError,
    ConsulUnavailable,
    LockConflict,
    LockLost,
    LockTimeout,
    PermissionDenied,
    ProtocolError,
    SessionNotFound,
    ValidationError,
)

__all__ = [
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
    "CLIError",
    "exit_code_for",
]

EXIT_OK = 0
EXIT_USAGE = 64  # EX_USAGE: bad command line (locksmith._child.EXIT_USAGE)
EXIT_NOT_ACQUIRED = 75  # EX_TEMPFAIL: --timeout passed (locksmith._child.EXIT_NOT_ACQUIRED)
EXIT_LOCK_LOST = 76  # the lock was lost (locksmith._child.EXIT_LOCK_LOST)
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
  0    success (run/elect: the child's own exit status instead; hold: released after a signal)
  1    unexpected error
  {EXIT_USAGE}   usage error: bad command line, option value out of range
  {EXIT_CONFLICT}   Consul rejected the request, or the key belongs to another lock recipe
  {EXIT_NOT_FOUND}   not found: no such session; leader: nobody leads
  {EXIT_UNAVAILABLE}   Consul unavailable: connection refused, timeout, no cluster leader, TLS
  {EXIT_PROTOCOL}   Consul answered something locksmith does not understand
  {EXIT_NOT_ACQUIRED}   run/elect/hold: --timeout passed before the lock was acquired
  {EXIT_LOCK_LOST}   lock lost: run/elect: while COMMAND ran (it was terminated); hold: while held
  {EXIT_NO_PERMISSION}   permission denied: the ACL token lacks a right, or is unknown
  {EXIT_CONFIG}   configuration error: bad address, unreadable token file, bad TLS files
  {EXIT_CANNOT_EXECUTE}  run/elect: COMMAND is not executable
  {EXIT_COMMAND_NOT_FOUND}  run/elect: COMMAND not found
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C) while waiting; leader --watch exits 0 instead
  128+N  run/elect/hold: signal N (SIGTERM, SIGHUP) while waiting
"""


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

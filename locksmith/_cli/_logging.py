"""The CLI's logging: structlog to stderr, and the redaction of the ACL token.

This is the only place where locksmith configures logging; the library itself never does.
:func:`configure_logging` sets structlog up for one command (level from ``-v``/``-q``,
console or JSON lines), :func:`stdlib_logging` routes third-party stdlib logging to stderr
for the command's duration, and :class:`Redactor` replaces the token in log events, log
records and error messages, also with ``-vv``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import structlog

__all__ = ["Redactor", "configure_logging", "status_event", "stdlib_logging"]


class Redactor:
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
    def __init__(self, redactor: Redactor) -> None:
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


#: The logger of :func:`status_event`, set by :func:`configure_logging` (key ``"logger"``).
_STATUS: dict[str, Any] = {}


def status_event(event: str, **fields: Any) -> None:
    """Log a status event (``run``'s waiting status) at info level, whatever ``-v`` says.

    The waiting status is shown by default, like its text form; ``-q`` turns it off where it
    is made, not here.
    """
    logger = _STATUS.get("logger")
    if logger is None:  # logging not configured by a command (a test calling directly)
        logger = structlog.get_logger("locksmith.cli")
    logger.info(event, **fields)


def configure_logging(fmt: str, verbose: int, quiet: bool, redactor: Redactor) -> None:
    """Configure structlog for one command: level, renderer, and the redactor."""
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
    processors = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redactor,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *a: _StderrLogger(),
        cache_logger_on_first_use=False,
    )
    _STATUS["logger"] = structlog.wrap_logger(
        _StderrLogger(),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


@contextlib.contextmanager
def stdlib_logging(level: int, redactor: Redactor) -> Iterator[None]:
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

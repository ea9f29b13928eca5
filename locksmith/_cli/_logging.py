"""The CLI's logging: structlog to stderr, and the redaction of the ACL token.

This is the only place where locksmith configures logging; the library itself never does.
:func:`configure_logging` sets structlog up for one command (level from ``-v``/``-q``,
console or JSON lines), :func:`stdlib_logging` renders stdlib records (the library's events,
which go through ``locksmith.*`` loggers, and third-party ones) the same way on stderr for the
command's duration, and :class:`Redactor` replaces the token in log events, log
records and error messages, also with ``-vv``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import structlog

__all__ = ["Redactor", "configure_logging", "log_level", "status_event", "stdlib_logging"]


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


def log_level(verbose: int, quiet: bool) -> int:
    """The level of a command's logging: ``-q`` errors only, ``-v`` info, ``-vv`` debug."""
    if quiet:
        return logging.ERROR
    if verbose >= 2:
        return logging.DEBUG
    if verbose == 1:
        return logging.INFO
    return logging.WARNING


def _processors(fmt: str, redactor: Redactor) -> tuple[list[Any], Any]:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    chain: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redactor,
    ]
    return chain, renderer


def configure_logging(fmt: str, verbose: int, quiet: bool, redactor: Redactor) -> None:
    """Configure structlog for one command: level, renderer, and the redactor."""
    chain, renderer = _processors(fmt, redactor)
    processors = [*chain, renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(log_level(verbose, quiet)),
        logger_factory=lambda *a: _StderrLogger(),
        cache_logger_on_first_use=False,
    )
    _STATUS["logger"] = structlog.wrap_logger(
        _StderrLogger(),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler on whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@contextlib.contextmanager
def stdlib_logging(fmt: str, verbose: int, quiet: bool, redactor: Redactor) -> Iterator[None]:
    """Render stdlib logging on stderr like the CLI's own events, for the command's duration.

    The library logs through the stdlib tree (``locksmith.*``) in structlog's record shape;
    :class:`structlog.stdlib.ProcessorFormatter` renders those records' event dicts, and any
    third-party record, with the same processors (console or JSON lines, redacted) as the
    CLI's own events. Third-party libraries speak from ``-vv`` only.
    """
    level = log_level(verbose, quiet)
    chain, renderer = _processors(fmt, redactor)
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *chain,
            structlog.processors.format_exc_info,
            redactor,  # again: a traceback's text can name the token too
            renderer,
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    handler.setLevel(level)
    root = logging.getLogger()
    ours = logging.getLogger("locksmith")
    saved = (root.level, ours.level)
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING) if verbose < 2 else level)
    ours.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])

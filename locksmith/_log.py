"""How locksmith logs: structlog-shaped events, each once, through the stdlib ``logging`` tree.

A library is quiet unless its application asks. Every event goes to a stdlib logger under
``locksmith`` (``locksmith.manager``, ``locksmith.election``, ...), which has a
:class:`logging.NullHandler`: a program that configures nothing sees nothing, also on stdout.
locksmith never configures structlog (it does not even import it: its records are made here).

What an application gets:

* plain ``logging`` (``logging.basicConfig(level=logging.INFO)``): one line per event, the
  event name followed by ``key=value`` pairs (``lock.acquired key=jobs/a session_id=...``);
* structlog's stdlib integration (:class:`structlog.stdlib.ProcessorFormatter` on a handler):
  the event dict itself, rendered by the application's processors (JSON, console, ...),
  with ``key``/``session_id`` as fields. Each record carries the event dict as its message and
  the ``_logger``/``_name`` attributes that mark it as a structlog event, exactly what
  ``structlog.stdlib.ProcessorFormatter.wrap_for_formatter`` produces.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["EventLogger", "get_logger"]

logging.getLogger("locksmith").addHandler(logging.NullHandler())


class _Event(dict[str, Any]):
    """An event dict that reads as ``event key=value ...`` when stdlib formats it."""

    def __str__(self) -> str:
        fields = " ".join(
            f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}"
            for k, v in self.items()
            if k not in ("event", "exc_info")
        )
        event = str(self.get("event", ""))
        return f"{event} {fields}" if fields else event


class EventLogger:
    """A structlog-style logger (``log.info("event", key=...)``) over a stdlib logger.

    Events below the stdlib logger's effective level cost one level check.
    """

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        exc_info = fields.get("exc_info")
        record = _Event(fields)
        record["event"] = event
        logger.log(
            level,
            record,
            exc_info=exc_info,
            extra={"_logger": logger, "_name": method},
            stacklevel=3,
        )

    def log(self, level: int, event: str, **fields: Any) -> None:
        """Emit ``event`` at ``level``."""
        self._emit(level, logging.getLevelName(level).lower(), event, fields)

    def debug(self, event: str, **fields: Any) -> None:
        """Emit ``event`` at DEBUG."""
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Emit ``event`` at INFO."""
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Emit ``event`` at WARNING."""
        self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Emit ``event`` at ERROR."""
        self._emit(logging.ERROR, "error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Emit ``event`` at ERROR with the exception being handled."""
        fields.setdefault("exc_info", sys.exc_info())
        self._emit(logging.ERROR, "error", event, fields)


def get_logger(name: str) -> EventLogger:
    """An event logger on the stdlib logger ``name`` (``locksmith.*``)."""
    return EventLogger(logging.getLogger(name))

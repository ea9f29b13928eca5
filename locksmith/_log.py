"""How locksmith logs: structlog events, each once, through the stdlib ``logging`` tree.

A library is quiet unless its application asks. Every event goes to a stdlib logger under
``locksmith`` (``locksmith.manager``, ``locksmith.election``, ...), which has a
:class:`logging.NullHandler`: a program that configures nothing sees nothing, also on stdout.
locksmith never calls ``structlog.configure()``; its loggers carry their own processors.

What an application gets:

* plain ``logging`` (``logging.basicConfig(level=logging.INFO)``): one line per event, the
  event name followed by ``key=value`` pairs (``lock.acquired key=jobs/a session_id=...``);
* structlog's stdlib integration (:class:`structlog.stdlib.ProcessorFormatter` on a handler):
  the event dict itself, rendered by the application's processors (JSON, console, ...),
  with ``key``/``session_id`` as fields.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["get_logger"]

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


def _to_stdlib(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The last processor: hand the event to the stdlib logger.

    The record's message is the event dict (what structlog's ``ProcessorFormatter``
    expects, marked as structlog's own with ``_logger``/``_name``) and it prints as
    ``event key=value`` for any other formatter; an exception travels as ``exc_info``.
    """
    kwargs: dict[str, Any] = {"extra": {"_logger": logger, "_name": method_name}}
    exc_info = event_dict.get("exc_info")
    if exc_info:
        kwargs["exc_info"] = exc_info
    return (_Event(event_dict),), kwargs


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger on the stdlib logger ``name`` (``locksmith.*``).

    Events below the stdlib logger's level cost one level check and are dropped there.
    """
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=[structlog.stdlib.filter_by_level, _to_stdlib],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return logger

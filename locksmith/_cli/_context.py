"""What the commands share while one ``locksmith`` invocation runs.

:func:`main` stores a :class:`Context` (the parsed arguments, the token redactor, the
verbosity) for the running thread; commands get the Consul client from it, built from the
global options with Consul's environment variables as fallback, its address's host checked
(an unparseable address is a configuration error, exit 78). :func:`read_kwargs` turns
the read options (``--index``, ``--wait``, ``--stale``/``--consistent``) into the client's
keyword arguments.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

import structlog

from locksmith._cli._exit import CLIError
from locksmith._cli._logging import Redactor
from locksmith._client import Consul
from locksmith._exceptions import ConfigurationError
from locksmith._validate import Consistency

__all__ = ["Context", "ctx", "read_kwargs", "set_ctx"]

log = structlog.get_logger(__name__)


@dataclass
class Context:
    """The client settings and output choices of the running command."""

    args: argparse.Namespace
    redactor: Redactor
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
        try:
            _check_host(client.config.host, getattr(a, "address", None))
        except ConfigurationError:
            client.close()
            raise
        log.debug("cli.consul", address=client.config.url, dc=client.config.datacenter)
        return client


#: A DNS name: labels of letters, digits, '-' and '_' (compose service names), dot-separated.
_HOST_NAME = re.compile(r"\w[\w-]*(?:\.\w[\w-]*)*\.?")


def _check_host(host: str, option: str | None) -> None:
    """Refuse a Consul address whose host is neither an IP address nor a DNS name.

    The connection settings split ``host:port`` at the last colon and accept any host, so
    ``nonsense:::1`` became host ``nonsense::`` and failed later as a DNS error (exit 69,
    "unavailable") instead of the configuration error it is (exit 78).
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return
    if ":" not in host and _HOST_NAME.fullmatch(host):
        return
    given = (
        f"--address {option!r}"
        if option is not None
        else f"CONSUL_HTTP_ADDR {os.environ.get('CONSUL_HTTP_ADDR', '')!r}"
    )
    hint = " (write an IPv6 address in brackets, e.g. [::1]:8500)" if ":" in host else ""
    raise ConfigurationError(
        f"address: cannot parse {given}: {host!r} is neither a host name nor an IP address{hint}"
    )


_CTX: threading.local = threading.local()


def set_ctx(value: Context | None) -> None:
    """Set (or, with None, clear) the running thread's context."""
    _CTX.value = value


def ctx() -> Context:
    """The running thread's context (set by ``main``)."""
    value: Context = _CTX.value
    return value


def read_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The client keyword arguments of the read options."""
    consistency: Consistency = args.consistency
    kw: dict[str, Any] = {"consistency": consistency}
    if getattr(args, "index", None) is not None:
        kw["index"] = args.index
        if args.wait is not None:
            kw["wait"] = args.wait
    elif getattr(args, "wait", None) is not None:
        raise CLIError("--wait needs --index (it is the longest a blocking query waits)", 64)
    return kw

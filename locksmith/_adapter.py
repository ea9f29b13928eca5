"""python-consul2 on locksmith's transport: the only module of locksmith that imports ``consul``.

It is imported on first access to :attr:`Consul.consul2 <locksmith.Consul.consul2>`, the
escape hatch to python-consul2's endpoint wrappers, so that ``import locksmith`` loads
neither python-consul2 nor the ``requests``/``urllib3`` stack it imports.

python-consul2's seam: a subclass of ``consul.base.Consul`` chooses its HTTP client in
``http_connect``, and every request goes through that client's
``get/put/delete/post(callback, path, params, data, headers)``. Here that client delegates
to a :class:`~locksmith._transport.Transport`, so the wrappers share locksmith's
connections, timeouts, TLS settings and error mapping.

python-consul2's defects are kept out: its constructor reads the environment over explicit
arguments (locksmith's resolved :class:`ConnectionConfig` is applied after it), warns with
``DeprecationWarning`` on every construction (silenced here, under a lock, so that pytest's
``filterwarnings = error`` keeps working), and its legacy-ACL wrappers put the token in the
URL (moved to the header here).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import consul.base

from locksmith._config import ConnectionConfig
from locksmith._transport import RawResponse, Transport

__all__ = ["make_consul2"]

# python-consul2's constructor warns (DeprecationWarning) and catch_warnings() swaps the
# process-wide filter list: serialise locksmith's own constructions so that two threads
# never restore each other's filters.
_CONSTRUCT_LOCK = threading.Lock()


class _Headers(Mapping[str, str]):
    """Case-insensitive header mapping, as python-consul2's callbacks expect from requests."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._h = {k.lower(): v for k, v in headers.items()}

    def __getitem__(self, key: str) -> str:
        return self._h[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._h)

    def __len__(self) -> int:
        return len(self._h)


class _HTTPClient(consul.base.HTTPClient):  # type: ignore[misc]
    """python-consul2's HTTP client interface, delegating every request to a Transport."""

    def __init__(self, transport: Transport) -> None:
        config = transport.config
        super().__init__(config.host, config.port, config.scheme, config.verify, None, None)
        self.transport = transport

    def _send(self, method: str, path: str, params: Any, data: Any, headers: Any) -> Any:
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params or ())
        # The legacy-ACL wrappers put the token in the query string; URLs end up in logs and
        # proxies, so a token parameter travels in the header instead.
        token = next((str(v) for k, v in pairs if k == "token" and v), None)
        pairs = [(str(k), str(v)) for k, v in pairs if k != "token"]
        extra = {"X-Consul-Token": token} if token else {}
        extra.update(headers or {})  # a wrapper's own headers win, as before the move
        resp: RawResponse = self.transport.request(
            method, path, params=pairs, body=data, headers=extra
        )
        return consul.base.Response(resp.status, _Headers(resp.headers), resp.text, resp.body)

    def get(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        headers: Any = None,
    ) -> Any:
        """GET for python-consul2's endpoint wrappers."""
        return callback(self._send("GET", path, params, None, headers))

    def put(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        data: Any = "",
        headers: Any = None,
    ) -> Any:
        """PUT for python-consul2's endpoint wrappers."""
        return callback(self._send("PUT", path, params, data, headers))

    def delete(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        data: Any = "",
        headers: Any = None,
    ) -> Any:
        """DELETE for python-consul2's endpoint wrappers."""
        return callback(self._send("DELETE", path, params, data, headers))

    def post(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        data: Any = "",
        headers: Any = None,
    ) -> Any:
        """POST for python-consul2's endpoint wrappers."""
        return callback(self._send("POST", path, params, data, headers))


class _Consul2(consul.base.Consul):  # type: ignore[misc]
    """python-consul2's client with locksmith's transport plugged into its seam."""

    @staticmethod
    def http_connect(
        host: Any,
        port: Any,
        scheme: Any,
        verify: Any = True,
        cert: Any = None,
        *,
        locksmith_transport: Transport,
    ) -> _HTTPClient:
        # python-consul2 passes what it derived (the environment over the arguments);
        # locksmith ignores that and uses its transport, on the resolved configuration.
        del host, port, scheme, verify, cert
        return _HTTPClient(locksmith_transport)


def make_consul2(transport: Transport) -> Any:
    """Construct python-consul2's client on ``transport`` and its settings.

    Args:
        transport: The transport (and resolved settings) every request goes through.

    Returns:
        A ``consul.base.Consul`` whose wrappers send their requests through ``transport``.
    """
    config: ConnectionConfig = transport.config
    with _CONSTRUCT_LOCK, warnings.catch_warnings():
        # python-consul2 warns about its legacy-ACL and discovery-chain wrappers on every
        # construction; those warnings are about its code, not the caller's.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            client = _Consul2(dc=config.datacenter, locksmith_transport=transport)
        except consul.base.ConsulException:
            # Its own parse of $CONSUL_HTTP_ADDR failed (e.g. an IPv6 address) although
            # locksmith's configuration is fine: build it without its constructor.
            client = _Consul2.__new__(_Consul2)
            client.http = _HTTPClient(transport)
            client.consistency = "default"
            for attr, cls in (
                ("agent", consul.base.Consul.Agent),
                ("catalog", consul.base.Consul.Catalog),
                ("health", consul.base.Consul.Health),
                ("kv", consul.base.Consul.KV),
                ("session", consul.base.Consul.Session),
                ("status", consul.base.Consul.Status),
                ("txn", consul.base.Consul.Txn),
            ):
                setattr(client, attr, cls(client))
    # python-consul2 let the environment override these; the resolved settings win.
    client.token = config.token
    client.dc = config.datacenter
    client.scheme = config.scheme
    return client

"""The one exception tree of locksmith.

Every error locksmith raises derives from :class:`LocksmithError`. Foreign errors
(``OSError``, ``ssl.SSLError``, python-consul2's exceptions, JSON decode errors) are
converted at the transport boundary with ``raise ... from exc``, so callers never have
to catch anything else::

    LocksmithError
    ├── ConfigurationError            bad argument or environment, raised before any request
    │   └── ValidationError           one field out of range (names the field and the range)
    ├── ConsulError                   Consul answered, but not with success (status, body)
    │   ├── BadRequest                400: Consul rejected the request
    │   ├── PermissionDenied          403: the token lacks a permission (names operation, resource)
    │   │   └── ACLNotFound           403 "ACL not found": unknown or expired token
    │   ├── SessionNotFound           the session does not exist (renew 404, "invalid session")
    │   └── ConsulUnavailable         connection failed, timed out, TLS failed, or 5xx such as
    │       │                         "No cluster leader": worth retrying
    │       └── TLSError              certificate untrusted or mismatched, client cert refused
    ├── ProtocolError                 Consul answered with something that is not what it documents
    └── LockError                     lock-level failures
        ├── LockTimeout               acquire's deadline passed
        ├── Cancelled                 a blocking call was cancelled (its Cancel was set)
        ├── LockLost                  the lease is gone (a fenced write refused, a release too late)
        ├── LockConflict              the key is used by another lock recipe (foreign flags)
        ├── NotHeld                   release of a lock this object does not hold
        └── ManagerClosed             the LockManager was closed

The ACL token never appears in any message: errors carry the operation and the resource
(key or session), never request headers.
"""

from __future__ import annotations

__all__ = [
    "ACLNotFound",
    "BadRequest",
    "Cancelled",
    "ConfigurationError",
    "ConsulError",
    "ConsulUnavailable",
    "LockConflict",
    "LockError",
    "LockLost",
    "LockTimeout",
    "LocksmithError",
    "ManagerClosed",
    "NotHeld",
    "PermissionDenied",
    "ProtocolError",
    "SessionNotFound",
    "TLSError",
    "ValidationError",
]


class LocksmithError(Exception):
    """Base class of every error raised by locksmith."""


class ConfigurationError(LocksmithError):
    """A bad argument or environment setting, detected before any request."""


class ValidationError(ConfigurationError, ValueError):
    """One field is out of range or malformed.

    Attributes:
        field: The name of the offending field or argument.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ConsulError(LocksmithError):
    """Consul answered, but not with success.

    Attributes:
        status: The HTTP status code (0 when no response was received).
        body: The response body as text (may be empty).
        operation: What locksmith was doing, e.g. ``"session.renew"``.
        resource: The key, session ID or path concerned, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        body: str = "",
        operation: str = "",
        resource: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.operation = operation
        self.resource = resource


class BadRequest(ConsulError):  # noqa: N818 - public name
    """Consul rejected the request as malformed (HTTP 400, or a 500 naming bad input)."""


class PermissionDenied(ConsulError):  # noqa: N818 - public name
    """The ACL token lacks a permission needed for the operation (HTTP 403)."""


class ACLNotFound(PermissionDenied):
    """Consul does not know the ACL token (unknown, deleted or expired)."""


class SessionNotFound(ConsulError):  # noqa: N818 - public name
    """The session does not exist (destroyed, expired, or never created)."""


class ConsulUnavailable(ConsulError):  # noqa: N818 - public name
    """Consul could not be reached or could not serve the request right now.

    Raised for refused or reset connections, timeouts, and 5xx answers such as
    ``No cluster leader``. These are the errors worth retrying.
    """


class TLSError(ConsulUnavailable):
    """The TLS handshake failed: untrusted or mismatched certificate, or client cert refused."""


class ProtocolError(LocksmithError):
    """Consul's answer did not have the documented shape."""


class LockError(LocksmithError):
    """Base class of lock-level failures."""


class LockTimeout(LockError, TimeoutError):  # noqa: N818 - public name
    """The acquire deadline passed before the lock could be taken."""


class LockLost(LockError):  # noqa: N818 - public name
    """The lease is no longer valid (lost or presumed lost)."""


class LockConflict(LockError):  # noqa: N818 - public name
    """The key is held in a layout or by a recipe this lock cannot share (e.g. foreign flags)."""


class NotHeld(LockError):  # noqa: N818 - public name
    """The lock is not held by this object."""


class ManagerClosed(LockError):  # noqa: N818 - public name
    """The LockManager was closed."""


class Cancelled(LockError):  # noqa: N818 - public name
    """A blocking call (acquire, campaign, a semaphore slot) was cancelled with its
    :class:`~locksmith.Cancel`; whatever it had taken is given back."""

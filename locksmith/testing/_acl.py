"""A dev agent with ACLs enabled (default deny) and helpers to make policies and tokens.

Used by the ``consul_acl_agent`` / ``make_acl_token`` fixtures of the pytest plugin, and
usable on its own so that locksmith's users can test their own ACL policies.
"""

from __future__ import annotations

import itertools
import json
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

from ._agent import ConsulAgent

__all__ = ["ACLConsulAgent", "ACLError", "ACLToken"]


class ACLError(RuntimeError):
    """The ACL API refused a request of the test harness (status and Consul's text)."""


@dataclass(frozen=True)
class ACLToken:
    """A token made by :meth:`ACLConsulAgent.make_token`.

    Attributes:
        secret_id: The secret (what clients send); kept out of ``repr``.
        accessor_id: The public ID Consul uses to manage the token.
        policy_id: The policy made for it ("" when it has none).
    """

    secret_id: str
    accessor_id: str
    policy_id: str

    def __repr__(self) -> str:
        return f"ACLToken(accessor_id={self.accessor_id!r}, policy_id={self.policy_id!r})"


class ACLConsulAgent(ConsulAgent):
    """A dev agent with ACLs enabled (``default_policy = "deny"``) and helpers to make tokens.

    Policies and tokens are made through Consul's ACL API with the master token, so a test
    can check exactly the policy it documents.

    Args:
        acl_master_token: The master (bootstrap) token; a random UUID by default.
        **kwargs: Further :class:`ConsulAgent` arguments.

    Example:
        ``secret = agent.make_token('key_prefix "app/" { policy = "write" }')``
    """

    def __init__(self, *, acl_master_token: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("node_name", "locksmith-acl")
        master = acl_master_token or str(uuid.uuid4())
        super().__init__(acl_master_token=master, **kwargs)
        self._master = master
        self._tokens: dict[str, ACLToken] = {}
        self._tokens_lock = threading.Lock()
        self._counter = itertools.count(1)

    @property
    def master_token(self) -> str:
        """The master token (never None for this agent)."""
        return self._master

    def acl_request(self, method: str, path: str, body: Any = None) -> Any:
        """Send an API request with the master token and return the decoded JSON answer.

        Raises:
            ACLError: Consul answered with an error status.
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - our own loopback URL
            f"{self.http_url}{path}",
            data=data,
            method=method,
            headers={"X-Consul-Token": self.master_token},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read().decode("utf-8", "replace")
            raise ACLError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        return json.loads(text) if text.strip() else None

    def make_policy(self, rules: str, *, name: str | None = None) -> str:
        """Create a policy from HCL (or JSON) rules and return its ID."""
        name = (
            name or f"locksmith-test-{self.node_name}-{next(self._counter)}-{uuid.uuid4().hex[:8]}"
        )
        answer = self.acl_request("PUT", "/v1/acl/policy", {"Name": name, "Rules": rules})
        return str(answer["ID"])

    def make_token_info(self, rules: str | None = None, *, description: str = "") -> ACLToken:
        """Create a token with a new policy of ``rules`` (none: a token with no rights)."""
        policy_id = self.make_policy(rules) if rules is not None else ""
        body: dict[str, Any] = {"Description": description or "locksmith test token"}
        if policy_id:
            body["Policies"] = [{"ID": policy_id}]
        answer = self.acl_request("PUT", "/v1/acl/token", body)
        token = ACLToken(str(answer["SecretID"]), str(answer["AccessorID"]), policy_id)
        with self._tokens_lock:
            self._tokens[token.secret_id] = token
        return token

    def make_token(self, rules: str | None = None, *, description: str = "") -> str:
        """Create a token whose only policy is ``rules`` (HCL); return its secret."""
        return self.make_token_info(rules, description=description).secret_id

    def delete_token(self, secret: str) -> None:
        """Delete a token made by :meth:`make_token` (and its policy)."""
        with self._tokens_lock:
            token = self._tokens.pop(secret, None)
        if token is None:
            return
        self.acl_request("DELETE", f"/v1/acl/token/{token.accessor_id}")
        if token.policy_id:
            self.acl_request("DELETE", f"/v1/acl/policy/{token.policy_id}")

    def delete_tokens(self) -> None:
        """Delete every token (and policy) made by this object that still exists."""
        with self._tokens_lock:
            secrets = list(self._tokens)
        for secret in secrets:
            self.delete_token(secret)

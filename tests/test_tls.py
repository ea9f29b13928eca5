"""HTTPS against a real agent that requires client certificates (``verify_incoming``).

The agent is the plugin's ``consul_tls_agent``; its certificates come from ``consul tls ca
create`` / ``consul tls cert create``, like a production setup made the documented way. The
server certificate names ``server.dc1.consul``, ``localhost`` and ``127.0.0.1``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from support import unique

from locksmith import Consul, LockManager, TLSError
from locksmith._exceptions import BadRequest, ConfigurationError
from locksmith.testing.plugin import TLSConsulAgent, TLSMaterial, make_tls_material

TLS_ENV = (
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_HTTP_TOKEN_FILE",
    "CONSUL_HTTP_SSL",
    "CONSUL_HTTP_SSL_VERIFY",
    "CONSUL_CACERT",
    "CONSUL_CAPATH",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
    "CONSUL_TLS_SERVER_NAME",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TLS_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    """A second CA (and certificates) the agent knows nothing about."""
    return make_tls_material(tmp_path_factory.mktemp("other-ca"))


def _mtls(agent: TLSConsulAgent, **kwargs: object) -> Consul:
    base: dict[str, object] = {
        "ca_file": agent.ca_file,
        "client_cert": agent.client_cert,
        "client_key": agent.client_key,
        "timeout": 10.0,
    }
    base.update(kwargs)
    return Consul(agent.https_url, **base)  # type: ignore[arg-type]


def _leftovers(agent: TLSConsulAgent, prefix: str) -> tuple[list[str], list[str]]:
    """Sessions and keys under ``prefix`` as seen over the agent's plain HTTP port."""
    with Consul(agent.http_addr) as plain:
        sessions = [s.id for s in plain.sessions.list() if s.name.startswith(prefix)]
        keys = [e.key for e in plain.kv.list(prefix)]
    return sessions, keys


def test_server_certificate_names(consul_tls_agent: TLSConsulAgent) -> None:
    """What `consul tls cert create -server` puts in the certificate (and clients verify)."""
    der = ssl.PEM_cert_to_DER_cert(Path(consul_tls_agent.tls.server_cert).read_text())
    assert b"server.dc1.consul" in der
    assert b"localhost" in der
    assert consul_tls_agent.server_name == "server.dc1.consul"


def test_lock_cycle_over_mutual_tls(consul_tls_agent: TLSConsulAgent) -> None:
    prefix = unique("tls")
    with _mtls(consul_tls_agent) as consul:
        assert consul.config.scheme == "https"
        assert consul.config.verify is True  # on by default
        with LockManager(consul, ttl="10s", name=prefix) as mgr:
            lock = mgr.lock(f"{prefix}/job", b"worker-1")
            lease = lock.acquire(timeout=10)
            assert lease is not None and lease.fencing_token > 0
            sid = mgr.current_session_id
            assert sid is not None
            renewed = consul.sessions.renew(sid)
            assert renewed.id == sid
            entry = consul.kv.get(f"{prefix}/job")
            assert entry is not None and entry.session == sid and entry.value == b"worker-1"
            assert lock.release() is True
        assert consul.open_connections >= 1
    assert _leftovers(consul_tls_agent, prefix) == ([], [f"{prefix}/job"])
    with Consul(consul_tls_agent.http_addr) as plain:
        entry = plain.kv.get(f"{prefix}/job")
        assert entry is not None and entry.session is None
        plain.kv.delete(prefix, recurse=True)


def test_ca_directory_like_consul_reads_it(consul_tls_agent: TLSConsulAgent) -> None:
    """CONSUL_CAPATH: a directory of PEM files, not hashed names (Consul reads every file)."""
    ca_dir = Path(consul_tls_agent.ca_path)
    assert [p.name for p in ca_dir.iterdir()] == ["consul-agent-ca.pem"]
    with _mtls(consul_tls_agent, ca_file=None, ca_path=str(ca_dir)) as consul:
        assert consul.leader()


def test_settings_from_the_environment(
    consul_tls_agent: TLSConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = consul_tls_agent
    monkeypatch.setenv("CONSUL_HTTP_ADDR", str(agent.https_addr))  # no scheme in the address
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    monkeypatch.setenv("CONSUL_CACERT", agent.ca_file)
    monkeypatch.setenv("CONSUL_CLIENT_CERT", agent.client_cert)
    monkeypatch.setenv("CONSUL_CLIENT_KEY", agent.client_key)
    monkeypatch.setenv("CONSUL_TLS_SERVER_NAME", agent.server_name)
    with Consul() as consul:
        cfg = consul.config
        assert (cfg.scheme, cfg.tls_server_name, cfg.verify) == ("https", "server.dc1.consul", True)
        assert consul.leader()
        with LockManager(consul, ttl="10s") as mgr:
            key = unique("tls-env")
            assert mgr.lock(key).acquire(timeout=10) is not None
        consul.kv.delete(key)
    monkeypatch.delenv("CONSUL_CACERT")
    monkeypatch.setenv("CONSUL_CAPATH", agent.ca_path)
    with Consul() as consul:
        assert consul.config.ca_path == agent.ca_path
        assert consul.leader()


def test_server_name_mismatch(consul_tls_agent: TLSConsulAgent) -> None:
    with (
        _mtls(consul_tls_agent, tls_server_name="client.dc2.consul") as consul,
        pytest.raises(TLSError) as info,
    ):
        consul.leader()
    text = str(info.value)
    assert "does not match the name 'client.dc2.consul'" in text
    assert "CONSUL_TLS_SERVER_NAME" in text


def test_localhost_name_verifies(consul_tls_agent: TLSConsulAgent) -> None:
    port = consul_tls_agent.https_addr.rsplit(":", 1)[1]  # type: ignore[union-attr]
    with Consul(
        f"https://localhost:{port}",
        ca_file=consul_tls_agent.ca_file,
        client_cert=consul_tls_agent.client_cert,
        client_key=consul_tls_agent.client_key,
    ) as consul:
        assert consul.leader()


def test_without_client_certificate(consul_tls_agent: TLSConsulAgent) -> None:
    prefix = unique("tls-nocert")
    with Consul(consul_tls_agent.https_url, ca_file=consul_tls_agent.ca_file) as consul:
        with pytest.raises(TLSError) as info:
            consul.leader()
        text = str(info.value)
        assert "refused the client certificate" in text or "requires a client cert" in text
        assert "no client certificate was given" in text
        assert "CONSUL_CLIENT_CERT" in text
        with LockManager(consul, ttl="10s", name=prefix) as mgr:
            with pytest.raises(TLSError):
                mgr.lock(f"{prefix}/k").acquire(blocking=False)
            # A blocking acquire does not wait out its deadline: certificates do not heal.
            with pytest.raises(TLSError, match="no client certificate"):
                mgr.lock(f"{prefix}/k").acquire(timeout=30)
    assert _leftovers(consul_tls_agent, prefix) == ([], [])


def test_untrusted_server_certificate(
    consul_tls_agent: TLSConsulAgent, other_ca: TLSMaterial
) -> None:
    for kwargs in ({"ca_file": str(other_ca.ca_file)}, {"ca_file": None}):
        with _mtls(consul_tls_agent, **kwargs) as consul, pytest.raises(TLSError) as info:
            consul.leader()
        text = str(info.value)
        assert "server certificate is not trusted" in text
        assert "CONSUL_CACERT" in text


def test_client_certificate_from_another_ca(
    consul_tls_agent: TLSConsulAgent, other_ca: TLSMaterial
) -> None:
    with (
        _mtls(
            consul_tls_agent,
            client_cert=str(other_ca.client_cert),
            client_key=str(other_ca.client_key),
        ) as consul,
        pytest.raises(TLSError) as info,
    ):
        consul.leader()
    assert str(other_ca.client_cert) in str(info.value)
    assert "signed by a CA it trusts" in str(info.value)


def test_verification_can_be_switched_off(
    consul_tls_agent: TLSConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_SSL_VERIFY", "false")
    with _mtls(consul_tls_agent, ca_file=None) as consul:
        assert consul.config.verify is False
        assert consul.leader()
    with _mtls(consul_tls_agent, ca_file=None, verify=True) as strict, pytest.raises(TLSError):
        strict.leader()  # the explicit argument wins over the environment


def test_wrong_scheme_either_way(consul_tls_agent: TLSConsulAgent) -> None:
    with Consul(f"http://{consul_tls_agent.https_addr}") as plain, pytest.raises(BadRequest) as bad:
        plain.leader()
    assert "serves HTTPS" in str(bad.value)
    with (
        Consul(f"https://{consul_tls_agent.http_addr}", ca_file=consul_tls_agent.ca_file) as tls,
        pytest.raises(TLSError, match="does not speak TLS"),
    ):
        tls.leader()


def test_ca_path_without_certificates(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("no certificates here\n")
    with (
        Consul("https://127.0.0.1:1", ca_path=str(tmp_path)) as consul,
        pytest.raises(ConfigurationError, match="holds no PEM certificate"),
    ):
        consul.leader()
    assert consul.open_connections == 0

"""Connection settings: explicit arguments win over Consul's environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from locksmith._config import ConnectionConfig
from locksmith._exceptions import ConfigurationError

SECRET = "0d4e5a2c-5b0e-4c4b-9d62-secret-token"

FULL_ENV = {
    "CONSUL_HTTP_ADDR": "https://env-host:9501",
    "CONSUL_HTTP_TOKEN": "env-token",
    "CONSUL_CACERT": "/env/ca.pem",
    "CONSUL_CAPATH": "/env/cadir",
    "CONSUL_CLIENT_CERT": "/env/cert.pem",
    "CONSUL_CLIENT_KEY": "/env/key.pem",
    "CONSUL_HTTP_SSL": "true",
    "CONSUL_HTTP_SSL_VERIFY": "false",
    "CONSUL_TLS_SERVER_NAME": "env.consul",
}


def test_defaults_without_environment() -> None:
    cfg = ConnectionConfig.resolve(env={})
    assert (cfg.scheme, cfg.host, cfg.port) == ("http", "127.0.0.1", 8500)
    assert cfg.token is None
    assert cfg.verify is True
    assert cfg.datacenter is None
    assert cfg.ca_file is cfg.ca_path is cfg.client_cert is cfg.client_key is None
    assert cfg.tls_server_name is None
    assert cfg.timeout == 10.0
    assert cfg.url == "http://127.0.0.1:8500"


def test_environment_is_the_fallback() -> None:
    cfg = ConnectionConfig.resolve(env=FULL_ENV)
    assert (cfg.scheme, cfg.host, cfg.port) == ("https", "env-host", 9501)
    assert cfg.token == "env-token"
    assert cfg.ca_file == "/env/ca.pem"
    assert cfg.ca_path == "/env/cadir"
    assert cfg.client_cert == "/env/cert.pem"
    assert cfg.client_key == "/env/key.pem"
    assert cfg.verify is False
    assert cfg.tls_server_name == "env.consul"


def test_explicit_arguments_win_over_environment() -> None:
    cfg = ConnectionConfig.resolve(
        "arg-host:8600",
        token="arg-token",
        datacenter="dc2",
        scheme="http",
        ca_file="/arg/ca.pem",
        ca_path="/arg/cadir",
        client_cert="/arg/cert.pem",
        client_key="/arg/key.pem",
        verify=True,
        tls_server_name="arg.consul",
        timeout=3,
        env=FULL_ENV,
    )
    assert (cfg.scheme, cfg.host, cfg.port) == ("http", "arg-host", 8600)
    assert cfg.token == "arg-token"
    assert cfg.datacenter == "dc2"
    assert cfg.ca_file == "/arg/ca.pem"
    assert cfg.ca_path == "/arg/cadir"
    assert cfg.client_cert == "/arg/cert.pem"
    assert cfg.client_key == "/arg/key.pem"
    assert cfg.verify is True
    assert cfg.tls_server_name == "arg.consul"
    assert cfg.timeout == 3.0


def test_explicit_address_does_not_take_the_env_address_scheme() -> None:
    cfg = ConnectionConfig.resolve("127.0.0.1:8500", env={"CONSUL_HTTP_ADDR": "https://x:1"})
    assert cfg.url == "http://127.0.0.1:8500"


def test_consul_http_ssl_sets_https_for_a_bare_address() -> None:
    cfg = ConnectionConfig.resolve("h:8501", env={"CONSUL_HTTP_SSL": "1"})
    assert cfg.scheme == "https"
    assert ConnectionConfig.resolve("h:8501", env={"CONSUL_HTTP_SSL": "false"}).scheme == "http"


def test_address_scheme_wins_over_consul_http_ssl() -> None:
    cfg = ConnectionConfig.resolve("http://h:8500", env={"CONSUL_HTTP_SSL": "true"})
    assert cfg.scheme == "http"


def test_explicit_empty_token_suppresses_the_environment_token() -> None:
    cfg = ConnectionConfig.resolve(token="", env={"CONSUL_HTTP_TOKEN": "env-token"})
    assert not cfg.token


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("consul.local:8500", ("http", "consul.local", 8500)),
        ("consul.local", ("http", "consul.local", 8500)),
        ("http://10.0.0.1:1234", ("http", "10.0.0.1", 1234)),
        ("https://10.0.0.1", ("https", "10.0.0.1", 443)),
        ("HTTPS://h:1", ("https", "h", 1)),
        ("[::1]:8500", ("http", "::1", 8500)),
        ("http://[::1]:8500", ("http", "::1", 8500)),
    ],
)
def test_address_forms(raw: str, expected: tuple[str, str, int]) -> None:
    cfg = ConnectionConfig.resolve(raw, env={})
    assert (cfg.scheme, cfg.host, cfg.port) == expected


def test_ipv6_address_property() -> None:
    cfg = ConnectionConfig.resolve("[::1]:8500", env={})
    assert cfg.address == "[::1]:8500"
    assert cfg.url == "http://[::1]:8500"


@pytest.mark.parametrize(
    "raw", ["ftp://h:1", "h:notaport", "h:0", "h:70000", ":8500", "unix:///tmp/consul.sock"]
)
def test_bad_addresses(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="address"):
        ConnectionConfig.resolve(raw, env={})


def test_bad_address_in_environment() -> None:
    with pytest.raises(ConfigurationError, match="address"):
        ConnectionConfig.resolve(env={"CONSUL_HTTP_ADDR": "h:bad"})


def test_bad_scheme() -> None:
    with pytest.raises(ConfigurationError, match="scheme"):
        ConnectionConfig.resolve(scheme="ftp", env={})


@pytest.mark.parametrize("name", ["CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY"])
def test_bad_boolean_environment(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        ConnectionConfig.resolve(env={name: "maybe"})


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True])
def test_bad_timeout(timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        ConnectionConfig.resolve(timeout=timeout, env={})


def test_client_key_without_certificate() -> None:
    with pytest.raises(ConfigurationError, match="client_key"):
        ConnectionConfig.resolve(client_key="/k.pem", env={})
    with pytest.raises(ConfigurationError, match="client_key"):
        ConnectionConfig.resolve(env={"CONSUL_CLIENT_KEY": "/k.pem"})


def test_token_file_argument(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {SECRET}\n")
    cfg = ConnectionConfig.resolve(token_file=path, env={"CONSUL_HTTP_TOKEN": "env-token"})
    assert cfg.token == SECRET


def test_token_file_environment_wins_over_token_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(SECRET)
    env = {"CONSUL_HTTP_TOKEN_FILE": str(path), "CONSUL_HTTP_TOKEN": "env-token"}
    assert ConnectionConfig.resolve(env=env).token == SECRET


def test_explicit_token_wins_over_token_files(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(SECRET)
    cfg = ConnectionConfig.resolve(
        token="arg-token", token_file=path, env={"CONSUL_HTTP_TOKEN_FILE": str(path)}
    )
    assert cfg.token == "arg-token"


def test_explicit_token_file_wins_over_environment_token_file(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.write_text("mine-token")
    theirs.write_text("their-token")
    cfg = ConnectionConfig.resolve(token_file=mine, env={"CONSUL_HTTP_TOKEN_FILE": str(theirs)})
    assert cfg.token == "mine-token"


def test_token_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="token file"):
        ConnectionConfig.resolve(token_file=tmp_path / "missing", env={})
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ConfigurationError, match="empty"):
        ConnectionConfig.resolve(token_file=empty, env={})


def test_token_not_in_repr_or_str() -> None:
    cfg = ConnectionConfig.resolve(token=SECRET, env={})
    assert cfg.token == SECRET
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg)
    assert "127.0.0.1" in repr(cfg)


def test_resolve_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "env-host:1234")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "env-token")
    cfg = ConnectionConfig.resolve()
    assert (cfg.host, cfg.port, cfg.token) == ("env-host", 1234, "env-token")
    assert ConnectionConfig.resolve("other:1", token="t").host == "other"

"""docker-compose.yml is valid and has the promised shape.

The project's machines have no Docker engine, so the cluster is never started here; these tests
parse the file and check its structure: three Consul servers that bootstrap together, a client
agent with the UI, health checks, named volumes, ports published on 127.0.0.1 only, and the demo
service (three replicas) waiting for the client. ``docker compose config`` runs too where a
working ``docker compose`` exists and a Docker engine answers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SERVERS = ["consul-server-1", "consul-server-2", "consul-server-3"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _args(service: dict[str, Any]) -> list[str]:
    command = service.get("command", "")
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _flag_values(args: list[str], flag: str) -> list[str]:
    out = []
    for i, arg in enumerate(args):
        if arg.startswith(f"{flag}="):
            out.append(arg.split("=", 1)[1])
        elif arg == flag and i + 1 < len(args):
            out.append(args[i + 1])
    return out


def test_consul_images_are_pinned(compose: dict[str, Any]) -> None:
    for name in [*SERVERS, "consul-client"]:
        image = compose["services"][name]["image"]
        assert re.fullmatch(r"hashicorp/consul:\d+\.\d+\.\d+", image), f"{name}: {image}"
    tags = {compose["services"][n]["image"] for n in [*SERVERS, "consul-client"]}
    assert len(tags) == 1, f"all agents must run the same Consul version: {tags}"


def test_three_servers_bootstrap_together(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in SERVERS:
        args = _args(services[name])
        assert args[0] == "agent" and "-server" in args, name
        assert _flag_values(args, "-bootstrap-expect") == ["3"], name
        joins = set(_flag_values(args, "-retry-join"))
        assert joins == set(SERVERS) - {name}, f"{name} retry-joins {joins}"
        assert _flag_values(args, "-node") == [name]
    servers = [n for n, s in services.items() if "-server" in _args(s)]
    assert sorted(servers) == SERVERS


def test_client_agent_has_the_ui_and_joins_the_servers(compose: dict[str, Any]) -> None:
    client = compose["services"]["consul-client"]
    args = _args(client)
    assert args[0] == "agent" and "-server" not in args
    assert "-ui" in args
    assert set(_flag_values(args, "-retry-join")) == set(SERVERS)
    for server in SERVERS:
        assert client["depends_on"][server]["condition"] == "service_healthy"
    assert "127.0.0.1:8500:8500" in client["ports"]


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        test = check["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: {test}"
        assert check.get("interval") and check.get("retries"), name


def test_agents_keep_their_data_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name in [*SERVERS, "consul-client"]:
        volumes = compose["services"][name]["volumes"]
        mounts = {v.split(":", 1)[0]: v.split(":", 1)[1] for v in volumes}
        data = [src for src, dst in mounts.items() if dst == "/consul/data"]
        assert data and data[0] in declared, f"{name}: /consul/data is not a named volume"
    sources = [
        compose["services"][n]["volumes"][0].split(":")[0] for n in [*SERVERS, "consul-client"]
    ]
    assert len(set(sources)) == len(sources), "each agent needs its own data volume"


def test_ports_are_published_on_localhost_only(compose: dict[str, Any]) -> None:
    published = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
                published.append(str(port.get("published")))
                continue
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"
            published.append(str(port).split(":")[1])
    assert len(published) == len(set(published)), f"host ports collide: {published}"
    assert "8500" in published


def test_demo_service_runs_three_replicas_after_the_client(compose: dict[str, Any]) -> None:
    demo = compose["services"]["demo"]
    assert demo["deploy"]["replicas"] == 3
    assert demo["depends_on"]["consul-client"]["condition"] == "service_healthy"
    assert demo["build"]["dockerfile"] == "docker/Dockerfile"
    assert (ROOT / demo["build"]["context"] / demo["build"]["dockerfile"]).is_file()
    command = " ".join(_args(demo))
    assert "locksmith.demo" in command and "--worker" in command
    assert "consul-client:8500" in command
    assert "container_name" not in demo and "ports" not in demo  # would break replicas


def test_demo_entry_point_exists() -> None:
    """The compose command runs ``python -m locksmith.demo --worker NAME --address ADDR``."""
    from locksmith import demo

    source = Path(demo.__file__).read_text(encoding="utf-8")
    assert '"--worker"' in source and '"--address"' in source


def test_dockerfile_installs_the_package() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    assert re.search(r"^USER (?!root)", text, re.M), "the demo should not run as root"
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    assert "!locksmith/" in ignore  # .venv, .cache (the consul binary) stay out of the context


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _docker_compose_unavailable() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker CLI on PATH"
    try:
        version = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=20, check=False
        )
        if version.returncode != 0:
            return f"`docker compose` does not work here: {_one_line(version.stderr)}"
        info = subprocess.run(
            [docker, "info"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker did not answer: {exc}"
    if info.returncode != 0:
        return f"no Docker engine answers: {_one_line(info.stderr)}"
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    why = _docker_compose_unavailable()
    if why is not None:
        pytest.skip(f"docker compose config not run: {why}")
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr

"""locksmith is quiet in other people's programs: its events go through stdlib logging only.

Each test runs a tiny program against the real agent in a subprocess and reads what it printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from support import child_env, unique

PROGRAM = """
import json, sys
from locksmith import Consul, LockManager
with LockManager(Consul({addr!r}), ttl="10s", lock_delay=0, name="quiet") as mgr:
    lock = mgr.lock({key!r})
    lease = lock.acquire(timeout=10)
    lock.release(lease)
print(json.dumps({{"done": True}}))
"""


def _run(setup: str, addr: str, key: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(setup) + textwrap.dedent(PROGRAM.format(addr=addr, key=key))
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=True,
    )


def test_an_unconfigured_program_prints_nothing_but_its_own_output(consul_addr: str) -> None:
    out = _run("", consul_addr, unique("locksmith-test/quiet"))
    assert out.stdout.strip().splitlines() == ['{"done": true}']
    assert out.stderr == ""


def test_basic_config_shows_each_event_once(consul_addr: str) -> None:
    key = unique("locksmith-test/basic")
    out = _run(
        """
        import logging
        logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
        """,
        consul_addr,
        key,
    )
    lines = out.stderr.splitlines()
    for event in ("session.created", "lock.acquired", "lock.released", "session.destroyed"):
        matching = [line for line in lines if f" {event} " in f"{line} "]
        assert len(matching) == 1, (event, lines)
    acquired = next(line for line in lines if " lock.acquired " in line)
    assert acquired.startswith("locksmith.manager INFO lock.acquired")
    assert f"key={key}" in acquired and "session_id=" in acquired and "fencing_token=" in acquired
    assert out.stdout.strip().splitlines() == ['{"done": true}']


def test_a_structlog_application_gets_structured_json(consul_addr: str) -> None:
    key = unique("locksmith-test/json")
    out = _run(
        """
        import logging, structlog
        handler = logging.StreamHandler()
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.stdlib.add_log_level,
                structlog.processors.JSONRenderer(),
            ],
        ))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        """,
        consul_addr,
        key,
    )
    events = [json.loads(line) for line in out.stderr.splitlines()]
    names = [e["event"] for e in events]
    assert names.count("lock.acquired") == 1 and names.count("session.destroyed") == 1
    acquired = next(e for e in events if e["event"] == "lock.acquired")
    assert acquired["key"] == key and acquired["level"] == "info"
    assert isinstance(acquired["fencing_token"], int) and acquired["session_id"]


def test_a_warning_level_program_sees_nothing_when_all_goes_well(consul_addr: str) -> None:
    out = _run(
        """
        import logging
        logging.basicConfig(level=logging.WARNING)
        """,
        consul_addr,
        unique("locksmith-test/warn"),
    )
    assert out.stderr == ""  # nothing went wrong: nothing at WARNING

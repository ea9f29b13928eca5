"""The Consul behaviour behind core finding P2, measured in namespaces.

Both findings of the partition runs in the library core are fixed; their regression tests
run on the session's dev agent: ``test_p1_*`` in tests/test_semaphore.py, ``test_p2_*`` in
tests/test_safety.py and tests/test_machine.py. The write-ups are in ``docs/faults.md``
("Network partitions").
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time

import pytest

from locksmith.testing import NetnsCluster


@pytest.mark.partitions
@pytest.mark.timeout(180)
def test_a_request_the_client_gave_up_on_still_executes_later(netns_ok: None) -> None:
    """Consul behaviour behind core finding P2 (docs/faults.md), measured: while there is no
    leader, a server holds (and retries) the writes it is given for up to
    ``rpc_hold_timeout`` (7 s); a client that gives up and closes its connection does not
    cancel them. Here a ``?release=<session>`` abandoned by its client after 1 s frees the key
    seconds later, once the remaining servers have elected a leader. (locksmith waited only
    its request timeout for an abandoned request to settle, so such a late release freed a
    newer acquisition by the same session; since the fix the session keeps off the key for
    the request timeout plus these 7 s.)"""
    with NetnsCluster(3, 1) as lab:
        key = f"findings/late-release-{time.monotonic_ns()}"

        def request(addr: str, method: str, path: str, body: bytes | None, timeout: float) -> str:
            conn = http.client.HTTPConnection(addr, timeout=timeout)
            try:
                conn.request(method, path, body=body)
                return conn.getresponse().read().decode()
            finally:
                conn.close()

        agent = lab.agent_addr(0)

        def setup() -> str:
            body = b'{"TTL": "60s", "LockDelay": "0s"}'
            sid = json.loads(request(agent, "PUT", "/v1/session/create", body, 5))["ID"]
            assert request(agent, "PUT", f"/v1/kv/{key}?acquire={sid}", b"x", 5) == "true"
            return str(sid)

        sid = lab.call("a0", setup)
        leader = lab.wait_for_leader(60, all_servers=True)
        follower = next(s for s in lab.servers if s != leader)
        # Every server cut from every other: no quorum, no leader, until healed.
        lab.partition(*([s] for s in lab.servers))
        deadline = time.monotonic() + 30
        while lab.leader_views()[follower] is not None and time.monotonic() < deadline:
            time.sleep(0.1)  # until the follower knows it has no leader

        def abandoned_release() -> float:
            with contextlib.suppress(TimeoutError, OSError):
                request("127.0.0.1:8500", "PUT", f"/v1/kv/{key}?release={sid}", None, 1.0)
            return time.monotonic()

        gave_up = lab.call(follower, abandoned_release)
        # Nothing can commit without a leader: every server's own copy still has the holder.
        views = [lab.json(s, f"/v1/kv/{key}?stale", timeout=1.0) for s in lab.servers]
        time.sleep(max(0.0, gave_up + 1.0 - time.monotonic()))
        lab.heal()  # a leader is elected within the 7 s the follower holds the write for
        freed_at = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            entries = lab.consistent(f"/v1/kv/{key}")
            if entries and not entries[0].get("Session"):
                freed_at = time.monotonic()
                break
            time.sleep(0.05)
        lab.heal()
        held = [v[0].get("Session") == sid for v in views if v]
        assert held and all(held), views  # the release had not executed when abandoned
        assert freed_at is not None, "the abandoned release never executed"
        assert freed_at > gave_up, (freed_at, gave_up)

"""Seeded partition schedules: reproducible from the seed, covering every kind, in range."""

from __future__ import annotations

import pytest

from locksmith.testing import ROUND_KINDS, RunConfig, make_schedule
from locksmith.testing._partitions import CONSUL_LOCK_DELAY, CONSUL_LOCK_TTL


def test_the_same_seed_gives_the_same_schedule() -> None:
    assert make_schedule(7, 40) == make_schedule(7, 40)
    assert make_schedule(7, 40) != make_schedule(8, 40)


def test_cover_all_plays_every_kind_once_first() -> None:
    rounds = make_schedule(3, 10)
    assert sorted(r.kind for r in rounds[: len(ROUND_KINDS)]) == sorted(ROUND_KINDS)
    assert [r.index for r in rounds] == list(range(1, 11))


@pytest.mark.parametrize("seed", range(20))
def test_rounds_are_well_formed(seed: int) -> None:
    ttl, lock_delay = 10.0, 1.0
    for r in make_schedule(seed, 30, ttl=ttl, lock_delay=lock_delay):
        assert r.how in ("drop", "link")
        if r.kind in ("split_leader", "cut_agent"):
            assert r.how == "drop"  # a link down would cut more than the round names
        if r.kind == "isolate_leader":
            assert r.target == "leader"
        else:
            holders = ("holder:lock", "holder:election", "holder:semaphore", "holder:consul-lock")
            assert r.target in holders or r.target == f"host:{r.fallback}"
        assert 0 <= r.fallback < 3
        if r.kind == "flap":
            assert r.how == "link" and r.flaps and r.flap_side in ("agent", "app")
            assert r.duration == pytest.approx(sum(d + u for d, u in r.flaps), abs=0.05)
            assert all(0.5 <= d <= 3.0 and 0.5 <= u <= 3.0 for d, u in r.flaps)
            continue
        if r.length == "short":
            assert 2.0 <= r.duration <= 0.6 * ttl
        elif r.length == "long":
            # Past the server's reaping (2xTTL) and the lock-delay: a rival takes over.
            assert 2 * ttl + lock_delay + 3 <= r.duration <= 2 * ttl + lock_delay + 8
        else:
            assert r.duration >= 2 * CONSUL_LOCK_TTL + CONSUL_LOCK_DELAY + 8


def test_length_by_kind_and_weights() -> None:
    fixed = {"cut_app": "short", "flap": "short"}
    rounds = make_schedule(5, 30, lengths={"long": 1.0}, length_by_kind=fixed)
    for r in rounds:
        assert r.length == fixed.get(r.kind, "long")


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown round kind"):
        make_schedule(1, 3, kinds=("isolate_host", "meteor"))


def test_targets_can_be_restricted() -> None:
    rounds = make_schedule(
        9, 20, kinds=("cut_app", "isolate_host"), targets=("holder:consul-lock",)
    )
    assert {r.target for r in rounds} == {"holder:consul-lock"}
    hosts = make_schedule(9, 20, targets=("host:*",))
    assert all(r.target in ("leader", f"host:{r.fallback}") for r in hosts)


def test_front_ends_by_host() -> None:
    mixed = RunConfig()
    assert [mixed.front_end_of(k) for k in range(4)] == ["threaded", "async", "threaded", "async"]
    assert RunConfig(front_end="async").front_end_of(0) == "async"
    with pytest.raises(ValueError, match="front_end 'gevent'"):  # as it is made
        RunConfig(front_end="gevent")

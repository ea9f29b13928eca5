"""The checker of a partition run's history (see :mod:`locksmith.testing._workload` for the
events the applications record and :mod:`locksmith.testing._partitions` for the run's own).

A *hold* is one lease: from its ``acquire`` (``t`` is taken right after ``acquire()``
returned) to the end of its holder's **belief**. Belief ends at the first of:

* ``release_called``: the worker decided to release (it acts no more under the lease);
* ``ended``: the library's end signal for the lease (``Lock.on_end``: at a loss, or at the
  lease deadline, *last renewal start + TTL*, at the latest); the deadline itself is not
  exposed by the public API, so this is the instant the library acted on it;
* ``lost``: the ``on_lost`` callback.

A hold without any of them (its process stopped or died holding) is believed until its
process's last event. ``held`` samples (``held_at`` of writes, ``last_held`` of the end
events: instants at which ``lock.held`` was read True, clock read *before* the call) are the
hard evidence of what the process acted on.

Rules (each violation names its rule):

* ``exclusion``: the belief intervals of two holds of one lock or election key never overlap
  (``hard`` in the message when a ``held`` sample of the first falls in the second's tenure);
* ``semaphore-limit``: never more than ``limit`` believers of one semaphore at an instant;
* ``held-after-end``: no ``held`` sample after the lease's own end signal;
* ``token-order``: tokens never repeat, and tokens of a lock or election increase with
  acquisition time (a semaphore's holders acquire concurrently, so only repeats count there);
* ``fencing``: an accepted fenced write (``write``, or a register value seen by the run's
  samples, which also covers writes whose answer was lost) landed at a Raft index W with
  token T only if T is the highest token issued for that key below W (and T < W) — exact,
  since tokens and W are indices of the same Raft log;
* ``loss-reported-first``: a hold that ended in a loss has its ``lost`` callback recorded
  before the next holder's ``acquire``; ``loss-unreported``: every loss gets one;
* ``orphan``: a lock/election key held by a session, or a session of the run's applications,
  that no process believes in (no hold of that key by that session; no application listing
  that session), for longer than the orphan bound 2xTTL + election allowance + slack,
  counted from its first sighting or from the last leader change since (a leader change
  restarts every TTL timer in full);
  ``final-orphan``: once every application closed, nothing of theirs is left on Consul
  after that bound;
* ``liveness``: after every heal, every lock, election and semaphore is acquired by someone
  within 2xTTL + lock-delay + election allowance + slack;
* ``late-end-signal``: a lease presumed lost at its deadline (``lease_expired``) is
  signalled by its deadline: at most TTL after the last ``renewed`` event of its session
  (logged after the renewal's answer) plus TTL/4 for a stalled thread. The worst lateness
  is reported either way (negative: before the bound).

:func:`check_consul_lock` applies ``exclusion`` to the children of ``consul lock``.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ._history import Event

__all__ = [
    "CheckConfig",
    "CheckResult",
    "Hold",
    "Violation",
    "build_holds",
    "check_consul_lock",
    "check_history",
]

INF = float("inf")
LOCKISH = ("lock", "election", "fair")


@dataclass(frozen=True)
class CheckConfig:
    """The bounds the rules use.

    Attributes:
        ttl: Session TTL of the applications.
        lock_delay: Their lock-delay.
        election_allowance: Time allowed for a Consul leader election (measured 3-16 s).
        slack: Added to the orphan and liveness bounds (retry pauses, sampling period).
        semaphore_limit: The semaphore's limit (0: no semaphore).
        session_prefix: Sessions whose name starts with this belong to the applications.
    """

    ttl: float = 10.0
    lock_delay: float = 1.0
    election_allowance: float = 20.0
    slack: float = 5.0
    semaphore_limit: int = 0
    session_prefix: str = ""

    @property
    def orphan_bound(self) -> float:
        """How long a key or session may outlive every belief in it."""
        return 2 * self.ttl + self.election_allowance + self.slack

    @property
    def liveness_bound(self) -> float:
        """How soon after a heal every lock must be taken again."""
        return 2 * self.ttl + self.lock_delay + self.election_allowance + self.slack


@dataclass
class Violation:
    """One broken rule, with the events that show it."""

    rule: str
    key: str
    message: str
    events: list[Event] = field(default_factory=list)
    finding: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "rule": self.rule,
            "key": self.key,
            "message": self.message,
            "finding": self.known_finding,
            "events": self.events,
        }

    @property
    def known_finding(self) -> str | None:
        """The ID of a known finding in the library core this violation is an instance of
        (see ``docs/faults.md``), or None.

        P1: a semaphore token handed out twice. P2: a belief that outlived its lease because
        a release of an *earlier* lease of the same session reached Consul late and freed it
        (``released_by_other`` shortly after that session released the same key).
        """
        if self.finding is not None:
            return self.finding
        repeat = "handed to both" in self.message or "twice" in self.message
        if self.rule == "token-order" and self.key.endswith("/semaphore") and repeat:
            return "P1"
        return None

    def excerpt(self, limit: int = 16) -> str:
        """The evidence, one event a line."""
        lines = [json.dumps(e, default=str, separators=(",", ":")) for e in self.events[:limit]]
        if len(self.events) > limit:
            lines.append(f"... {len(self.events) - limit} more")
        return "\n".join(lines)


@dataclass
class Hold:
    """One lease, assembled from its events."""

    proc: str
    kind: str
    key: str
    token: int
    session: str
    t_acq: float
    events: list[Event] = field(default_factory=list)
    writes: list[Event] = field(default_factory=list)
    ended: Event | None = None
    lost: Event | None = None
    release_called: Event | None = None
    noticed_loss: Event | None = None
    released: Event | None = None
    proc_end: float = INF

    @property
    def ident(self) -> str:
        """``proc#token``."""
        return f"{self.proc}#{self.token}"

    @property
    def belief_end(self) -> float:
        """When the holder stopped believing (module docstring)."""
        ts = [
            float(e["t"])
            for e in (self.release_called, self.ended, self.lost, self.noticed_loss)
            if e is not None
        ]
        return min(ts) if ts else self.proc_end

    @property
    def end_signal(self) -> float:
        """The library's own end signal (``ended`` or ``lost``, the first), or inf."""
        ts = [float(e["t"]) for e in (self.ended, self.lost) if e is not None]
        return min(ts) if ts else INF

    def held_samples(self) -> list[float]:
        """Instants at which ``held`` was read True.

        A ``last_held`` of None, or not after the recorded acquire, means ``held`` was never
        read True (workloads before this rule recorded the acquire time there).
        """
        out = [float(w["held_at"]) for w in self.writes if w.get("held_at") is not None]
        t_rec = float(self.events[0]["t"])
        for e in (self.release_called, self.noticed_loss):
            if e is not None and e.get("last_held") is not None:
                t = float(e["last_held"])
                if t > t_rec or e is self.release_called:
                    out.append(t)
        return out

    @property
    def last_held(self) -> float:
        """The last ``held`` sample (``t_acq`` if none)."""
        return max([self.t_acq, *self.held_samples()])

    @property
    def was_lost(self) -> bool:
        """Whether the hold ended in a loss rather than a release."""
        if self.noticed_loss is not None or self.lost is not None:
            return True
        if self.released is not None and not self.released.get("ok", True):
            return True
        reason = self.ended.get("reason") if self.ended is not None else None
        return reason not in (None, "released", "event")

    def __str__(self) -> str:
        return f"{self.kind} {self.ident}"


@dataclass
class CheckResult:
    """What :func:`check_history` found."""

    violations: list[Violation]
    stats: dict[str, Any]
    holds: dict[str, list[Hold]] = field(default_factory=dict, repr=False)

    def by_rule(self) -> dict[str, int]:
        """Violation counts per rule."""
        out: dict[str, int] = defaultdict(int)
        for v in self.violations:
            out[v.rule] += 1
        return dict(out)


def build_holds(events: list[Event]) -> tuple[dict[str, list[Hold]], list[Violation]]:
    """Holds per key (sorted by acquisition time), and the problems met on the way.

    A process that acquires the same token twice (which must not happen) gets two holds; the
    later events go to the later one, and the repeat is reported under ``token-order``.
    """
    problems: list[Violation] = []
    holds: dict[tuple[str, str, int], list[Hold]] = {}
    # Events that came before their acquire was recorded: the library may report a loss (its
    # callback, its end signal) before acquire() has returned to the worker.
    early: dict[tuple[str, str, int], list[Event]] = defaultdict(list)
    last_t: dict[str, float] = {}
    for ev in events:
        proc = str(ev.get("proc", ""))
        last_t[proc] = max(last_t.get(proc, 0.0), float(ev.get("t", 0.0)))
    for ev in events:
        kind = ev.get("ev")
        if "token" not in ev or "key" not in ev or ev.get("kind") not in (*LOCKISH, "semaphore"):
            continue
        ident = (str(ev["proc"]), str(ev["key"]), int(ev["token"]))
        if kind == "acquire":
            # Belief starts when the library had the answer (the lease's own timestamp, on the
            # same clock), which may be a little before the worker recorded it.
            t_acq = min(float(ev["t"]), float(ev.get("acquired_at") or ev["t"]))
            hold = Hold(
                proc=ident[0],
                kind=str(ev["kind"]),
                key=ident[1],
                token=ident[2],
                session=str(ev.get("session", "")),
                t_acq=t_acq,
                events=[ev],
                proc_end=last_t.get(ident[0], INF),
            )
            if ident in holds:
                problems.append(
                    Violation(
                        "token-order",
                        ident[1],
                        f"{ident[0]} acquired token {ident[2]} twice",
                        [holds[ident][-1].events[0], ev],
                    )
                )
            holds.setdefault(ident, []).append(hold)
            for e in early.pop(ident, []):
                _attach(hold, e)
            continue
        same = holds.get(ident)
        if not same:
            early[ident].append(ev)  # its acquire may be recorded just after
            continue
        _attach(same[-1], ev)
    by_key: dict[str, list[Hold]] = defaultdict(list)
    for lst in holds.values():
        for h in lst:
            by_key[h.key].append(h)
    for lst in by_key.values():
        lst.sort(key=lambda h: h.t_acq)
    return dict(by_key), problems


def _attach(hold: Hold, ev: Event) -> None:
    kind = ev.get("ev")
    hold.events.append(ev)
    if kind == "write":
        hold.writes.append(ev)
    elif (
        kind in ("ended", "lost", "release_called", "noticed_loss", "released")
        and getattr(hold, str(kind)) is None
    ):
        setattr(hold, str(kind), ev)


def _ev_brief(events: list[Event], t0: float, t1: float, kinds: tuple[str, ...]) -> list[Event]:
    return [e for e in events if e.get("ev") in kinds and t0 <= float(e.get("t", 0.0)) <= t1]


def _pair_evidence(a: Hold, b: Hold, run_events: list[Event]) -> list[Event]:
    lo = min(a.t_acq, b.t_acq) - 1
    hi = max(a.belief_end if a.belief_end < INF else b.t_acq, b.t_acq) + 1
    cuts = _ev_brief(run_events, lo - 60, hi, ("cut", "heal", "flap"))
    picked = [e for e in a.events + b.events if e.get("ev") != "write"]
    picked += a.writes[-2:] + b.writes[:2]
    return sorted(cuts + picked, key=lambda e: float(e.get("t", 0.0)))


def check_history(events: list[Event], cfg: CheckConfig) -> CheckResult:
    """Check every rule of the module docstring on a run's merged, time-sorted events."""
    by_key, violations = build_holds(events)
    run_events = [e for e in events if e.get("proc") == "run"]
    windows = cut_windows(run_events)
    stats = _stats(events, by_key)
    for key, holds in sorted(by_key.items()):
        kind = holds[0].kind
        _check_tokens(key, holds, violations)
        _check_held_after_end(key, holds, violations)
        if kind in LOCKISH:
            _check_exclusion(key, holds, run_events, windows, violations)
            if kind == "fair":
                _check_fencing_queued(key, holds, events, violations)
            else:
                _check_fencing(key, holds, events, violations)
        elif cfg.semaphore_limit > 0:
            _check_semaphore(key, holds, cfg.semaphore_limit, run_events, windows, out=violations)
        _check_losses(key, holds, windows, violations, ordered=kind in LOCKISH)
    _check_orphans(events, by_key, cfg, violations)
    _check_liveness(events, by_key, cfg, violations, stats)
    _check_deadlines(events, by_key, cfg, violations, stats)
    stats["takeovers_after_loss"] = _takeovers(by_key)
    return CheckResult(violations, stats, by_key)


def _takeovers(by_key: dict[str, list[Hold]]) -> dict[str, Any]:
    """Rivals taking a lock or election after its holder lost it: how many, and the smallest
    gap between the loser's end of belief and the rival's acquire (the safety margin)."""
    gaps = []
    for holds in by_key.values():
        if holds[0].kind not in LOCKISH:
            continue
        for a, b in itertools.pairwise(holds):
            if a.was_lost and a.belief_end < INF and b.proc != a.proc:
                gaps.append(b.t_acq - a.belief_end)
    return {"count": len(gaps), "closest_s": round(min(gaps), 3) if gaps else None}


def _check_deadlines(
    events: list[Event],
    by_key: dict[str, list[Hold]],
    cfg: CheckConfig,
    out: list[Violation],
    stats: dict[str, Any],
) -> None:
    """A lease presumed lost at its deadline (``lease_expired``) must have been signalled by
    then: its deadline is at most TTL after the last ``renewed`` event of its session (the
    renewal was logged after its answer, and the deadline is TTL after it started). Lateness
    beyond a quarter of the TTL (far more than a thread's wake-up) is a violation; the worst
    lateness is reported either way."""
    renewals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e.get("ev") == "renewed" and e.get("session"):
            ttl = e.get("ttl")
            renewals[str(e["session"])].append((float(e["t"]), float(ttl or cfg.ttl)))
    worst: float | None = None
    checked = 0
    for holds in by_key.values():
        for h in holds:
            reasons = {x.get("reason") for x in (h.ended, h.lost) if x is not None}
            if "lease_expired" not in reasons or not renewals.get(h.session):
                continue
            end = h.end_signal
            before = [(t, ttl) for t, ttl in renewals[h.session] if t <= end]
            if not before:
                continue
            t_r, ttl = before[-1]
            late = end - (t_r + ttl)
            checked += 1
            worst = late if worst is None else max(worst, late)
            if late > cfg.ttl / 4:
                out.append(
                    Violation(
                        "late-end-signal",
                        h.key,
                        f"{h}: lease_expired signalled at {end:.3f}, {late:.3f}s after its "
                        f"deadline's upper bound {t_r + ttl:.3f} (last renewal logged at "
                        f"{t_r:.3f}, TTL {ttl:g}s)",
                        h.events,
                    )
                )
    stats["deadline_checks"] = {
        "leases": checked,
        "worst_lateness_s": None if worst is None else round(worst, 3),
    }


def _check_tokens(key: str, holds: list[Hold], out: list[Violation]) -> None:
    seen: dict[int, Hold] = {}
    for h in holds:
        if h.token in seen and seen[h.token].proc != h.proc:
            out.append(
                Violation(
                    "token-order",
                    key,
                    f"token {h.token} handed to both {seen[h.token].proc} and {h.proc}",
                    [seen[h.token].events[0], h.events[0]],
                )
            )
        seen[h.token] = h
    if holds and holds[0].kind not in LOCKISH:
        return  # a semaphore's holders acquire concurrently: only repeats are wrong
    for a, b in itertools.pairwise(holds):
        if b.token < a.token and b.t_acq > a.t_acq:
            out.append(
                Violation(
                    "token-order",
                    key,
                    f"{b} acquired after {a} with a token that is not greater",
                    [a.events[0], b.events[0]],
                )
            )


def _check_held_after_end(key: str, holds: list[Hold], out: list[Violation]) -> None:
    for h in holds:
        end = h.end_signal
        late = [s for s in h.held_samples() if s > end]
        if late:
            out.append(
                Violation(
                    "held-after-end",
                    key,
                    f"{h}: held read True at {max(late):.3f}, after the lease's end signal "
                    f"at {end:.3f}",
                    h.events,
                )
            )


def _check_exclusion(
    key: str, holds: list[Hold], run_events: list[Event], windows: Windows, out: list[Violation]
) -> None:
    active: list[Hold] = []  # earlier holds whose belief may still run (sorted by t_acq)
    for b in holds:
        active = [a for a in active if a.belief_end >= b.t_acq]
        for a in active:
            hard = a.last_held >= b.t_acq
            note = f"; hard: {a.proc} read held=True at {a.last_held:.3f}" if hard else ""
            out.append(
                Violation(
                    "exclusion",
                    key,
                    f"{a} believed it held until {a.belief_end:.3f}, but {b} acquired at "
                    f"{b.t_acq:.3f} ({a.belief_end - b.t_acq:.3f}s of overlap{note})",
                    _pair_evidence(a, b, run_events),
                    finding=(
                        "P2" if not hard and _late_release_victim(a, holds, windows) else None
                    ),
                )
            )
        active.append(b)


#: How long after the heal of the cut it was issued in a late release is still taken for P2.
#: Consul holds a write for up to 7 s without a leader, and a write stuck in an agent's
#: connection to a cut-off server is delivered when the cut heals.
P2_WINDOW = 15.0

Windows = list[tuple[float, float]]


def cut_windows(events: list[Event]) -> Windows:
    """(cut, heal) instants of every round of the run."""
    out: Windows = []
    start: float | None = None
    for e in events:
        if e.get("proc") != "run":
            continue
        if e.get("ev") == "cut":
            start = float(e["t"])
        elif e.get("ev") == "heal" and start is not None:
            out.append((start, float(e["t"])))
            start = None
    return out


def _late_release_victim(h: Hold, holds: list[Hold], windows: Windows) -> bool:
    """Whether ``h`` fits core finding P2: freed by a late release of its own session.

    ``h`` was lost as ``released_by_other`` or ``key_taken``, and an earlier lease of the
    same session on the same key had been released during a cut (the request abandoned by
    the client, see docs/faults.md), with ``h`` acquired after that release and lost no later
    than P2_WINDOW after the cut healed.
    """
    reasons = {x.get("reason") for x in (h.ended, h.lost) if x is not None}
    if not reasons & {"released_by_other", "key_taken"}:
        return False
    end = h.end_signal
    for g in holds:
        if g is h or g.session != h.session or g.release_called is None:
            continue
        released = float(g.release_called["t"])
        if released >= h.t_acq:
            continue
        for cut, heal in windows:
            if cut <= released <= heal and end <= heal + P2_WINDOW:
                return True
    return False


def _check_semaphore(
    key: str,
    holds: list[Hold],
    limit: int,
    run_events: list[Event],
    windows: Windows,
    *,
    out: list[Violation],
) -> None:
    points: list[tuple[float, int, Hold]] = []
    for h in holds:
        points.append((h.t_acq, 1, h))
        points.append((h.belief_end, -1, h))
    # At equal times an end comes first: an end at t and a start at t do not overlap...
    points.sort(key=lambda p: (p[0], p[1]))
    live: list[Hold] = []
    reported = False
    for t, delta, h in points:
        if delta < 0:
            if h in live:
                live.remove(h)
            continue
        live.append(h)
        if len(live) > limit and not reported:
            ev = sorted(
                (e for x in live for e in x.events if e.get("ev") != "write"),
                key=lambda e: float(e.get("t", 0.0)),
            )
            late = [x for x in live if _late_release_victim(x, holds, windows)]
            out.append(
                Violation(
                    "semaphore-limit",
                    key,
                    f"{len(live)} holders believed at {t:.3f} (limit {limit}): "
                    + ", ".join(str(x) for x in live),
                    ev,
                    finding="P2" if late else None,
                )
            )
            reported = True  # one report per key is enough evidence
        elif len(live) <= limit:
            reported = False


def _check_fencing(key: str, holds: list[Hold], events: list[Event], out: list[Violation]) -> None:
    tokens = sorted(h.token for h in holds)
    by_token = {h.token: h for h in holds}
    accepted = _accepted_writes(holds, events)
    seen: set[tuple[int, int]] = set()
    for index, token, ev in accepted:
        if (index, token) in seen:
            continue
        seen.add((index, token))
        pos = bisect.bisect_left(tokens, index)
        highest = tokens[pos - 1] if pos > 0 else None
        if highest != token:
            rival = by_token.get(highest) if highest is not None else None
            evidence = [ev] + ([rival.events[0]] if rival is not None else [])
            if token in by_token:
                evidence.insert(0, by_token[token].events[0])
            out.append(
                Violation(
                    "fencing",
                    key,
                    f"a write with token {token} was accepted at index {index}, but the "
                    f"highest token issued below that index is {highest}",
                    evidence,
                )
            )


def _accepted_writes(holds: list[Hold], events: list[Event]) -> list[tuple[int, int, Event]]:
    """(index, token, evidence) of every write known accepted: the writers' answers and
    the register values the samples saw."""
    target = None
    accepted: list[tuple[int, int, Event]] = []
    for h in holds:
        for w in h.writes:
            accepted.append((int(w["index"]), h.token, w))
            target = w.get("target", target)
    if target is not None:
        for e in events:
            if e.get("ev") not in ("kv_sample", "final_sample"):
                continue
            reg = (e.get("registers") or {}).get(target)
            if not reg or not isinstance(reg.get("value"), dict) or "token" not in reg["value"]:
                continue
            accepted.append((int(reg["index"]), int(reg["value"]["token"]), e))
    return accepted


def _check_fencing_queued(
    key: str, holds: list[Hold], events: list[Event], out: list[Violation]
) -> None:
    """Fencing for a fair lock, whose token is the index at which its entry *queued* (not
    the index of the handoff, which no history records): in index order, the accepted
    writes' tokens never go down (what a resource that keeps the highest token needs),
    and no write is accepted when a holder with a higher token had acquired before it was
    even sent."""
    accepted = sorted(_accepted_writes(holds, events), key=lambda a: a[0])
    top: tuple[int, int, Event] | None = None
    for index, token, ev in accepted:
        if top is not None and token < top[1]:
            out.append(
                Violation(
                    "fencing",
                    key,
                    f"a write with token {token} was accepted at index {index}, after one with "
                    f"token {top[1]} at index {top[0]}",
                    [top[2], ev],
                )
            )
        if top is None or token > top[1]:
            top = (index, token, ev)
    for h in holds:
        for w in h.writes:
            sent = float(w.get("held_at") or w["t"])
            rival = next((b for b in holds if b.token > h.token and b.t_acq < sent), None)
            if rival is not None:
                out.append(
                    Violation(
                        "fencing",
                        key,
                        f"{h}: a write sent at {sent:.3f} was accepted at index {w['index']}, "
                        f"though {rival} had acquired at {rival.t_acq:.3f}",
                        [h.events[0], rival.events[0], w],
                    )
                )


def _check_losses(
    key: str, holds: list[Hold], windows: Windows, out: list[Violation], *, ordered: bool
) -> None:
    """Every loss reported; for a lock or an election (``ordered``), reported before the
    next holder acquired (a semaphore's next holder may rightly hold beside it)."""
    for j, a in enumerate(holds):
        if not a.was_lost:
            continue
        if a.lost is None:
            if a.proc_end > a.belief_end + 15:  # the process lived on: the callback had time
                out.append(
                    Violation(
                        "loss-unreported", key, f"{a} was lost but on_lost never fired", a.events
                    )
                )
            continue
        nxt = next((b for b in holds[j + 1 :] if b.proc != a.proc or b.token != a.token), None)
        if ordered and nxt is not None and float(a.lost["t"]) >= nxt.t_acq:
            out.append(
                Violation(
                    "loss-reported-first",
                    key,
                    f"{a}'s loss ({a.lost.get('reason')}) was reported at "
                    f"{float(a.lost['t']):.3f}, after {nxt} acquired at {nxt.t_acq:.3f}",
                    [e for e in a.events if e.get("ev") != "write"] + nxt.events[:1],
                    finding="P2" if _late_release_victim(a, holds, windows) else None,
                )
            )


def _runs(samples: list[tuple[float, bool]]) -> list[tuple[float, float]]:
    """Maximal runs of consecutive uncovered samples, as (first, last) times."""
    runs: list[tuple[float, float]] = []
    start: float | None = None
    last = 0.0
    for t, covered in samples:
        if covered:
            if start is not None:
                runs.append((start, last))
            start = None
        else:
            if start is None:
                start = t
            last = t
    if start is not None:
        runs.append((start, last))
    return runs


#: Round kinds that move the Raft leader (during the cut, and again when it heals).
LEADER_ROUNDS = ("isolate_leader", "split_leader")


def leader_changes(events: list[Event]) -> list[float]:
    """Instants at or before which the Raft leader changed (sorted): a change restarts
    every session's TTL timer in full, so a session nobody renews lives on for 2xTTL from
    there. Taken from the leader named by consecutive samples and by the run's ``leader``
    events, and, for histories without them, from the cut and heal of every round that
    moves the leader."""
    out: list[float] = []
    last: str | None = None
    moving = False
    for e in events:
        if e.get("proc") != "run":
            continue
        kind = e.get("ev")
        if kind in ("kv_sample", "final_sample", "leader") and e.get("leader"):
            if last is not None and e["leader"] != last:
                out.append(float(e["t"]))
            last = str(e["leader"])
        elif kind == "cut":
            moving = e.get("kind") in LEADER_ROUNDS
            if moving:
                out.append(float(e["t"]) + float(e.get("duration", 0.0)))  # by the heal
        elif kind == "heal" and moving:
            out.append(float(e["t"]))  # the cut-off server rejoining may force an election
    return sorted(out)


def _orphan_start(first: float, last: float, changes: list[float]) -> float:
    """When an orphan's reaping clock last (re)started: at its first sighting, or at the
    latest leader change after that (and by its last sighting)."""
    i = bisect.bisect_right(changes, last)
    return max(first, changes[i - 1]) if i > 0 else first


def _check_orphans(
    events: list[Event], by_key: dict[str, list[Hold]], cfg: CheckConfig, out: list[Violation]
) -> None:
    bound = cfg.orphan_bound
    changes = leader_changes(events)
    samples = [e for e in events if e.get("ev") in ("kv_sample", "final_sample")]
    # Keys: (key, session) -> [(t, covered)]
    key_obs: dict[tuple[str, str], list[tuple[float, bool]]] = defaultdict(list)
    for s in samples:
        t = float(s["t"])
        for key, entry in (s.get("keys") or {}).items():
            sess = entry.get("session") if isinstance(entry, dict) else None
            if not sess or key not in by_key:
                continue  # a key no application ever acquired (consul lock's, say)
            covered = any(
                h.session == sess and h.t_acq <= t <= h.belief_end for h in by_key.get(key, [])
            )
            key_obs[(key, sess)].append((t, covered))
    for (key, sess), obs in key_obs.items():
        for first, last in _runs(obs):
            # Before the acquire's answer and after the belief ended, a key may carry the
            # session for a while (the server reaps at 2xTTL): only a long run is an orphan.
            if last - _orphan_start(first, last, changes) > bound:
                out.append(
                    Violation(
                        "orphan",
                        key,
                        f"{key} was held by session {sess} from {first:.3f} to {last:.3f} "
                        f"({last - first:.1f}s > {bound:.1f}s) while nobody believed it held it",
                        [h.events[0] for h in by_key.get(key, []) if h.session == sess][:5],
                    )
                )
    # Sessions: when did some application list it?
    listed: dict[str, list[tuple[float, float]]] = defaultdict(list)
    current: dict[str, dict[str, float]] = defaultdict(dict)  # proc -> sid -> since
    stops: dict[str, float] = {}
    for e in events:
        if e.get("ev") == "sessions":
            proc = str(e["proc"])
            now = float(e["t"])
            ids = set(e.get("ids") or [])
            for sid, since in list(current[proc].items()):
                if sid not in ids:
                    listed[sid].append((since, now))
                    del current[proc][sid]
            for sid in ids:
                current[proc].setdefault(sid, now)
        elif e.get("ev") == "stop" and e.get("proc", "").startswith("app"):
            stops[str(e["proc"])] = float(e["t"])
    for proc, sids in current.items():
        for sid, since in sids.items():
            listed[sid].append((since, stops.get(proc, INF)))
    sess_obs: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    names: dict[str, str] = {}
    for s in samples:
        t = float(s["t"])
        for sess in s.get("sessions") or []:
            sid, name = str(sess.get("id")), str(sess.get("name", ""))
            if not name.startswith(cfg.session_prefix):
                continue
            names[sid] = name
            covered = any(a <= t <= b for a, b in listed.get(sid, []))
            sess_obs[sid].append((t, covered))
    for sid, obs in sess_obs.items():
        for first, last in _runs(obs):
            if last - _orphan_start(first, last, changes) > bound:
                out.append(
                    Violation(
                        "orphan",
                        names[sid],
                        f"session {sid} ({names[sid]}) existed from {first:.3f} to {last:.3f} "
                        f"({last - first:.1f}s > {bound:.1f}s) with no application using it",
                    )
                )
    finals = [s for s in samples if s.get("ev") == "final_sample"]
    if finals and stops:
        last_stop = max(stops.values())
        final = finals[-1]
        if float(final["t"]) - last_stop >= bound:
            left = [
                sess
                for sess in final.get("sessions") or []
                if str(sess.get("name", "")).startswith(cfg.session_prefix)
            ]
            held = {
                k: v
                for k, v in (final.get("keys") or {}).items()
                if v.get("session") and k in by_key
            }
            if left or held:
                out.append(
                    Violation(
                        "final-orphan",
                        "*",
                        f"{float(final['t']) - last_stop:.1f}s after the last application "
                        f"stopped, Consul still has sessions {left} and held keys {held}",
                        [final],
                    )
                )


def _check_liveness(
    events: list[Event],
    by_key: dict[str, list[Hold]],
    cfg: CheckConfig,
    out: list[Violation],
    stats: dict[str, Any],
) -> None:
    bound = cfg.liveness_bound
    heals = [e for e in events if e.get("ev") == "heal"]
    cuts = sorted(float(e["t"]) for e in events if e.get("ev") == "cut")
    stops = [float(e["t"]) for e in events if e.get("ev") == "stopping_apps"]
    end_of_run = min(stops) if stops else max((float(e.get("t", 0)) for e in events), default=0)
    delays: list[float] = []
    inconclusive = 0
    for heal in heals:
        th = float(heal["t"])
        next_cut = min((c for c in cuts if c > th), default=INF)
        for key, holds in sorted(by_key.items()):
            # A holder whose belief spans the heal keeps its lock (rightly): the clock starts
            # when the last such belief ends.
            spans = [h.belief_end for h in holds if h.t_acq <= th < h.belief_end]
            ref = max([th, *[t for t in spans if t < INF]])
            after = [h.t_acq for h in holds if h.t_acq > ref]
            first = min(after) if after else None
            if first is not None and first <= ref + bound:
                delays.append(first - th)
                continue
            if min(ref + bound, next_cut, end_of_run) < ref + bound:
                inconclusive += 1
                continue
            out.append(
                Violation(
                    "liveness",
                    key,
                    f"nobody acquired {key} within {bound:.1f}s of the heal at {th:.3f} "
                    f"(round {heal.get('round')}; first acquire after it: "
                    f"{'never' if first is None else format(first - th, '.1f') + 's'})",
                    [heal],
                )
            )
    stats["liveness"] = {
        "heals": len(heals),
        "max_reacquire_s": round(max(delays), 2) if delays else None,
        "inconclusive": inconclusive,
    }


def _stats(events: list[Event], by_key: dict[str, list[Hold]]) -> dict[str, Any]:
    acq: dict[str, int] = defaultdict(int)
    for holds in by_key.values():
        for h in holds:
            acq[h.kind] += 1
    counts: dict[str, int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    for e in events:
        ev = str(e.get("ev"))
        if ev in ("write", "write_refused", "write_unknown", "error", "timeout"):
            counts[ev] += 1
        elif ev == "lost":
            reasons[str(e.get("reason"))] += 1
    return {
        "acquisitions": dict(acq),
        "fenced_writes": {
            "accepted": counts["write"],
            "refused": counts["write_refused"],
            "unknown": counts["write_unknown"],
        },
        "losses": dict(reasons),
        "errors": counts["error"],
        "timeouts": counts["timeout"],
    }


# --------------------------------------------------------------------------- consul lock


@dataclass
class ChildRun:
    """One child of ``consul lock``: when it started and stopped believing it held the lock."""

    child: str
    proc: str
    t_start: float
    t_end: float
    how: str
    events: list[Event]


def consul_lock_runs(events: list[Event]) -> list[ChildRun]:
    """The children's belief intervals (a child with no end: until its loop's next exit)."""
    starts: dict[str, Event] = {}
    ends: dict[str, Event] = {}
    exits: dict[str, Event] = {}
    last_t = max((float(e.get("t", 0.0)) for e in events), default=0.0)
    for e in events:
        ev = e.get("ev")
        if ev == "cl_start":
            starts[str(e["child"])] = e
        elif ev == "cl_end":
            ends.setdefault(str(e["child"]), e)
        elif ev == "cl_exit":
            exits[str(e["child"])] = e
    runs = []
    for child, s in starts.items():
        end = ends.get(child) or exits.get(child)
        t_end = float(end["t"]) if end is not None else last_t
        how = str(end.get("how", "exit")) if end is not None else "running"
        evs = [x for x in (s, ends.get(child), exits.get(child)) if x is not None]
        runs.append(ChildRun(child, str(s["proc"]), float(s["t"]), t_end, how, evs))
    runs.sort(key=lambda r: r.t_start)
    return runs


def check_consul_lock(events: list[Event]) -> CheckResult:
    """``exclusion`` for ``consul lock``'s children: no two run at overlapping times."""
    runs = consul_lock_runs(events)
    run_events = [e for e in events if e.get("proc") == "run"]
    out: list[Violation] = []
    overlap_total = 0.0
    overlap_max = 0.0
    for j, b in enumerate(runs):
        for a in runs[:j]:
            if a.t_end > b.t_start:
                ov = min(a.t_end, b.t_end) - b.t_start
                overlap_total += ov
                overlap_max = max(overlap_max, ov)
                cuts = _ev_brief(run_events, a.t_start - 60, b.t_start + 1, ("cut", "heal"))
                out.append(
                    Violation(
                        "exclusion",
                        "consul-lock",
                        f"child {a.child} ran from {a.t_start:.3f} to {a.t_end:.3f} "
                        f"({a.how}); child {b.child} started at {b.t_start:.3f}: "
                        f"{ov:.2f}s with two children running",
                        sorted(cuts + a.events + b.events, key=lambda e: float(e.get("t", 0))),
                    )
                )
    stats = {
        "children": len(runs),
        "sigterm": sum(1 for r in runs if r.how == "sigterm"),
        "overlaps": len(out),
        "overlap_total_s": round(overlap_total, 2),
        "overlap_max_s": round(overlap_max, 2),
    }
    return CheckResult(out, stats)

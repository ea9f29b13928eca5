"""Export locksmith managers' statistics to Prometheus (the `prometheus` extra).

:class:`LocksmithCollector` is a ``prometheus_client`` collector that reads
:meth:`LockManager.stats` (or :meth:`AsyncLockManager.stats`) of the managers added to it on
every scrape; it holds them weakly, so a closed and forgotten manager just drops out::

    from prometheus_client import REGISTRY, start_http_server
    from locksmith.prometheus import LocksmithCollector

    collector = LocksmithCollector()
    REGISTRY.register(collector)
    collector.add(mgr, name="billing")
    start_http_server(9100)

Metrics (each with a ``manager`` label): ``locksmith_acquisitions_total``,
``locksmith_acquire_failures_total``, ``locksmith_releases_total``,
``locksmith_losses_total`` (and ``reason``), ``locksmith_lock_delay_waits_total``,
``locksmith_sessions_created_total``, ``locksmith_sessions_lost_total``,
``locksmith_renewals_total``, ``locksmith_renew_failures_total``, the gauge
``locksmith_held_locks``, and the histograms ``locksmith_acquire_seconds``,
``locksmith_hold_seconds``, ``locksmith_lock_delay_wait_seconds`` and
``locksmith_renew_seconds``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from locksmith._stats import BUCKETS, Histogram, ManagerStats

__all__ = ["LocksmithCollector"]


class _HasStats(Protocol):
    def stats(self) -> ManagerStats: ...


_COUNTERS = (
    ("acquisitions", "acquired", "Locks acquired (leases handed out)."),
    ("acquire_failures", "acquire_failed", "Acquire calls that ended without a lease."),
    ("releases", "released", "Leases released by their holder."),
    ("lock_delay_waits", "lock_delay_waits", "Waits for a lock-delay window."),
    ("sessions_created", "sessions_created", "Sessions created or adopted."),
    ("sessions_lost", "sessions_lost", "Sessions that ended under their manager."),
    ("renewals", "renewals", "Successful session renewals."),
    ("renew_failures", "renew_failures", "Renewal loops that ended without success."),
)
_HISTOGRAMS = (
    ("acquire_seconds", "acquire_latency", "From an acquire call to its lease."),
    ("hold_seconds", "hold_duration", "From acquisition to release or loss."),
    ("lock_delay_wait_seconds", "lock_delay_wait", "Planned waits for lock-delay windows."),
    ("renew_seconds", "renew_latency", "From sending a successful renewal to its answer."),
)


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    counts = h.buckets or (0,) * len(BUCKETS)
    return [
        ("+Inf" if bound == float("inf") else repr(bound), float(n))
        for bound, n in zip(BUCKETS, counts, strict=True)
    ]


class LocksmithCollector(Collector):
    """Collects the statistics of the managers added to it, on every scrape."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._managers: weakref.WeakValueDictionary[str, _HasStats] = weakref.WeakValueDictionary()

    def add(self, manager: _HasStats, name: str | None = None) -> None:
        """Collect ``manager``'s statistics with the label ``manager=name`` (default: its
        session name, else a number)."""
        label = name or getattr(manager, "name", None) or f"manager-{id(manager):x}"
        with self._mu:
            self._managers[str(label)] = manager

    def remove(self, name: str) -> None:
        """Stop collecting the manager added as ``name``."""
        with self._mu:
            self._managers.pop(name, None)

    def collect(self) -> Iterator[Metric]:
        """The metrics of every manager (called by ``prometheus_client`` on a scrape)."""
        with self._mu:
            managers = list(self._managers.items())
        snapshots = [(name, mgr.stats()) for name, mgr in managers]
        for metric, field, doc in _COUNTERS:
            family = CounterMetricFamily(f"locksmith_{metric}", doc, labels=["manager"])
            for name, stats in snapshots:
                family.add_metric([name], getattr(stats, field))
            yield family
        losses = CounterMetricFamily(
            "locksmith_losses", "Leases lost, by reason.", labels=["manager", "reason"]
        )
        for name, stats in snapshots:
            for reason, count in sorted(stats.lost.items()):
                losses.add_metric([name, reason], count)
        yield losses
        held = GaugeMetricFamily("locksmith_held_locks", "Leases held now.", labels=["manager"])
        for name, stats in snapshots:
            held.add_metric([name], stats.held)
        yield held
        for metric, field, doc in _HISTOGRAMS:
            hist = HistogramMetricFamily(f"locksmith_{metric}", doc, labels=["manager"])
            for name, stats in snapshots:
                h: Histogram = getattr(stats, field)
                hist.add_metric([name], _buckets(h), h.total)
            yield hist

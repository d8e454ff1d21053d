"""The prometheus_client custom collector: fresh metric families on every scrape.

Register it on a :class:`~prometheus_client.CollectorRegistry` of your own;
``describe()`` returns nothing, so registering never triggers a collection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..fields import BY_NAME, DELAY_KINDS
from . import names
from .aggregate import PROCESS_EXITS, TASK_EXITS, VALUE_FIELDS, Aggregator, Snapshot
from .health import Health

_Family = CounterMetricFamily | GaugeMetricFamily
_PER_BASE_UNIT = {"ns": 1e9, "us": 1e6, "bytes": 1, "count": 1}  # kernel units -> s, bytes
_DIV = tuple(_PER_BASE_UNIT[BY_NAME[n].unit] for n in VALUE_FIELDS)
_INDEX = {n: i for i, n in enumerate(VALUE_FIELDS)}
_KINDS = len(DELAY_KINDS)
# (family, label value, index into the values) of the per-cgroup counters past the delays
_CPU_IO = ((names.CPU, "user", _INDEX["ac_utime"]), (names.CPU, "system", _INDEX["ac_stime"]),
           (names.IO, "read", _INDEX["read_bytes"]), (names.IO, "write", _INDEX["write_bytes"]))


def _family(m: names.Metric, value: float | None = None) -> _Family:
    kind = CounterMetricFamily if m.type == "counter" else GaugeMetricFamily
    if value is not None:
        return kind(m.name, m.help, value=value)
    return kind(m.name, m.help, labels=m.labels)


class TaskstatsCollector(Collector):
    """Metrics of ``aggregator`` plus the loss counters ``health()`` returns."""

    def __init__(self, aggregator: Aggregator,
                 health: Callable[[], Health] | None = None) -> None:
        self.aggregator, self.health = aggregator, health

    def describe(self) -> list[Metric]:
        """Nothing: registering must not collect."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family, built from one snapshot; last, how long that took (s)."""
        start = time.perf_counter()
        snap = self.aggregator.snapshot()
        yield from _delays(snap)
        yield from _per_cgroup(snap)
        if self.health is not None:
            yield from _health(self.health())
        yield from _internal(snap)
        yield _family(names.SCRAPE_DURATION, time.perf_counter() - start)


def _delays(snap: Snapshot) -> Iterator[Metric]:
    cgroups = [(label, totals) for label, (totals, _) in sorted(snap.cgroups.items())]
    for seconds, count, rows in ((names.DELAY_SECONDS, names.DELAYS, cgroups),
                                 (names.GROUP_DELAY_SECONDS, names.GROUP_DELAYS,
                                  sorted(snap.groups.items()))):
        fs, fc = _family(seconds), _family(count)
        for label, values in rows:
            for i, kind in enumerate(DELAY_KINDS):
                fs.add_metric([label, kind], values[i] / _DIV[i])
                fc.add_metric([label, kind], values[_KINDS + i])
        yield fs
        yield fc
    fm = _family(names.DELAY_MAX)
    for label, (_, maxima) in sorted(snap.cgroups.items()):
        for kind, value in zip(DELAY_KINDS, maxima, strict=True):
            if value is not None:
                fm.add_metric([label, kind], value / 1e9)
    yield fm
    yield _labelled(names.IMPLAUSIBLE, snap.implausible)


def _per_cgroup(snap: Snapshot) -> Iterator[Metric]:
    families = {m: _family(m) for m in (names.CPU, names.IO, names.TASK_EXITS,
                                        names.PROCESS_EXITS)}
    for label, (totals, _) in sorted(snap.cgroups.items()):
        for m, which, i in _CPU_IO:
            families[m].add_metric([label, which], totals[i] / _DIV[i])
        families[names.TASK_EXITS].add_metric([label], totals[TASK_EXITS])
        families[names.PROCESS_EXITS].add_metric([label], totals[PROCESS_EXITS])
    yield from families.values()


def _labelled(m: names.Metric, values: dict[str, int]) -> Metric:
    family = _family(m)
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _health(h: Health) -> Iterator[Metric]:
    yield _family(names.RECEIVED, h.received)
    yield _labelled(names.LOST, h.lost)
    yield _labelled(names.NETLINK_DROPPED, h.kernel_drops)
    yield _labelled(names.NETLINK_OVERRUNS, h.overruns)
    if h.journal_written is not None:
        yield _family(names.JOURNAL_WRITTEN, h.journal_written)
    if h.journal_dropped is not None:
        yield _labelled(names.JOURNAL_DROPPED, h.journal_dropped)
    if h.journal_suspended is not None:
        yield _family(names.JOURNAL_SUSPENDED, int(h.journal_suspended))
    if h.client_dropped is not None:
        yield _family(names.CLIENT_DROPPED, h.client_dropped)
    if h.samples is not None:
        for metric, value in zip((names.SAMPLES_TAKEN, names.SAMPLE_ROWS,
                                  names.SAMPLE_OVERRUNS), h.samples, strict=True):
            yield _family(metric, value)


def _internal(snap: Snapshot) -> Iterator[Metric]:
    yield _family(names.SERIES_DROPPED, snap.series_dropped)
    yield _family(names.REGRESSIONS, snap.regressions)
    yield _family(names.LIVE_TASKS, snap.live_tasks)
    yield _family(names.SAMPLE_SECONDS, snap.sample_seconds)
    yield _family(names.SCRAPE_ERRORS, snap.sample_errors)
    yield _family(names.UP, int(snap.sample_ok))
    info = _family(names.BUILD_INFO)
    version = "unknown" if snap.struct_version is None else str(snap.struct_version)
    info.add_metric([__version__, version], 1)
    yield info

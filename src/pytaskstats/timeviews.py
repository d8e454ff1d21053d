"""Typed properties for the time fields of the table (GENERATED from
``fields.TIME_FIELDS`` by ``fields.time_views_source()``: do not edit; a test
compares).  Mixins of :class:`pytaskstats.records.Seconds` and ``Durations``."""

from __future__ import annotations

from datetime import timedelta

__all__ = ["DurationProperties", "SecondsProperties"]


class SecondsProperties:
    """One property per time field: its value in seconds; None if absent."""

    __slots__ = ()

    def _seconds(self, name: str) -> float | None:
        raise NotImplementedError

    @property
    def cpu_delay_total(self) -> float | None:
        """time runnable, waiting for a CPU (ns)."""
        return self._seconds("cpu_delay_total")

    @property
    def blkio_delay_total(self) -> float | None:
        """time waiting for block I/O (ns)."""
        return self._seconds("blkio_delay_total")

    @property
    def swapin_delay_total(self) -> float | None:
        """time waiting for swap-in (ns)."""
        return self._seconds("swapin_delay_total")

    @property
    def cpu_run_real_total(self) -> float | None:
        """CPU time (utime+stime) (ns)."""
        return self._seconds("cpu_run_real_total")

    @property
    def cpu_run_virtual_total(self) -> float | None:
        """CPU time (sum_exec_runtime) (ns)."""
        return self._seconds("cpu_run_virtual_total")

    @property
    def ac_btime(self) -> float | None:
        """begin time since the epoch (32-bit) (s)."""
        return self._seconds("ac_btime")

    @property
    def ac_etime(self) -> float | None:
        """elapsed time since the task began (us)."""
        return self._seconds("ac_etime")

    @property
    def ac_utime(self) -> float | None:
        """user CPU time (us)."""
        return self._seconds("ac_utime")

    @property
    def ac_stime(self) -> float | None:
        """system CPU time (us)."""
        return self._seconds("ac_stime")

    @property
    def ac_utimescaled(self) -> float | None:
        """user CPU time, frequency scaled (us)."""
        return self._seconds("ac_utimescaled")

    @property
    def ac_stimescaled(self) -> float | None:
        """system CPU time, frequency scaled (us)."""
        return self._seconds("ac_stimescaled")

    @property
    def cpu_scaled_run_real_total(self) -> float | None:
        """scaled CPU time (ns)."""
        return self._seconds("cpu_scaled_run_real_total")

    @property
    def freepages_delay_total(self) -> float | None:
        """time in memory reclaim (ns)."""
        return self._seconds("freepages_delay_total")

    @property
    def thrashing_delay_total(self) -> float | None:
        """time thrashing (ns)."""
        return self._seconds("thrashing_delay_total")

    @property
    def ac_btime64(self) -> float | None:
        """begin time since the epoch (64-bit) (s)."""
        return self._seconds("ac_btime64")

    @property
    def compact_delay_total(self) -> float | None:
        """time in direct compaction (ns)."""
        return self._seconds("compact_delay_total")

    @property
    def ac_tgetime(self) -> float | None:
        """elapsed time of the thread group (us)."""
        return self._seconds("ac_tgetime")

    @property
    def wpcopy_delay_total(self) -> float | None:
        """time in write-protect copy (ns)."""
        return self._seconds("wpcopy_delay_total")

    @property
    def irq_delay_total(self) -> float | None:
        """IRQ/softirq time charged (ns)."""
        return self._seconds("irq_delay_total")

    @property
    def cpu_delay_max(self) -> float | None:
        """longest CPU wait (ns)."""
        return self._seconds("cpu_delay_max")

    @property
    def cpu_delay_min(self) -> float | None:
        """shortest CPU wait (0: none) (ns)."""
        return self._seconds("cpu_delay_min")

    @property
    def blkio_delay_max(self) -> float | None:
        """longest block I/O wait (ns)."""
        return self._seconds("blkio_delay_max")

    @property
    def blkio_delay_min(self) -> float | None:
        """shortest block I/O wait (ns)."""
        return self._seconds("blkio_delay_min")

    @property
    def swapin_delay_max(self) -> float | None:
        """longest swap-in wait (ns)."""
        return self._seconds("swapin_delay_max")

    @property
    def swapin_delay_min(self) -> float | None:
        """shortest swap-in wait (ns)."""
        return self._seconds("swapin_delay_min")

    @property
    def freepages_delay_max(self) -> float | None:
        """longest reclaim wait (ns)."""
        return self._seconds("freepages_delay_max")

    @property
    def freepages_delay_min(self) -> float | None:
        """shortest reclaim wait (ns)."""
        return self._seconds("freepages_delay_min")

    @property
    def thrashing_delay_max(self) -> float | None:
        """longest thrashing wait (ns)."""
        return self._seconds("thrashing_delay_max")

    @property
    def thrashing_delay_min(self) -> float | None:
        """shortest thrashing wait (ns)."""
        return self._seconds("thrashing_delay_min")

    @property
    def compact_delay_max(self) -> float | None:
        """longest compaction wait (ns)."""
        return self._seconds("compact_delay_max")

    @property
    def compact_delay_min(self) -> float | None:
        """shortest compaction wait (ns)."""
        return self._seconds("compact_delay_min")

    @property
    def wpcopy_delay_max(self) -> float | None:
        """longest write-protect copy (ns)."""
        return self._seconds("wpcopy_delay_max")

    @property
    def wpcopy_delay_min(self) -> float | None:
        """shortest write-protect copy (ns)."""
        return self._seconds("wpcopy_delay_min")

    @property
    def irq_delay_max(self) -> float | None:
        """longest IRQ episode (ns)."""
        return self._seconds("irq_delay_max")

    @property
    def irq_delay_min(self) -> float | None:
        """shortest IRQ episode (ns)."""
        return self._seconds("irq_delay_min")


class DurationProperties:
    """One property per time field: its value as a timedelta (us resolution); None if absent."""

    __slots__ = ()

    def _duration(self, name: str) -> timedelta | None:
        raise NotImplementedError

    @property
    def cpu_delay_total(self) -> timedelta | None:
        """time runnable, waiting for a CPU (ns)."""
        return self._duration("cpu_delay_total")

    @property
    def blkio_delay_total(self) -> timedelta | None:
        """time waiting for block I/O (ns)."""
        return self._duration("blkio_delay_total")

    @property
    def swapin_delay_total(self) -> timedelta | None:
        """time waiting for swap-in (ns)."""
        return self._duration("swapin_delay_total")

    @property
    def cpu_run_real_total(self) -> timedelta | None:
        """CPU time (utime+stime) (ns)."""
        return self._duration("cpu_run_real_total")

    @property
    def cpu_run_virtual_total(self) -> timedelta | None:
        """CPU time (sum_exec_runtime) (ns)."""
        return self._duration("cpu_run_virtual_total")

    @property
    def ac_btime(self) -> timedelta | None:
        """begin time since the epoch (32-bit) (s)."""
        return self._duration("ac_btime")

    @property
    def ac_etime(self) -> timedelta | None:
        """elapsed time since the task began (us)."""
        return self._duration("ac_etime")

    @property
    def ac_utime(self) -> timedelta | None:
        """user CPU time (us)."""
        return self._duration("ac_utime")

    @property
    def ac_stime(self) -> timedelta | None:
        """system CPU time (us)."""
        return self._duration("ac_stime")

    @property
    def ac_utimescaled(self) -> timedelta | None:
        """user CPU time, frequency scaled (us)."""
        return self._duration("ac_utimescaled")

    @property
    def ac_stimescaled(self) -> timedelta | None:
        """system CPU time, frequency scaled (us)."""
        return self._duration("ac_stimescaled")

    @property
    def cpu_scaled_run_real_total(self) -> timedelta | None:
        """scaled CPU time (ns)."""
        return self._duration("cpu_scaled_run_real_total")

    @property
    def freepages_delay_total(self) -> timedelta | None:
        """time in memory reclaim (ns)."""
        return self._duration("freepages_delay_total")

    @property
    def thrashing_delay_total(self) -> timedelta | None:
        """time thrashing (ns)."""
        return self._duration("thrashing_delay_total")

    @property
    def ac_btime64(self) -> timedelta | None:
        """begin time since the epoch (64-bit) (s)."""
        return self._duration("ac_btime64")

    @property
    def compact_delay_total(self) -> timedelta | None:
        """time in direct compaction (ns)."""
        return self._duration("compact_delay_total")

    @property
    def ac_tgetime(self) -> timedelta | None:
        """elapsed time of the thread group (us)."""
        return self._duration("ac_tgetime")

    @property
    def wpcopy_delay_total(self) -> timedelta | None:
        """time in write-protect copy (ns)."""
        return self._duration("wpcopy_delay_total")

    @property
    def irq_delay_total(self) -> timedelta | None:
        """IRQ/softirq time charged (ns)."""
        return self._duration("irq_delay_total")

    @property
    def cpu_delay_max(self) -> timedelta | None:
        """longest CPU wait (ns)."""
        return self._duration("cpu_delay_max")

    @property
    def cpu_delay_min(self) -> timedelta | None:
        """shortest CPU wait (0: none) (ns)."""
        return self._duration("cpu_delay_min")

    @property
    def blkio_delay_max(self) -> timedelta | None:
        """longest block I/O wait (ns)."""
        return self._duration("blkio_delay_max")

    @property
    def blkio_delay_min(self) -> timedelta | None:
        """shortest block I/O wait (ns)."""
        return self._duration("blkio_delay_min")

    @property
    def swapin_delay_max(self) -> timedelta | None:
        """longest swap-in wait (ns)."""
        return self._duration("swapin_delay_max")

    @property
    def swapin_delay_min(self) -> timedelta | None:
        """shortest swap-in wait (ns)."""
        return self._duration("swapin_delay_min")

    @property
    def freepages_delay_max(self) -> timedelta | None:
        """longest reclaim wait (ns)."""
        return self._duration("freepages_delay_max")

    @property
    def freepages_delay_min(self) -> timedelta | None:
        """shortest reclaim wait (ns)."""
        return self._duration("freepages_delay_min")

    @property
    def thrashing_delay_max(self) -> timedelta | None:
        """longest thrashing wait (ns)."""
        return self._duration("thrashing_delay_max")

    @property
    def thrashing_delay_min(self) -> timedelta | None:
        """shortest thrashing wait (ns)."""
        return self._duration("thrashing_delay_min")

    @property
    def compact_delay_max(self) -> timedelta | None:
        """longest compaction wait (ns)."""
        return self._duration("compact_delay_max")

    @property
    def compact_delay_min(self) -> timedelta | None:
        """shortest compaction wait (ns)."""
        return self._duration("compact_delay_min")

    @property
    def wpcopy_delay_max(self) -> timedelta | None:
        """longest write-protect copy (ns)."""
        return self._duration("wpcopy_delay_max")

    @property
    def wpcopy_delay_min(self) -> timedelta | None:
        """shortest write-protect copy (ns)."""
        return self._duration("wpcopy_delay_min")

    @property
    def irq_delay_max(self) -> timedelta | None:
        """longest IRQ episode (ns)."""
        return self._duration("irq_delay_max")

    @property
    def irq_delay_min(self) -> timedelta | None:
        """shortest IRQ episode (ns)."""
        return self._duration("irq_delay_min")

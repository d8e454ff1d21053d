"""Prometheus metrics: per-cgroup and per-command-group delays, CPU, IO and exits.

:mod:`.aggregate` is the model (pure: records in, a snapshot out), :mod:`.live` samples
running tasks, :mod:`.health` gathers the loss counters, :mod:`.names` lists every metric
with its HELP text (docs/metrics.md is rendered from it).  :mod:`.collector`,
:mod:`.server` and :mod:`.service` need the ``exporter`` extra (prometheus-client);
importing this package does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import TaskstatsError

if TYPE_CHECKING:
    from ..backends import YieldsExits
    from .health import DaemonCounters, MetricsSettings
    from .service import DaemonMetrics

EXTRA_NOTE = "the metrics endpoint needs prometheus-client: pip install 'pytaskstats[exporter]'"


def extra_missing(err: ImportError) -> bool:
    """Whether ``err`` says that prometheus-client is not installed."""
    return (err.name or "").partition(".")[0] == "prometheus_client"


def start_for_daemon(settings: MetricsSettings, listener: YieldsExits | None,
                     counters: Callable[[], DaemonCounters]) -> DaemonMetrics:
    """taskstatsd's /metrics endpoint and live sampler, started (see
    :class:`~.service.DaemonMetrics`)."""
    try:
        from .service import DaemonMetrics  # noqa: PLC0415 - prometheus-client is optional
    except ImportError as err:
        if not extra_missing(err):
            raise
        raise TaskstatsError(EXTRA_NOTE) from err
    return DaemonMetrics(settings, listener, counters)

"""An aggregator served over HTTP, and taskstatsd's metrics built on it."""

from __future__ import annotations

import errno
from collections.abc import Callable
from functools import partial

from prometheus_client import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from ..backends import YieldsExits
from ..client import Client
from ..errors import TaskstatsError
from ..procfs import cgroup_path
from ..records import ExitRecord, Lost
from .aggregate import Aggregator, parse_groups
from .collector import TaskstatsCollector
from .health import DaemonCounters, Health, LossTracker, MetricsSettings, daemon_health
from .live import Sampler, SamplerThread
from .server import MetricsServer

# what to do when the listening socket cannot be had, by errno
_LISTEN_ADVICE = {
    errno.EADDRINUSE: "something else listens there: give another port (0: any free one)",
    errno.EADDRNOTAVAIL: "not an address of this machine: give one of its addresses, or a "
                         "bare PORT for 127.0.0.1",
    errno.EACCES: "ports below 1024 need root (CAP_NET_BIND_SERVICE): give a port from 1024",
}


class MetricsService:
    """``aggregator`` (and ``health``) on a private registry, served at ``listen``,
    with the serving process's own metrics (prometheus_client's ``process_*``: CPU
    seconds, resident and virtual memory, open and max fds, start time)."""

    def __init__(self, aggregator: Aggregator, listen: str,
                 health: Callable[[], Health] | None = None) -> None:
        self.aggregator = aggregator
        self.registry = CollectorRegistry()
        self.registry.register(TaskstatsCollector(aggregator, health))
        ProcessCollector(registry=self.registry)
        try:
            self.server = MetricsServer(self.registry, listen)
        except ValueError as err:
            raise TaskstatsError(str(err)) from err
        except OSError as err:
            todo = _LISTEN_ADVICE.get(err.errno or 0, "")
            raise TaskstatsError(f"cannot serve metrics on {listen}: {err.strerror}"
                                 f"{': ' + todo if todo else ''}") from err

    @property
    def url(self) -> str:
        """The endpoint's URL."""
        return self.server.url

    def close(self) -> None:
        """Stop serving."""
        self.server.close()


class DaemonMetrics:
    """taskstatsd's endpoint: exits from its loop, live samples from a thread with a
    kernel socket of its own, the kernel drops of its ``listener`` (None: not a
    kernel listener), and its loss and journal counters from ``counters``."""

    def __init__(self, settings: MetricsSettings, listener: YieldsExits | None,
                 counters: Callable[[], DaemonCounters]) -> None:
        self.tracker = LossTracker()
        groups = parse_groups(g.strip() for g in settings.groups.split(",") if g.strip())
        self.aggregator = Aggregator(depth=settings.cgroup_depth,
                                     max_series=settings.max_series, groups=groups,
                                     resolve=cgroup_path)
        self.client = Client("kernel")
        try:
            self.service = MetricsService(self.aggregator, settings.listen,
                                          partial(daemon_health, self.tracker, listener,
                                                  counters))
        except BaseException:
            self.client.close()
            raise
        self.sampler = SamplerThread(Sampler(self.aggregator, self.client.pids),
                                     settings.interval_s)
        self.sampler.start()

    @property
    def url(self) -> str:
        """The endpoint's URL."""
        return self.service.url

    def on_exit(self, record: ExitRecord, cgroup: str | None) -> None:
        """An exit the daemon received (``cgroup``: the path it found, if any)."""
        self.aggregator.on_exit(record, cgroup)

    def on_lost(self, lost: Lost) -> None:
        """Exit records the daemon lost."""
        self.tracker.on_lost(lost)

    def close(self) -> None:
        """Stop sampling and serving."""
        self.sampler.stop()
        self.service.close()
        self.client.close()

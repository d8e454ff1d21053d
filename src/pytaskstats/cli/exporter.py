"""``taskstats exporter``: Prometheus metrics without taskstatsd.

Exits come from an exit listener (the kernel's, or taskstatsd's with the daemon
backend); running tasks are sampled every ``--interval`` seconds by a bulk query.
One thread does both; the HTTP server answers scrapes from its own thread.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from ..birthcgroups import BirthWatch
from ..errors import Unsupported
from ..listener import Listener
from ..metrics import EXTRA_NOTE, extra_missing
from ..metrics.address import parse_listen
from ..metrics.aggregate import Aggregator, parse_groups
from ..metrics.health import LossTracker
from ..metrics.live import Sampler
from ..procfs import cgroup_path
from ..records import ExitRecord
from .args import bounded_arg, seconds_arg
from .common import open_client

if TYPE_CHECKING:
    from ..metrics.service import MetricsService

DEFAULT_LISTEN = "127.0.0.1:9466"


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("exporter", help="serve Prometheus metrics (without taskstatsd)",
                       description="Serve /metrics: delays, CPU, IO and exits per cgroup and "
                       "command group, counting every exited task, plus loss counters. Needs "
                       "the exporter extra (prometheus-client). See docs/metrics.md.")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT", type=_listen_arg,
                   help=f"where to serve (default {DEFAULT_LISTEN}; a bare PORT means "
                   "127.0.0.1; port 0 picks a free one)")
    p.add_argument("--interval", type=seconds_arg(0.1, 86400), default=15.0, metavar="S",
                   help="seconds between live task samples (default 15, 0.1 to 86400)")
    p.add_argument("--group", action="append", default=[], metavar="NAME=REGEX",
                   help="command group: tasks whose comm matches REGEX (first match wins; "
                   "others are \"other\"); repeatable")
    p.add_argument("--cgroup-depth", type=bounded_arg(0, 64), default=3, metavar="N",
                   help="cgroup labels keep N path components (default 3, at most 64)")
    p.add_argument("--max-series", type=bounded_arg(1, 1 << 20), default=500, metavar="N",
                   help="at most N cgroup labels; the rest count as \"other\" (default 500)")
    p.set_defaults(func=run)


def _listen_arg(text: str) -> str:
    """``--listen``, checked as the server will read it."""
    try:
        parse_listen(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give ADDR:PORT, [V6ADDR]:PORT or PORT (0 to 65535)") from None
    return text


class _Stop(Exception):
    """SIGTERM arrived."""


def _stop(*_: object) -> None:
    raise _Stop


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C."""
    try:
        from ..metrics.service import MetricsService  # noqa: PLC0415 - optional dependency
    except ImportError as err:
        if not extra_missing(err):
            raise
        print(f"taskstats: {EXTRA_NOTE}", file=sys.stderr)
        return 1
    try:
        aggregator = Aggregator(depth=args.cgroup_depth, max_series=args.max_series,
                                groups=parse_groups(args.group), resolve=cgroup_path)
    except ValueError as err:
        print(f"taskstats: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    with contextlib.suppress(_Stop):
        _serve(args, aggregator, MetricsService)
    return 0


def _serve(args: argparse.Namespace, aggregator: Aggregator,
           service_type: type[MetricsService]) -> None:
    tracker = LossTracker()
    with open_client(args, exits=True) as client, client.listen(per_cpu=True) as listener:
        # unprivileged via taskstatsd: only this user's tasks may be queried
        uid = None if client.backend == "kernel" or os.geteuid() == 0 else os.geteuid()
        sampler = Sampler(aggregator, client.pids, uid=uid)
        sampler.sample()
        service = service_type(aggregator, args.listen, lambda: tracker.health(listener))
        watch = _birth_watch(client.backend)  # before we say we serve
        source = ("the kernel" if client.backend == "kernel"
                  else f"taskstatsd at {client.socket_path}")
        print(f"taskstats exporter: serving {service.url}; exits from {source} "
              f"({client.backend_reason}), live tasks every {args.interval:g}s",
              file=sys.stderr, flush=True)
        try:
            _loop(listener, aggregator, tracker, sampler, args.interval, watch=watch)
        finally:
            service.close()
            if watch is not None:
                watch.close()


def _birth_watch(backend: str) -> BirthWatch | None:
    """Cgroups learned at birth when reading the kernel's exits (privileged), so that
    short-lived tasks are attributed; None where the proc connector is not ours."""
    if backend != "kernel":
        return None
    try:
        return BirthWatch()
    except Unsupported:
        return None


def _loop(listener: Listener, aggregator: Aggregator, tracker: LossTracker, sampler: Sampler,
          interval: float, *, watch: BirthWatch | None = None) -> None:
    due = time.monotonic() + interval
    while True:
        for event in listener.poll(max(0.0, due - time.monotonic())):
            if isinstance(event, ExitRecord):
                tracker.on_exit()
                aggregator.on_exit(event, None if watch is None else watch.at_exit(event))
            else:
                tracker.on_lost(event)
        if time.monotonic() >= due:
            sampler.sample()
            due = max(due + interval, time.monotonic())


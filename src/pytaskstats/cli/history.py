"""``taskstats history``: the exit journal of taskstatsd, filtered, grouped, sorted."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from .. import delayacct, report
from ..client import Client
from ..daemon import protocol
from .common import human_duration, open_client, print_json

REPORT_SINCE_S = 86400  # --report without --since: the last day

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now_ns: int) -> int:
    """"90s", "15m", "2h", "1d" ago, or seconds since the epoch -> ns since the epoch."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match:
        return now_ns - int(float(match[1]) * _UNITS[match[2]] * 1e9)
    try:
        return int(float(text) * 1e9)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give an age like 15m, 2h, 1d or seconds since the epoch") from None


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("history", help="query taskstatsd's exit journal",
                       description="Exit records journaled by taskstatsd. Non-root users see "
                       "their own. Times are ages (15m, 2h, 1d) or epoch seconds.")
    p.add_argument("--since", help="from this time (e.g. 1h)")
    p.add_argument("--until", help="up to this time")
    p.add_argument("--comm", help="command name")
    p.add_argument("--uid", type=int)
    p.add_argument("--pid", type=int)
    p.add_argument("--cgroup", help="cgroup path")
    p.add_argument("--group-by", choices=("comm", "uid", "cgroup"))
    p.add_argument("--sort", help="any field name, '-' first for descending (e.g. "
                   "-blkio_delay_total)")
    p.add_argument("--limit", type=int)
    p.add_argument("--totals", action="store_true", help="one line of sums")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per record (kernel field names)")
    p.add_argument("--report", metavar="FILE.html",
                   help="write an HTML report of the range instead (default --since 1d): "
                   "exits and delays per minute, top commands and cgroups by each wait")
    p.set_defaults(func=run)


def params(args: argparse.Namespace, now_ns: int) -> dict[str, Any]:
    """The request parameters from the options."""
    out: dict[str, Any] = {}
    if args.since:
        out["since_ns"] = parse_when(args.since, now_ns)
    if args.until:
        out["until_ns"] = parse_when(args.until, now_ns)
    for key in ("comm", "uid", "pid", "cgroup", "group_by", "sort", "limit"):
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    if args.totals:
        out["totals"] = True
    return out


def format_row(row: dict[str, Any]) -> str:
    """One journal row (or group) as a readable line."""
    def secs(key: str, scale: float) -> str:
        value = row.get(key)
        return "-" if value is None else human_duration(value * scale)
    head = (f"{row['exits']:>6} exits {row.get('key', '')!s:<24}" if "exits" in row else
            f"{time.strftime('%F %T', time.localtime(row['time_ns'] / 1e9))} "
            f"pid {row.get('pid')} {row.get('ac_comm') or '?':<16}")
    left = (f" (implausible delays left out: {row['implausible']} exits)"
            if row.get("implausible") else "")
    return (f"{head} user {secs('ac_utime', 1e-6)} sys {secs('ac_stime', 1e-6)} "
            f"cpuwait {secs('cpu_delay_total', 1e-9)} iowait {secs('blkio_delay_total', 1e-9)}"
            f"{left}")


def run(args: argparse.Namespace) -> int:
    """Ask the daemon and print (or write the report)."""
    if args.report:
        return write_report(args)
    with open_client(args, backend="daemon") as client:
        rows = client.daemon_request(protocol.CMD_HISTORY, params(args, time.time_ns()))
    for row in rows:
        if args.json:
            print_json(row)
        else:
            print(format_row(row))
    return 0


def write_report(args: argparse.Namespace) -> int:
    """``--report FILE``: ask for per-bucket sums, groups and totals; write the page."""
    clash = [opt for opt, value in (("--group-by", args.group_by), ("--sort", args.sort),
                                    ("--limit", args.limit), ("--totals", args.totals),
                                    ("--json", args.json)) if value]
    if clash:
        print(f"taskstats history: --report does not combine with {', '.join(clash)}",
              file=sys.stderr)
        return 2
    now = time.time_ns()
    base = params(args, now)
    since = base.setdefault("since_ns", now - REPORT_SINCE_S * 1_000_000_000)
    until = base.setdefault("until_ns", now)
    if until <= since:
        print("taskstats history: --until must be later than --since", file=sys.stderr)
        return 2
    bucket = report.choose_bucket((until - since) / 1e9)
    base["plausible"] = True
    fields = list(report.GROUP_FIELDS)
    with open_client(args, backend="daemon") as client:
        data = report.HistoryReport(
            since, until, bucket,
            tuple(_ask(client, base, bucket_s=bucket, fields=list(report.BUCKET_FIELDS))),
            tuple(_ask(client, base, group_by="comm", fields=fields)),
            tuple(_ask(client, base, group_by="cgroup", fields=fields)),
            _ask(client, base, fields=fields)[0], delayacct.status(),
            tuple((k, str(getattr(args, k))) for k in ("comm", "uid", "pid", "cgroup")
                  if getattr(args, k) is not None),
            whole_range=args.since is not None)
    try:
        report.save(args.report, report.render_history(data))
    except OSError as err:
        print(f"taskstats history: cannot write {args.report}: {err.strerror}",
              file=sys.stderr)
        return 1
    print(f"taskstats history: report written to {args.report}", file=sys.stderr)
    return 0


def _ask(client: Client, base: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client.daemon_request(protocol.CMD_HISTORY,
                                                       {**base, **extra})
    return rows

"""``taskstats history``: taskstatsd's journal of exits and of samples of live
processes, filtered, grouped, sorted."""

from __future__ import annotations

import argparse
import json
import pwd
import sys
import time
from typing import Any, cast

from .. import delayacct, report
from ..client import Client
from ..extproto import AGGREGATES, EXIT_SORTS, GROUP_KEYS, SAMPLE_KEYS, HistoryQuery, Rows
from ..fields import DELAY_KINDS
from ..report.critical import critical_path
from ..report.trace import build_trace
from ..textfmt import human_duration, shown
from ..top.replayframe import exit_record
from .args import (
    WHEN_FORMS,
    id_arg,
    output_file_arg,
    positive_arg,
    printable,
    text_arg,
    trace_file_arg,
    uid_arg,
    when_arg,
    when_text_arg,
)
from .common import cannot_write, open_client, print_json

REPORT_SINCE_S = 86400  # --report without --since: the last day
TRACE_SINCE_S = 3600  # --trace without --since: the last hour


def parse_when(text: str, now_ns: int) -> int:
    """A --since/--until value as ns since the epoch (see args.WHEN_FORMS)."""
    return when_arg(text, now_ns)


def sort_arg(text: str) -> str:
    """A field name, "-" first for descending: exit fields, or group sums and keys."""
    name = text.removeprefix("-")
    if name not in {*EXIT_SORTS, *AGGREGATES, "exits", "samples", *GROUP_KEYS.values(),
                    *SAMPLE_KEYS} - {"kind", "comm", "running"}:
        raise argparse.ArgumentTypeError(
            f"{text!r}: not a field; give a field name such as blkio_delay_total, ac_etime "
            "or time_ns ('-' first sorts descending; with --group-by also exits)")
    return text


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("history", help="query taskstatsd's journal of exits and samples",
                       description="Exit records journaled by taskstatsd, and samples of "
                       "live processes (what each busy process did in each interval: "
                       "sample_interval_s). Sums count every task once. Users other than "
                       "root and its admin_group see only their own. "
                       f"Times: {WHEN_FORMS}.")
    p.add_argument("--since", metavar="WHEN", type=when_text_arg,
                   help="from this time (e.g. 1h, yesterday, 2026-12-05T14:30)")
    p.add_argument("--until", metavar="WHEN", type=when_text_arg,
                   help="up to this time (default: now)")
    p.add_argument("--at", metavar="WHEN", type=when_text_arg,
                   help="what ran around this time (the sample interval holding it, and "
                   "the exits in it) and what it waited on; not with --since/--until")
    p.add_argument("--kind", choices=("exit", "sample"),
                   help="exit records or samples of live processes only (default: both)")
    p.add_argument("--comm", type=text_arg(255), help="command name (exact)")
    p.add_argument("--uid", type=uid_arg, metavar="USER", help="user name or uid")
    p.add_argument("--pid", type=id_arg, help="task id")
    p.add_argument("--cgroup", metavar="PATH", type=text_arg(4096),
                   help="cgroup path as /proc shows it (/system.slice/x.service): it and "
                   "those below it")
    p.add_argument("--group-by", choices=tuple(GROUP_KEYS),
                   help="one line per command name, user or cgroup, with sums")
    p.add_argument("--sort", metavar="[-]FIELD", type=sort_arg,
                   help="any field name, '-' first for descending (e.g. --sort "
                   "-blkio_delay_total); with --group-by also exits")
    p.add_argument("--limit", type=positive_arg, metavar="N", help="at most N lines")
    p.add_argument("--totals", action="store_true", help="one line of sums")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per record (kernel field names)")
    p.add_argument("--report", metavar="FILE.html", type=output_file_arg,
                   help="write an HTML report of the range instead (default --since 1d): "
                   "delays per minute, top commands and cgroups by each wait, of exited "
                   "and live processes")
    p.add_argument("--trace", metavar="FILE.json", type=trace_file_arg,
                   help="write the exits of the range (default --since 1h) as a Chrome trace "
                   "event file instead (open it in Perfetto UI or chrome://tracing): a track "
                   "per process under its parent, its accounting on its slice, counters, "
                   "the critical path")
    p.set_defaults(func=run)


def params(args: argparse.Namespace, now_ns: int) -> HistoryQuery:
    """The request parameters from the options."""
    out: dict[str, Any] = {}
    if args.since:
        out["since_ns"] = parse_when(args.since, now_ns)
    if args.until:
        out["until_ns"] = parse_when(args.until, now_ns)
    if getattr(args, "at", None):
        out["at_ns"] = parse_when(args.at, now_ns)
    for key in ("kind", "comm", "uid", "pid", "cgroup", "group_by", "sort", "limit"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    if args.totals:
        out["totals"] = True
    return cast(HistoryQuery, out)


def group_label(row: dict[str, Any], group_by: str | None) -> str:
    """The key of a group row as text: the command name, "uid 1000 (alice)" or the
    cgroup; "all" for the one row of --totals."""
    if group_by is None:
        return "all"
    key = row.get(GROUP_KEYS[group_by])
    if key is None:
        return "(unknown)"
    if group_by == "uid":
        try:
            return f"uid {key} ({pwd.getpwuid(int(key)).pw_name})"
        except (KeyError, ValueError, OverflowError):
            return f"uid {key}"
    return shown(str(key))  # a comm or a cgroup's name: any user may choose it


_OTHER_WAITS = tuple(k for k in DELAY_KINDS if k not in ("cpu", "blkio"))


def _head(row: dict[str, Any], group_by: str | None) -> str:
    """The start of a line: a group's counts and key, or a row's time and task."""
    if "exits" in row:
        samples = f" {row['samples']:>6} samples" if row.get("samples") else ""
        return f"{row['exits']:>6} exits{samples} {group_label(row, group_by):<24}"
    when = time.strftime("%F %T", time.localtime(row["time_ns"] / 1e9))
    if row.get("kind") == "sample":
        state = "running" if row.get("running") else "ended  "
        return (f"{when} tgid {row.get('tgid')} {shown(row.get('comm') or '?'):<16} {state} "
                f"{human_duration(row['interval_ns'] / 1e9):>6}")
    return f"{when} pid {row.get('pid')} {shown(row.get('ac_comm') or '?'):<16} exited"


def format_row(row: dict[str, Any], group_by: str | None = None) -> str:
    """One journal row (exit or sample, or a group, or the totals) as a readable line:
    CPU, CPU and IO wait, and the other waits that are not 0."""
    def secs(key: str, scale: float) -> str:
        value = row.get(key)
        return "-" if value is None else human_duration(value * scale)
    rows = "rows" if row.get("samples") else "exits"
    left = (f" (implausible delays left out: {row['implausible']} {rows})"
            if row.get("implausible") else "")
    others = "".join(f" {kind}wait {secs(f'{kind}_delay_total', 1e-9)}"
                     for kind in _OTHER_WAITS if row.get(f"{kind}_delay_total"))
    return (f"{_head(row, group_by)} user {secs('ac_utime', 1e-6)} "
            f"sys {secs('ac_stime', 1e-6)} cpuwait {secs('cpu_delay_total', 1e-9)} "
            f"iowait {secs('blkio_delay_total', 1e-9)}{others}{left}")


def run(args: argparse.Namespace) -> int:
    """Ask the daemon and print (or write the report)."""
    if args.report and args.trace:
        print("taskstats history: --report and --trace each write a file: give one",
              file=sys.stderr)
        return 2
    if args.report:
        return write_report(args)
    if args.trace:
        return write_trace(args)
    query = params(args, time.time_ns())
    if query.get("until_ns", 1 << 63) <= query.get("since_ns", -1):
        print("taskstats history: --until must be later than --since", file=sys.stderr)
        return 2
    clash = _clash(args)
    if clash:
        print(f"taskstats history: {clash} (see 'taskstats history --help')", file=sys.stderr)
        return 2
    with open_client(args, backend="daemon") as client:
        rows = client.history(**query)
    for row in rows:
        if args.json:
            print_json(row)
        else:
            print(format_row(row, args.group_by))
    _say_note(rows)
    if not rows or (args.totals and not (rows[0].get("exits") or rows[0].get("samples"))):
        print(f"taskstats history: no rows match ({describe_filter(args)})",
              file=sys.stderr)
    return 0


def _clash(args: argparse.Namespace) -> str:
    """Options that do not go together, said as the user can fix it; "" when fine."""
    if args.at and (args.since or args.until):
        return "--at is a moment: drop --since/--until (or drop --at for a range)"
    if args.totals and args.group_by:
        return ("--totals sums every exit into one line: drop --group-by, or drop --totals "
                "for one line per group")
    if args.sort and args.sort.lstrip("-") == "exits" and not args.group_by:
        return "--sort exits counts exits per group: add --group-by comm|uid|cgroup"
    return ""


def describe_filter(args: argparse.Namespace) -> str:
    """The filter options as given, e.g. "--since 1h --comm make"; "no filter"."""
    given = [f"--{key.replace('_', '-')} {getattr(args, key)}"
             for key in ("since", "until", "at", "kind", "comm", "uid", "pid", "cgroup")
             if getattr(args, key, None) is not None]
    return " ".join(given) if given else "no filter: the journal holds no rows you may see"


def _range_query(args: argparse.Namespace, output: str, excluded: tuple[str, ...],
                 default_since_s: int) -> HistoryQuery | None:
    """The query of a file ``output`` (--report, --trace) over a time range (--since
    default_since_s ago, --until now by default); None after a usage error said why
    (an ``excluded`` option given, or an empty range).  ``until_ns`` is set only when
    --until was given."""
    clash = [opt for opt in excluded if getattr(args, opt[2:].replace("-", "_"))]
    if clash:
        print(f"taskstats history: {output} does not combine with {', '.join(clash)}",
              file=sys.stderr)
        return None
    now = time.time_ns()
    query = params(args, now)
    since = query.setdefault("since_ns", now - default_since_s * 1_000_000_000)
    if query.get("until_ns", now) <= since:
        print("taskstats history: --until must be later than --since", file=sys.stderr)
        return None
    return query


def write_report(args: argparse.Namespace) -> int:
    """``--report FILE``: ask for per-bucket sums, groups and totals; write the page."""
    base = _range_query(args, "--report", ("--group-by", "--sort", "--limit", "--totals",
                                           "--json", "--at"), REPORT_SINCE_S)
    if base is None:
        return 2
    since, until = base["since_ns"], base.setdefault("until_ns", time.time_ns())
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
        print(f"taskstats history: {cannot_write(args.report, err)}", file=sys.stderr)
        return 1
    if not (data.totals.get("exits") or data.totals.get("samples")):
        print(f"taskstats history: no rows match ({_range_filter(args, REPORT_SINCE_S)}): "
              "the report is empty", file=sys.stderr)
    print(f"taskstats history: report written to {printable(args.report)}", file=sys.stderr)
    return 0


def _range_filter(args: argparse.Namespace, default_since_s: int) -> str:
    """The filter as given, with the default --since said when it applied."""
    shown = describe_filter(args)
    if args.since is None:
        shown = ("" if shown.startswith("no filter") else f"{shown}, ") + (
            f"in the last {default_since_s // 3600}h (the default --since)")
    return shown


def write_trace(args: argparse.Namespace) -> int:
    """``--trace FILE``: the range's exit rows, oldest first, as a trace."""
    query = _range_query(args, "--trace", ("--group-by", "--sort", "--totals", "--json",
                                           "--at", "--kind"), TRACE_SINCE_S)
    if query is None:
        return 2
    since = query["since_ns"]
    query["kind"] = "exit"
    query["sort"] = "time_ns"
    with open_client(args, backend="daemon") as client:
        rows = _ask(client, query)
    records = [exit_record(row) for row in rows]
    origin = min((int(row["time_ns"]) for row in rows), default=since)
    exit_s = [(int(row["time_ns"]) - origin) / 1e9 for row in rows]
    command = ["taskstats", "history", *describe_filter(args).split()] if any(
        getattr(args, k, None) is not None for k in ("since", "until", "comm", "uid", "pid",
                                                      "cgroup")) else ["taskstats", "history"]
    data = report.build_run(command, None, max(exit_s, default=0.0), records, exit_s,
                            delayacct=delayacct.status(), started_ns=origin)
    doc = build_trace(data, critical_path(data.processes))
    try:
        report.save(args.trace, json.dumps(doc, separators=(",", ":")) + "\n")
    except OSError as err:
        print(f"taskstats history: {cannot_write(args.trace, err)}", file=sys.stderr)
        return 1
    if not rows:  # as a query that matches nothing says, with the filter
        print(f"taskstats history: no exits match ({_range_filter(args, TRACE_SINCE_S)})",
              file=sys.stderr)
    print(f"taskstats history: trace of {len(data.processes)} processes ({len(rows)} exits) "
          f"written to {printable(args.trace)}", file=sys.stderr)
    return 0


def _ask(client: Client, base: HistoryQuery, **extra: Any) -> Rows:
    rows = client.history(**{**base, **extra})
    _say_note(rows)
    return rows


def _say_note(rows: Rows) -> None:
    """The daemon's warning on an answer (e.g. that it cut the rows), on stderr."""
    if rows.note:
        print(f"taskstats history: {rows.note}", file=sys.stderr)

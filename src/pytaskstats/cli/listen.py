"""``taskstats listen``: stream every task exit (text, JSON lines or procacct lines)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, cast

from .. import delayacct
from ..client import Client
from ..errors import TaskstatsError
from ..listener import DEFAULT_MAX_WAIT_S
from ..records import ExitRecord, Lost, TaskStats
from ..textfmt import (
    delayacct_json,
    human_bytes,
    human_duration,
    json_atom,
    record_json,
    record_json_text,
    shown,
    wait_status,
)
from .args import bounded_arg, count_arg, cpulist_arg
from .common import json_line, open_client, print_json

MAX_WAIT_MS_MAX = 60_000


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("listen", help="stream every task exit",
                       description="Register an exit listener and print each exiting task's "
                       "record (and its thread group's record when the process ends). "
                       "Lost records are counted and reported, never silent.")
    p.add_argument("--cpus", metavar="MASK", type=cpulist_arg,
                   help="cpulist to listen on, e.g. 0-3,5 (default: all)")
    p.add_argument("--per-cpu", action="store_true",
                   help="one socket per CPU (each record then names its CPU)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per event")
    fmt.add_argument("--format", choices=("text", "procacct"), default="text",
                     help="procacct: the kernel's tools/accounting/procacct lines")
    p.add_argument("-n", "--count", type=count_arg, default=0, metavar="N",
                   help="stop after N exit records (default: run until interrupted)")
    p.add_argument("--max-wait-ms", type=bounded_arg(0, MAX_WAIT_MS_MAX),
                   default=round(DEFAULT_MAX_WAIT_S * 1000), metavar="MS",
                   help="when exits come fast, hold one back at most this long to print "
                   "it in a batch with the next (default %(default)s; 0: never)")
    p.set_defaults(func=run)


def _val(value: int | None) -> str:
    return "-" if value is None else str(value)


def procacct_line(stats: TaskStats) -> str:
    """A line in procacct's format; absent (pre-v12) values print as "-", not 0."""
    kind = "?" if stats.group_dead is None else ("P" if stats.group_dead else "T")
    cpu = None if stats.ac_utime is None or stats.ac_stime is None else (
        stats.ac_utime + stats.ac_stime)
    dev = "-" if stats.exe_major is None else f"{stats.exe_major}:{stats.exe_minor}"
    return (f"{kind} pid={_val(stats.ac_pid)} tgid={_val(stats.ac_tgid)} "
            f"uid={_val(stats.ac_uid)} wall={_val(stats.ac_etime)} "
            f"gwall={_val(stats.ac_tgetime)} cpu={_val(cpu)} vmpeak={_val(stats.hiwater_vm)} "
            f"rsspeak={_val(stats.hiwater_rss)} dev={dev} inode={_val(stats.ac_exe_inode)} "
            f"comm={shown(stats.ac_comm or '')}")


def _secs(stats: TaskStats, name: str) -> str:
    value = stats.seconds(name)
    return "-" if value is None else human_duration(value)


def text_line(rec: ExitRecord, delayacct_on: bool | None) -> str:
    """A readable one-line summary of an exit."""
    t = rec.task
    iowait = "n/a" if delayacct_on is False else _secs(t, "blkio_delay_total")
    rss = "-" if t.hiwater_rss is None else human_bytes(t.hiwater_rss * 1024)
    end = {True: " [process ended]", False: "", None: ""}[rec.ended_process]
    cpu = "" if rec.cpu is None else f" cpu={rec.cpu}"
    return (f"exit pid={rec.pid} tgid={_val(rec.tgid)} ppid={_val(t.ac_ppid)} "
            f"uid={_val(t.ac_uid)} comm={shown(str(t.ac_comm))}{cpu} "
            f"status={wait_status(t.ac_exitcode)} "
            f"wall={_secs(t, 'ac_etime')} user={_secs(t, 'ac_utime')} "
            f"sys={_secs(t, 'ac_stime')} cpuwait={_secs(t, 'cpu_delay_total')} "
            f"iowait={iowait} rss={rss}{end}")


def exit_json(rec: ExitRecord, delayacct_on: bool | None) -> dict[str, Any]:
    """An exit event as JSON: context, the task record and the group record."""
    return {"event": "exit", "pid": rec.pid, "tgid": rec.tgid, "cpu": rec.cpu,
            "ended_process": rec.ended_process, "task": record_json(rec.task, delayacct_on),
            "group": None if rec.group is None else record_json(rec.group, delayacct_on)}


def exit_json_text(rec: ExitRecord, delayacct_on: bool | None) -> str:
    """``exit_json(rec, delayacct_on)`` as one compact JSON line (without the newline),
    built directly: the same text the json module makes of it, a third of the cost."""
    group = "null" if rec.group is None else record_json_text(rec.group, delayacct_on)
    return (f'{{"event":"exit","pid":{json_atom(rec.pid)},"tgid":{json_atom(rec.tgid)},'
            f'"cpu":{json_atom(rec.cpu)},"ended_process":{json_atom(rec.ended_process)},'
            f'"task":{record_json_text(rec.task, delayacct_on)},"group":{group}}}')


def _line(event: ExitRecord | Lost, args: argparse.Namespace, state: bool | None) -> str:
    """What ``event`` prints on stdout ("" for nothing); a loss is also said on stderr."""
    if isinstance(event, Lost):
        print(f"taskstats: lost {event.records} exit records ({event.reason}, cpus "
              f"{event.cpus})", file=sys.stderr)
        return json_line({"event": "lost", **event._asdict()}) if args.json else ""
    if args.json:
        return exit_json_text(event, state) + "\n"
    if args.format == "procacct":
        return procacct_line(event.task) + "\n"
    return text_line(event, state) + "\n"


def scope_note(client: Client) -> str | None:
    """What taskstatsd's exit policy withholds from this (non-admin) user, when it
    withholds anything: a listener that sees only its own exits, or none, would
    otherwise wait in silence.  None with the kernel, for an admin, or when unknown."""
    if client.backend != "daemon":
        return None
    try:
        doc = cast(dict[str, Any], client.status())
    except TaskstatsError:
        return None
    me, policy = doc.get("client") or {}, doc.get("exit_policy") or {}
    if me.get("admin") is not False:
        return None
    if policy.get("non_admin_exits") == "own":
        return (f"taskstatsd sends you the exits of your own processes only (uid "
                f"{me.get('uid')}; its exit policy): root, or a member of its admin_group, "
                "sees every exit")
    if policy.get("non_admin_exits") == "none":
        why = f" ({policy['why']})" if policy.get("why") else ""
        return (f"taskstatsd sends you no exits: its exit policy is off{why}; root, or a "
                "member of its admin_group, sees them")
    return None


def run(args: argparse.Namespace) -> int:
    """Listen until interrupted (or ``--count`` exits), printing each event; the
    lines of one batch are written together and flushed once."""
    state = delayacct.status()
    seen = 0
    with open_client(args, exits=True) as client, client.listen(
            args.cpus, per_cpu=args.per_cpu, max_wait=args.max_wait_ms / 1000) as listener:
        if args.json:
            print_json({"event": "start", "delayacct": delayacct_json(state)})
            sys.stdout.flush()
        elif state is False:
            print(f"taskstats: note: {delayacct.OFF_NOTE}", file=sys.stderr)
        scope = scope_note(client)
        if scope:
            print(f"taskstats: note: {scope}", file=sys.stderr)
        for batch in listener.batches():
            lines = []
            for event in batch:
                lines.append(_line(event, args, state))
                seen += isinstance(event, ExitRecord)
                if args.count and seen >= args.count:
                    break
            sys.stdout.write("".join(lines))
            sys.stdout.flush()
            if args.count and seen >= args.count:
                break
    return 0

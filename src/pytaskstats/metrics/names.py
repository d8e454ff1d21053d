"""Every exported metric: name, type, labels and HELP text (rendered as docs/metrics.md).

Delay kinds are the kernel's field prefixes (fields.DELAY_KINDS); their meanings come
from the field table.
"""

from __future__ import annotations

from typing import NamedTuple

from ..fields import BY_NAME, DELAY_KINDS


class Metric(NamedTuple):
    """One metric family as exposed."""

    name: str
    type: str  # counter or gauge
    labels: tuple[str, ...]
    help: str


TASK_SECONDS = ("task-seconds summed over tasks (live and exited), not wall-clock: unlike "
                "PSI it grows by N per second while N tasks wait")
DELAY_SECONDS = Metric("taskstats_delay_seconds_total", "counter", ("cgroup", "kind"),
                       f"Time tasks spent waiting, by delay kind; {TASK_SECONDS}.")
DELAYS = Metric("taskstats_delays_total", "counter", ("cgroup", "kind"),
                "Delay episodes (the kernel's KIND_count), live and exited tasks.")
GROUP_DELAY_SECONDS = Metric("taskstats_group_delay_seconds_total", "counter",
                             ("group", "kind"), "Time tasks spent waiting, by command group "
                             f"and delay kind; {TASK_SECONDS}.")
GROUP_DELAYS = Metric("taskstats_group_delays_total", "counter", ("group", "kind"),
                      "Delay episodes by command group and delay kind.")
DELAY_MAX = Metric("taskstats_delay_max_seconds", "gauge", ("cgroup", "kind"),
                   "Longest single delay of any task that exited since start "
                   "(KIND_delay_max; absent on kernels without it).")
IMPLAUSIBLE = Metric("taskstats_implausible_delays_total", "counter", ("kind",),
                     "Tasks whose delay of this kind was longer than the task had lived (a "
                     "kernel accounting error), left out of the delay sums; once per task.")
CPU = Metric("taskstats_cpu_seconds_total", "counter", ("cgroup", "mode"),
             "CPU time in user and system mode, live and exited tasks.")
IO = Metric("taskstats_io_bytes_total", "counter", ("cgroup", "direction"),
            "Bytes read from and written to storage, live and exited tasks.")
TASK_EXITS = Metric("taskstats_task_exits_total", "counter", ("cgroup",),
                    "Tasks that exited (every thread counts).")
PROCESS_EXITS = Metric("taskstats_process_exits_total", "counter", ("cgroup",),
                       "Processes that exited (their last thread exited).")
RECEIVED = Metric("taskstats_exit_events_received_total", "counter", (),
                  "Exit records received from the kernel (the denominator for losses).")
LOST = Metric("taskstats_exit_events_lost_total", "counter", ("reason",),
              "Exit records known lost before aggregation, by reason (overrun, truncated, "
              "malformed).")
NETLINK_DROPPED = Metric("taskstats_netlink_dropped_messages_total", "counter", ("listener",),
                         "Exit messages the kernel dropped on a listener socket (its drop "
                         "counter), by the socket's cpulist.")
NETLINK_OVERRUNS = Metric("taskstats_netlink_overruns_total", "counter", ("listener",),
                          "Receive buffer overrun episodes (ENOBUFS) on a listener socket.")
JOURNAL_WRITTEN = Metric("taskstats_journal_records_written_total", "counter", (),
                         "Exit records committed to the journal.")
JOURNAL_DROPPED = Metric("taskstats_journal_records_dropped_total", "counter", ("reason",),
                         "Exit records aggregated here but not journaled, by reason.")
JOURNAL_SUSPENDED = Metric("taskstats_journal_suspended", "gauge", (),
                           "1 while journaling is suspended for lack of disk space.")
SAMPLES_TAKEN = Metric("taskstats_journal_samples_total", "counter", (),
                       "Scans of every live thread taken for the journal's samples.")
SAMPLE_ROWS = Metric("taskstats_journal_sample_rows_written_total", "counter", (),
                     "Sample rows (a busy process's deltas over an interval) committed to "
                     "the journal.")
SAMPLE_OVERRUNS = Metric("taskstats_journal_sample_overruns_total", "counter", (),
                         "Journal sample scans that took longer than the sample interval.")
CLIENT_DROPPED = Metric("taskstats_client_records_dropped_total", "counter", (),
                        "Exit records not delivered to slow listening clients.")
SERIES_DROPPED = Metric("taskstats_series_dropped_total", "counter", (),
                        "Cgroups folded into cgroup=\"other\" by the series cap.")
REGRESSIONS = Metric("taskstats_clamped_observations_total", "counter", (),
                     "Task observations whose counters went down; not exported (clamped).")
LIVE_TASKS = Metric("taskstats_live_tasks", "gauge", (),
                    "Tasks in the last live sample.")
SAMPLE_SECONDS = Metric("taskstats_live_sample_duration_seconds", "gauge", (),
                        "Duration of the last live sample.")
SCRAPE_ERRORS = Metric("taskstats_scrape_errors_total", "counter", (),
                       "Live samples that failed.")
UP = Metric("taskstats_up", "gauge", (),
            "1 if the last live sample succeeded (0 before the first).")
SCRAPE_DURATION = Metric("taskstats_scrape_duration_seconds", "gauge", (),
                         "Time this scrape took to build the taskstats families (the "
                         "aggregator's snapshot and every family listed before this one).")
BUILD_INFO = Metric("taskstats_build_info", "gauge", ("version", "taskstats_version"),
                    "Always 1: pytaskstats version and the kernel's struct taskstats version.")

METRICS: tuple[Metric, ...] = (
    DELAY_SECONDS, DELAYS, GROUP_DELAY_SECONDS, GROUP_DELAYS, DELAY_MAX, CPU, IO, TASK_EXITS,
    PROCESS_EXITS, RECEIVED, LOST, NETLINK_DROPPED, NETLINK_OVERRUNS, JOURNAL_WRITTEN,
    JOURNAL_DROPPED, JOURNAL_SUSPENDED, SAMPLES_TAKEN, SAMPLE_ROWS, SAMPLE_OVERRUNS,
    CLIENT_DROPPED, SERIES_DROPPED, REGRESSIONS,
    LIVE_TASKS, SAMPLE_SECONDS, SCRAPE_ERRORS, UP, BUILD_INFO, IMPLAUSIBLE, SCRAPE_DURATION)


def markdown() -> str:
    """The metric reference tables of docs/metrics.md."""
    lines = ["| metric | type | labels | help |", "|---|---|---|---|"]
    lines += [f"| `{m.name}` | {m.type} | {', '.join(f'`{x}`' for x in m.labels)} | {m.help} |"
              for m in METRICS]
    lines += ["", "| `kind` | kernel fields | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{k}_delay_total`, `{k}_count` | {BY_NAME[f'{k}_delay_total'].help} |"
              for k in DELAY_KINDS]
    return "\n".join(lines) + "\n"

"""The listener fan-out: exit records queued for the clients that registered a
cpumask, as the kernel sends them to its per-CPU listener lists.

:class:`Fanout` queues an exit record for each listener of the CPU the task exited
on that may see it (an admin, or the task's owner when the policy says so), in the
listener's namespaces where they differ from the daemon's.  A slow client loses its
own records past its queue bounds (counted per client and in ``dropped``; the
client is told by :func:`.peers.flush`), never delaying anyone else.  It also keeps
namespaced listeners' pid maps fresh so that exits can be placed in their views.
"""

from __future__ import annotations

from .. import taskstats as ts
from ..records import ExitRecord
from .listeners import ListenerLists
from .peers import Limits, Peer


class Fanout:
    """Queues exit records on the ``peers`` (id -> Peer) that ``listeners`` lists;
    ``family_id`` is TASKSTATS' id in the messages it re-encodes."""

    def __init__(self, peers: dict[int, Peer], listeners: ListenerLists, limits: Limits,
                 family_id: int) -> None:
        self.peers, self.listeners, self.limits = peers, listeners, limits
        self.family_id = family_id
        self.dropped = 0  # records dropped for clients too slow, in all

    def publish(self, record: ExitRecord, raw: bytes, owner_sees: bool | None = None) -> None:
        """Queue an exit message for every listener of its CPU allowed to see it (an
        admin, or its owner when ``owner_sees``: see :mod:`.policy`), translated into
        the listener's namespaces where they differ from ours."""
        uid, gid = record.task.ac_uid, record.task.ac_gid
        for pid in self.listeners.for_cpu(record.cpu):
            peer = self.peers.get(pid)
            if peer is None or not (peer.admin or (
                    owner_sees and uid == peer.uid and gid == peer.gid)):
                continue
            if peer.view is not None:
                seen = peer.view.exit(record)
                if seen is None:
                    continue
                self._enqueue(peer, ts.encode_exit(self.family_id, seen))
            else:
                self._enqueue(peer, raw)

    def _enqueue(self, peer: Peer, raw: bytes) -> None:
        if (len(peer.records) >= self.limits.queue_records
                or peer.record_bytes + len(raw) > self.limits.record_bytes):
            peer.dropped_unsent += 1
            peer.dropped += 1
            self.dropped += 1
        else:
            peer.records.append(raw)
            peer.record_bytes += len(raw)

    def namespaced_listeners(self) -> list[Peer]:
        """Registered listeners that see through a namespace translation."""
        return [p for p in self.peers.values()
                if p.view is not None and self.listeners.cpus_of(p.id)]

    def unattributed(self) -> int:
        """Exits of namespaced clients' tasks that could not be placed (see
        :mod:`.namespaces`), summed over connected clients."""
        return sum(p.view.unattributed for p in self.peers.values() if p.view is not None)

    def learn_fork(self, pid: int) -> None:
        """Place a new task in the namespaced listeners' views while it lives (fed by
        the proc connector's fork events)."""
        for peer in self.namespaced_listeners():
            assert peer.view is not None
            peer.view.ns_pid(pid)

    def refresh_views(self) -> None:
        """Keep the pid maps of namespaced listeners fresh (rate-limited scans), so
        that short-lived tasks reaped before their record is read can be placed."""
        for peer in self.namespaced_listeners():
            assert peer.view is not None
            peer.view.rescan()

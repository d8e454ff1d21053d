"""taskstatsd: the kernel's taskstats semantics as a userland service.

``main`` runs the loop (kernel exits -> policy, journal, fan-out; clients' turns);
``server`` with ``admission``, ``peers``, ``dispatch``, ``extension``, ``fanout`` and
``replies`` serves the Unix socket; ``listeners`` keeps the per-CPU listener lists with
the kernel's cpumask rules; ``policy`` and ``namespaces`` decide who sees what;
``journal*`` is the SQLite exit journal (a synchronous store in a writer process);
``history`` answers history queries within bounds; ``procmode`` stands in for the
kernel from /proc.  See docs/architecture.md.
"""

"""taskstatsd: the kernel's taskstats semantics as a userland service.

``listeners`` (per-CPU listener lists and cpumask rules), ``policy`` (who sees
what), ``journal`` (SQLite exit journal), ``server`` (the Unix socket speaking
generic netlink framing), ``ingest`` (kernel exit listeners), ``main`` (the
``taskstatsd`` command).
"""

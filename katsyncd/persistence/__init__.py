"""Persistence: every query the sync path runs, in one package (the SQL text stays in
``katsyncd/sql/queries.sql``, loaded as ``katsyncd.db.Q``).

- ``levels``: desired levels per store item, the writers' backlog, push recording (one
  function for the writer and the reconcile), what a reconcile observed.
- ``mirror``: the Katana mirror (variants, sales orders and their rows, winners per SKU,
  commitments).
- ``catalog``: each store's SKU index (``bc_item``).
- ``watermarks``: the polls' watermarks and the database clock.
- ``stale``: stale-mark statements other components run inside their own transactions.
- ``marks``, ``status``, ``locations``: what the daemon's own jobs run (marking and poll
  requests; the ``/status`` reads, readiness and pruning; Katana's locations).

Functions take the pool or a connection explicitly (``Executor``: either; a function that must
share the caller's transaction takes a ``Conn``). This module imports none of its submodules,
so they may import it without a cycle.
"""

from __future__ import annotations

import asyncpg

from katsyncd.db import Conn

# What a read (or a statement that needs no transaction of its own) runs on.
Executor = asyncpg.Pool | Conn

__all__ = ["Conn", "Executor"]

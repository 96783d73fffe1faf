"""Persistence: every SQL statement the daemon runs, one module per kind of state.

Functions take a pool or a connection explicitly. The named queries themselves live in
``katsyncd/sql/queries.sql`` (loaded by ``katsyncd.db`` as ``Q``).
"""

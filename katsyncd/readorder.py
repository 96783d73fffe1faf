"""Which of two overlapping reads of a sales order is the newer, so reads need no lock.

Reads of sales orders (a webhook's resolve, the incremental polls) run concurrently and wait
for Katana tokens; only their writes to the mirror are serialised. Each read takes a ticket
when it starts; a write skips the orders a read that started later has already written (it
saw them at least as new). Pure state, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable


class ReadOrder:
    def __init__(self) -> None:
        self._next = 0
        self._open: set[int] = set()
        self._written: dict[int, int] = {}  # order id -> ticket of the newest read written
        self._barrier = -1  # reads started before it are superseded for every order

    def start(self) -> int:
        """A read starts: its ticket (later reads get higher ones)."""
        ticket = self._next
        self._next += 1
        self._open.add(ticket)
        return ticket

    def superseded(self, ticket: int, so_ids: Iterable[int]) -> set[int]:
        """Of these orders, those a read started after ``ticket`` has written."""
        if ticket < self._barrier:
            return set(so_ids)
        return {i for i in so_ids if self._written.get(i, -1) > ticket}

    def supersede_all(self, ticket: int) -> None:
        """A full re-read (written with ``ticket``, and re-reading what changed while it ran)
        supersedes every read started before ``ticket``."""
        self._barrier = max(self._barrier, ticket)

    def written(self, ticket: int, so_ids: Iterable[int]) -> None:
        for i in so_ids:
            self._written[i] = max(self._written.get(i, -1), ticket)

    def done(self, ticket: int) -> None:
        """The read is over (written or failed); forget what no open read can be older than."""
        self._open.discard(ticket)
        oldest = min(self._open, default=self._next)
        if len(self._written) > 1024 or not self._open:
            self._written = {i: t for i, t in self._written.items() if t > oldest}

"""Full reconcile: the whole catalogue re-read in bulk and compared with BigCommerce's levels.

- ``report``: what a reconcile found and did (``ReconcileReport`` per run, ``StoreReport`` per
  store, ``DiffRow`` per difference) and the pure comparisons behind it;
- ``reconciler``: ``Reconciler``, the I/O (mirrors and SKU index refreshed, the inventory sweep,
  BigCommerce's levels read, levels and pushes recorded);
- ``schedule``: ``ReconcileSchedule``, when the daemon runs one.

How a report is shown (tables, CSV) belongs to the command line (``katsyncd.cli.render``).
The names below are the package's public face; import them from here.
"""

from katsyncd.reconcile.reconciler import (
    PUSH_REASON,
    RECONCILE_REASON,
    Reconciler,
    ReconcileTarget,
    log_progress,
)
from katsyncd.reconcile.report import (
    DiffRow,
    Duplicate,
    LevelKey,
    ReconcileReport,
    SkuSides,
    StoreReport,
    compare_skus,
    diff_levels,
    duplicates_in,
    level_key,
    suspect_variants,
)
from katsyncd.reconcile.schedule import (
    RECHECK_SECONDS,
    RETRY_SECONDS,
    SCHEDULE_JITTER,
    SCHEDULED,
    ReconcileAsk,
    ReconcileSchedule,
)

__all__ = [
    "PUSH_REASON",
    "RECHECK_SECONDS",
    "RECONCILE_REASON",
    "RETRY_SECONDS",
    "SCHEDULED",
    "SCHEDULE_JITTER",
    "DiffRow",
    "Duplicate",
    "LevelKey",
    "ReconcileAsk",
    "ReconcileReport",
    "ReconcileSchedule",
    "ReconcileTarget",
    "Reconciler",
    "SkuSides",
    "StoreReport",
    "compare_skus",
    "diff_levels",
    "duplicates_in",
    "level_key",
    "log_progress",
    "suspect_variants",
]

"""katsyncd benchmarks: katsyncd and a straightforward baseline syncer side by side, against
the same Katana and BigCommerce simulators with quotas enforced. Run ``python -m bench``
(``--quick`` for the small version CI runs). See docs/PERFORMANCE.md."""

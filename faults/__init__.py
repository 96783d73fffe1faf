"""The fault suite: ``python -m faults [--quick]`` (faults/cli.py, docs/RELIABILITY.md)."""

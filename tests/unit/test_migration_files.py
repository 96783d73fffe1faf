"""The migration and query files themselves (no database): numbering and use."""

from __future__ import annotations

from pathlib import Path

from katsyncd.db import load_migrations, load_queries


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_every_named_query_is_used_somewhere(repo_root: Path) -> None:
    sources = list((repo_root / "katsyncd").rglob("*.py"))
    assert sources, "no package sources found"  # else the check below could not fail
    source = "\n".join(p.read_text() for p in sources)
    unused = [n for n in load_queries() if f'"{n}"' not in source]
    assert unused == []

"""What Katana last said of its rate window, kept across a restart (a file under
``database.state_dir``), so a new process does not spend requests the account no longer has;
and the ids per request its gateway was seen to honour, so a new process does not pay again
to learn it (a sweep or two of ignored id filters)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import structlog

from katsyncd.config import Config
from katsyncd.katana import KatanaClient
from katsyncd.ratelimit import KatanaLimiter

log = structlog.get_logger(__name__)

KATANA_WINDOW_FILE = "katana-window.json"  # under database.state_dir, if that exists
KATANA_IDS_FILE = "katana-ids.json"  # the learned ids per request, same place


def _katana_account(config: Config) -> str:
    """Which Katana account a kept window belongs to (the quota is per account)."""
    key = hashlib.sha256(config.katana.api_key_value().encode()).hexdigest()[:16]
    return f"{config.katana.base_url.rstrip('/')}#{key}"


def save_katana_window(limiter: KatanaLimiter, config: Config) -> None:
    """On the way out: keep what Katana last said of its rate window (requests left, reset),
    so the next start does not spend requests the account no longer has. Only into an
    existing ``state_dir``; a failure costs the next start at most one 429."""
    state = limiter.window_state()
    path = Path(config.database.state_dir) / KATANA_WINDOW_FILE
    if state is None or not path.parent.is_dir():
        return
    doc = {"account": _katana_account(config), "remaining": state[0], "reset": state[1]}
    try:
        path.write_text(json.dumps(doc))
    except OSError as exc:
        log.warning("katana_window_not_saved", path=str(path), error=str(exc))


def restore_katana_window(limiter: KatanaLimiter, config: Config) -> None:
    """At start: the window the previous process left, if it is this account's and current."""
    path = Path(config.database.state_dir) / KATANA_WINDOW_FILE
    try:
        doc = json.loads(path.read_text())
        if doc.get("account") != _katana_account(config):
            return
        remaining, reset = int(doc["remaining"]), float(doc["reset"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("katana_window_unreadable", path=str(path), error=str(exc))
        return
    limiter.restore(remaining, reset)
    log.info("katana_window_restored", remaining=remaining, reset=reset)


def save_ids_limit(katana: KatanaClient, config: Config) -> None:
    """On the way out: the ids per request the gateway was seen to honour, if it was lowered
    (into an existing ``state_dir`` only; a failure costs the next start the learning)."""
    limit = katana.learned_ids_limit
    path = Path(config.database.state_dir) / KATANA_IDS_FILE
    if limit is None or not path.parent.is_dir():
        return
    try:
        path.write_text(json.dumps({"account": _katana_account(config), "ids_per_request": limit}))
    except OSError as exc:
        log.warning("katana_ids_limit_not_saved", path=str(path), error=str(exc))


def restore_ids_limit(katana: KatanaClient, config: Config) -> None:
    """At start: the ids per request a previous process learned for this account."""
    path = Path(config.database.state_dir) / KATANA_IDS_FILE
    try:
        doc = json.loads(path.read_text())
        if doc.get("account") != _katana_account(config):
            return
        limit = int(doc["ids_per_request"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("katana_ids_limit_unreadable", path=str(path), error=str(exc))
        return
    if limit < 1:
        log.warning("katana_ids_limit_unreadable", path=str(path), error=f"{limit} < 1")
        return
    katana.adopt_learned_ids_limit(limit)
    log.info("katana_ids_limit_restored", ids_per_request=katana.effective_ids_per_request)

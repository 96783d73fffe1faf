"""Webhook verification and event mapping (pure)."""

from __future__ import annotations

import json

import pytest

from katsyncd.ingest import Effect, WebhookError, effects_for, parse_event, verify_signature
from tests.support.harness import katana_signature

TOKEN = "73f82127d57a2cea"


def sign(body: bytes, token: str = TOKEN) -> str:
    return katana_signature(body, token)


def test_signature_plain_prefixed_and_uppercase_hex() -> None:
    body = b'{"action":"sales_order.created"}'
    assert verify_signature(body, sign(body), TOKEN)
    assert verify_signature(body, "sha256=" + sign(body), TOKEN)
    assert verify_signature(body, sign(body).upper(), TOKEN)


def test_signature_rejects_wrong_token_tampered_body_and_missing() -> None:
    body = b'{"action":"sales_order.created"}'
    assert not verify_signature(body, sign(body, "0000000000000000"), TOKEN)
    assert not verify_signature(body + b" ", sign(body), TOKEN)
    assert not verify_signature(body, None, TOKEN)
    assert not verify_signature(body, "", TOKEN)
    assert not verify_signature(body, sign(body), "")


def test_parse_accepts_string_and_number_ids() -> None:
    for oid in (42, "42"):
        body = json.dumps({"action": "current_inventory.product_updated", "object": {"id": oid}})
        ev = parse_event(body.encode())
        assert ev.object_id == 42
        assert Effect("variant", 42) in ev.effects


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[]", b'{"object": {"id": 1}}'])
def test_parse_rejects_malformed(body: bytes) -> None:
    with pytest.raises(WebhookError) as exc:
        parse_event(body)
    assert exc.value.status == 400


def test_s2_sales_order_events_mark_the_order() -> None:
    for action in ("created", "updated", "packed", "delivered", "deleted"):
        assert Effect("sales_order", 9) in effects_for(f"sales_order.{action}", 9)


def test_s2_stock_moving_events_without_variant_ask_for_a_movement_poll() -> None:
    for ev in (
        "manufacturing_order.done",
        "purchase_order.received",
        "purchase_order_row.received",
    ):
        assert Effect("poll", "movements") in effects_for(ev, 5)


def test_variant_changes_mark_and_poll_variants() -> None:
    eff = effects_for("variant.updated", 3)
    assert Effect("variant", 3) in eff and Effect("poll", "variants") in eff


def test_sales_order_delete_without_id_polls_orders() -> None:
    assert effects_for("sales_order.deleted", None) == (Effect("poll", "sales_orders"),)


def test_unknown_events_imply_nothing() -> None:
    assert effects_for("material.updated", 1) == ()
    assert effects_for("something.new", 1) == ()

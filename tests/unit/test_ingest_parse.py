"""Webhook verification and event mapping (pure)."""

from __future__ import annotations

import json

import pytest

from katsyncd.ingest import (
    Effect,
    WebhookError,
    effects_for,
    parse_event,
    signature_well_formed,
    verify_signature,
)
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


# --- Hostile input (issue 11, findings 3 and 6): a bad event is a 400 for itself alone ------


def _event(oid: object, href: object = None) -> bytes:
    obj: dict[str, object] = {"id": oid}
    if href is not None:
        obj["href"] = href
    return json.dumps({"action": "current_inventory.product_updated", "object": obj}).encode()


@pytest.mark.parametrize(
    "oid", [2**63, -(2**63) - 1, "9223372036854775808", "12345678901234567890", 10**30]
)
def test_ids_outside_int64_are_malformed(oid: object) -> None:
    with pytest.raises(WebhookError) as exc:
        parse_event(_event(oid))
    assert exc.value.status == 400 and "object.id" in str(exc.value)


def test_largest_int64_id_is_accepted() -> None:
    assert parse_event(_event(str(2**63 - 1))).object_id == 2**63 - 1


@pytest.mark.parametrize(
    "oid",
    ["\u00b2", "\u0661\u0662\u0663", "\uff11\uff12", "12\u0663"],
    ids=["superscript", "arabic-indic", "fullwidth", "mixed"],
)
def test_non_ascii_digits_are_no_id(oid: str) -> None:
    ev = parse_event(_event(oid))
    assert (ev.object_id, ev.effects) == (None, ())


@pytest.mark.parametrize(
    "href",
    [
        "https://api.katanamrp.com/v1/variants/99999999999999999999",
        "https://api.katanamrp.com/v1/variants/9223372036854775808",
    ],
)
def test_href_ids_outside_int64_are_malformed(href: str) -> None:
    with pytest.raises(WebhookError) as exc:
        parse_event(_event(5, href))
    assert exc.value.status == 400


def test_href_with_non_ascii_digits_is_unrecognized() -> None:
    ev = parse_event(_event(7, "https://api.katanamrp.com/v1/variants/\u0661\u0662"))
    assert ev.reading == "unrecognized" and ev.object_id == 7


@pytest.mark.parametrize(
    "body",
    [
        b'{"action": "sales_order.created", "object": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"action": "sales_order.created", "x": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001,
        b'{"action": "sales_order.created", "object": {"id": ' + b"7" * 5000 + b"}}",
    ],
    ids=["deep-array", "deep-object", "5000-digit-int"],
)
def test_deep_nesting_and_huge_numbers_are_malformed(body: bytes) -> None:
    with pytest.raises(WebhookError) as exc:
        parse_event(body)
    assert exc.value.status == 400


@pytest.mark.parametrize(
    "header",
    ["é" * 64, "sha256=" + "ü" * 64, "\udcff" * 64, "0" * 63 + "€"],
    ids=["latin1", "prefixed", "surrogate", "one-char"],
)
def test_non_ascii_signature_is_refused_not_raised(header: str) -> None:
    body = b'{"action":"sales_order.created"}'
    assert not verify_signature(body, header, TOKEN)
    assert not signature_well_formed(header)


def test_signature_shape() -> None:
    sig = sign(b"x")
    assert signature_well_formed(sig) and signature_well_formed(" sha256=" + sig.upper())
    for bad in (None, "", sig[:-1], sig + "0", "sha1=" + sig, "g" * 64):
        assert not signature_well_formed(bad)

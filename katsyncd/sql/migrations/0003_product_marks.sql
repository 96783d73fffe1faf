-- Issue 8: a current_inventory.* webhook may name a product (object.href …/products/{id}), not
-- a variant. The variant mirror learns each variant's product, and a product mark the mirror
-- cannot expand yet waits durably here for the next variants poll.
ALTER TABLE katana_variant ADD COLUMN product_id bigint;
CREATE INDEX katana_variant_live_product ON katana_variant (product_id)
    WHERE deleted_at IS NULL AND type = 'product';

-- A product whose live variants the mirror did not know when its event was committed. The
-- variants poll that follows expands it into stale_variant rows in the same transaction that
-- deletes it (or drops it, logged, if the product still has no live product variant).
CREATE TABLE stale_product (
    product_id      bigint PRIMARY KEY,
    gen             bigint NOT NULL DEFAULT nextval('stale_gen'),
    first_marked_at timestamptz NOT NULL DEFAULT now(),
    reason          text NOT NULL
);

-- Variants mirrored before this migration have no product_id: the first start after it runs a
-- full variant sweep, which fills it in.
INSERT INTO poll_request (kind)
SELECT 'variant_sweep' WHERE EXISTS (SELECT 1 FROM katana_variant)
ON CONFLICT (kind) DO NOTHING;

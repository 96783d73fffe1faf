-- Issue 13: what the status page and `katsyncd explain` show that was not recorded before.

-- The stock per Katana location that each variant's levels were last computed from (the last
-- inventory read of the variant; replaced whole on every read).
CREATE TABLE katana_inventory (
    variant_id  bigint NOT NULL,
    location_id bigint NOT NULL,
    in_stock    numeric NOT NULL,
    read_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (variant_id, location_id)
);

-- When the change behind each push was first seen (the oldest stale mark behind the level):
-- the event-to-push lag is at - stale_since. NULL for pushes without one (reconcile).
ALTER TABLE push_log ADD COLUMN stale_since timestamptz;

-- Katana's order number, to name the sales orders that commit a SKU (filled as orders are read).
ALTER TABLE katana_sales_order ADD COLUMN order_no text;

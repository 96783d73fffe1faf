-- Named queries. Each block starts with "-- name: <name>".

-- name: mark_variants
INSERT INTO stale_variant (variant_id, reason)
SELECT * FROM unnest($1::bigint[], $2::text[])
ON CONFLICT (variant_id) DO UPDATE SET gen = nextval('stale_gen')

-- name: mark_sales_orders
INSERT INTO stale_sales_order (so_id, reason)
SELECT * FROM unnest($1::bigint[], $2::text[])
ON CONFLICT (so_id) DO UPDATE SET gen = nextval('stale_gen')

-- name: mark_products
-- A current_inventory.* event named these products: mark every live product variant the mirror
-- knows of each ('variant', id); a product with none is kept for the next variants poll
-- ('product', id). One statement, inside the group commit's transaction.
WITH p AS (SELECT * FROM unnest($1::bigint[], $2::text[]) AS t(product_id, reason)),
known AS (
    INSERT INTO stale_variant (variant_id, reason)
    SELECT v.id, p.reason FROM katana_variant v JOIN p ON v.product_id = p.product_id
    WHERE v.deleted_at IS NULL AND v.type = 'product'
    ON CONFLICT (variant_id) DO UPDATE SET gen = nextval('stale_gen')
    RETURNING variant_id
),
unknown AS (
    INSERT INTO stale_product (product_id, reason)
    SELECT p.product_id, p.reason FROM p
    WHERE NOT EXISTS (SELECT 1 FROM katana_variant v WHERE v.product_id = p.product_id
                      AND v.deleted_at IS NULL AND v.type = 'product')
    ON CONFLICT (product_id) DO UPDATE SET gen = nextval('stale_gen')
    RETURNING product_id
)
SELECT 'variant' AS kind, variant_id AS id FROM known
UNION ALL
SELECT 'product', product_id FROM unknown

-- name: expand_stale_products
-- After a variants poll that started at $1 (database clock): every kept product mark the mirror
-- can now expand becomes stale_variant rows, in the same statement that deletes it; a mark older
-- than the poll whose product still has no live product variant is dropped (the poll would have
-- seen one). Rows: ('variant', id) marked, ('product', id) taken.
WITH taken AS (
    DELETE FROM stale_product p
    WHERE p.first_marked_at < $1
       OR EXISTS (SELECT 1 FROM katana_variant v WHERE v.product_id = p.product_id
                  AND v.deleted_at IS NULL AND v.type = 'product')
    RETURNING p.product_id, p.reason
),
marked AS (
    INSERT INTO stale_variant (variant_id, reason)
    SELECT v.id, t.reason FROM katana_variant v JOIN taken t ON v.product_id = t.product_id
    WHERE v.deleted_at IS NULL AND v.type = 'product'
    ON CONFLICT (variant_id) DO UPDATE SET gen = nextval('stale_gen')
    RETURNING variant_id
)
SELECT 'variant' AS kind, variant_id AS id FROM marked
UNION ALL
SELECT 'product', product_id FROM taken

-- name: request_polls
INSERT INTO poll_request (kind)
SELECT unnest($1::text[])
ON CONFLICT (kind) DO UPDATE SET requested_at = now()

-- name: take_poll_requests
DELETE FROM poll_request RETURNING kind

-- name: load_stale_variants
SELECT variant_id, extract(epoch FROM now() - first_marked_at)::float8 AS age
FROM stale_variant

-- name: load_stale_sales_orders
SELECT so_id, extract(epoch FROM now() - first_marked_at)::float8 AS age
FROM stale_sales_order

-- name: stale_variant_gens
SELECT variant_id, gen, first_marked_at, reason FROM stale_variant WHERE variant_id = ANY($1::bigint[])

-- name: stale_sales_order_gens
SELECT so_id, gen FROM stale_sales_order WHERE so_id = ANY($1::bigint[])

-- name: clear_stale_variants
DELETE FROM stale_variant s
USING unnest($1::bigint[], $2::bigint[]) AS t(id, gen)
WHERE s.variant_id = t.id AND s.gen = t.gen

-- name: clear_stale_sales_orders
DELETE FROM stale_sales_order s
USING unnest($1::bigint[], $2::bigint[]) AS t(id, gen)
WHERE s.so_id = t.id AND s.gen = t.gen

-- name: get_watermark
SELECT updated_at FROM poll_watermark WHERE kind = $1

-- name: set_watermark
INSERT INTO poll_watermark (kind, updated_at, polled_at) VALUES ($1, $2, now())
ON CONFLICT (kind) DO UPDATE SET updated_at = GREATEST(poll_watermark.updated_at, EXCLUDED.updated_at),
                                 polled_at = now()

-- name: all_watermarks
SELECT kind, updated_at, polled_at FROM poll_watermark ORDER BY kind

-- name: upsert_variants
INSERT INTO katana_variant (id, sku, type, created_at, updated_at, deleted_at, product_id)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                     $6::timestamptz[], $7::bigint[])
ON CONFLICT (id) DO UPDATE SET sku = EXCLUDED.sku, type = EXCLUDED.type,
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    deleted_at = EXCLUDED.deleted_at,
    product_id = COALESCE(EXCLUDED.product_id, katana_variant.product_id)
WHERE katana_variant.updated_at <= EXCLUDED.updated_at

-- name: variants_by_ids
SELECT id, sku, type, created_at, updated_at, deleted_at FROM katana_variant
WHERE id = ANY($1::bigint[])

-- name: live_variants_by_skus
SELECT id, sku, type, created_at, updated_at, deleted_at FROM katana_variant
WHERE sku = ANY($1::text[]) AND deleted_at IS NULL AND type = 'product'

-- name: live_variant_ids_by_skus
SELECT id FROM katana_variant
WHERE sku = ANY($1::text[]) AND deleted_at IS NULL AND type = 'product'

-- name: mark_variants_gone
UPDATE katana_variant SET deleted_at = now()
WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL

-- name: mark_absent_variants_deleted
UPDATE katana_variant SET deleted_at = now()
WHERE deleted_at IS NULL AND type = 'product' AND NOT (id = ANY($1::bigint[]))
RETURNING id, sku

-- name: upsert_sales_orders
INSERT INTO katana_sales_order (id, status, location_id, from_channel, updated_at, deleted_at,
                                order_no)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bool[], $5::timestamptz[],
                     $6::timestamptz[], $7::text[])
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, location_id = EXCLUDED.location_id,
    from_channel = EXCLUDED.from_channel, updated_at = EXCLUDED.updated_at,
    deleted_at = EXCLUDED.deleted_at, order_no = EXCLUDED.order_no

-- name: so_rows_for_orders
SELECT so_id, row_id, variant_id, location_id, quantity FROM katana_so_row
WHERE so_id = ANY($1::bigint[])

-- name: sales_orders_by_ids
SELECT id, status, location_id, from_channel, deleted_at FROM katana_sales_order
WHERE id = ANY($1::bigint[])

-- name: delete_so_rows
DELETE FROM katana_so_row WHERE so_id = ANY($1::bigint[])

-- name: insert_so_rows
INSERT INTO katana_so_row (so_id, row_id, variant_id, location_id, quantity)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::numeric[])
ON CONFLICT (so_id, row_id) DO NOTHING

-- name: delete_sales_orders
DELETE FROM katana_sales_order WHERE id = ANY($1::bigint[])

-- name: so_rows_by_row_ids
SELECT so_id, row_id, variant_id, location_id, quantity FROM katana_so_row
WHERE row_id = ANY($1::bigint[])

-- name: live_sales_order_ids
SELECT id FROM katana_sales_order WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL

-- name: known_sales_order_ids
SELECT id FROM katana_sales_order WHERE id = ANY($1::bigint[])

-- name: upsert_so_rows
INSERT INTO katana_so_row (so_id, row_id, variant_id, location_id, quantity)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::numeric[])
ON CONFLICT (so_id, row_id) DO UPDATE SET variant_id = EXCLUDED.variant_id,
    location_id = EXCLUDED.location_id, quantity = EXCLUDED.quantity

-- name: delete_so_rows_by_row_ids
DELETE FROM katana_so_row WHERE row_id = ANY($1::bigint[])

-- name: commit_sums
SELECT r.variant_id, COALESCE(r.location_id, so.location_id) AS location_id, so.status,
       so.from_channel, sum(r.quantity) AS quantity
FROM katana_so_row r JOIN katana_sales_order so ON so.id = r.so_id
WHERE so.deleted_at IS NULL
GROUP BY 1, 2, 3, 4

-- name: delete_all_sales_orders
DELETE FROM katana_sales_order

-- name: commit_rows_for_variants
SELECT r.variant_id, COALESCE(r.location_id, so.location_id) AS location_id, r.quantity,
       so.status, so.from_channel
FROM katana_so_row r JOIN katana_sales_order so ON so.id = r.so_id
WHERE r.variant_id = ANY($1::bigint[]) AND so.deleted_at IS NULL

-- name: replace_locations
INSERT INTO katana_location (id, name) SELECT * FROM unnest($1::bigint[], $2::text[])
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name

-- name: all_locations
SELECT id, name FROM katana_location ORDER BY id

-- name: bc_items_for_skus
SELECT store, item_key, sku, product_id, variant_id, tracking FROM bc_item
WHERE store = ANY($1::text[]) AND sku = ANY($2::text[]) AND tracking <> 'none'

-- name: bc_item_keys
SELECT item_key, sku, tracking FROM bc_item WHERE store = $1

-- name: upsert_bc_items
INSERT INTO bc_item (store, item_key, sku, product_id, variant_id, tracking, refreshed_at)
SELECT $1, * , now() FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[])
ON CONFLICT (store, item_key) DO UPDATE SET sku = EXCLUDED.sku, product_id = EXCLUDED.product_id,
    variant_id = EXCLUDED.variant_id, tracking = EXCLUDED.tracking, refreshed_at = now()

-- name: delete_bc_items
DELETE FROM bc_item WHERE store = $1 AND item_key = ANY($2::text[])

-- name: delete_item_levels
DELETE FROM item_level WHERE store = $1 AND item_key = ANY($2::text[])

-- name: upsert_levels
-- One row per (store, item, location). A level equal to what is already desired changes nothing;
-- stale_since keeps the oldest mark behind a level not yet pushed.
INSERT INTO item_level AS l (store, item_key, location_id, sku, variant_id, desired, reason,
                             stale_since)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[], $6::int[],
                     $7::text[], $8::timestamptz[])
ON CONFLICT (store, item_key, location_id) DO UPDATE SET
    desired = EXCLUDED.desired,
    desired_at = now(),
    reason = EXCLUDED.reason,
    sku = EXCLUDED.sku,
    variant_id = EXCLUDED.variant_id,
    stale_since = CASE WHEN l.desired IS DISTINCT FROM l.pushed AND l.stale_since IS NOT NULL
                       THEN LEAST(l.stale_since, EXCLUDED.stale_since)
                       ELSE EXCLUDED.stale_since END,
    increase_since = CASE WHEN EXCLUDED.desired > l.pushed
                          THEN COALESCE(l.increase_since, now()) ELSE NULL END
WHERE l.desired IS DISTINCT FROM EXCLUDED.desired

-- name: levels_for
SELECT store, item_key, location_id, desired, pushed FROM item_level
WHERE store = ANY($1::text[]) AND item_key = ANY($2::text[])

-- name: backlog
-- Decreases first: with the oversell guard on, held increases must not crowd them out.
SELECT item_key, location_id, sku, variant_id, desired, pushed, reason, stale_since,
       extract(epoch FROM now() - increase_since)::float8 AS increase_age,
       guard_checked_at > increase_since AS guard_checked,
       EXISTS (SELECT 1 FROM stale_variant s WHERE s.variant_id = item_level.variant_id)
           AS rereading
FROM item_level
WHERE store = $1 AND desired IS DISTINCT FROM pushed
  AND desired IS DISTINCT FROM failed_desired
ORDER BY (desired > COALESCE(pushed, -1)), desired_at
LIMIT $2

-- name: guard_checked
UPDATE item_level SET guard_checked_at = now()
WHERE store = $1 AND item_key = ANY($2::text[])

-- name: dry_run_backlog
SELECT item_key, location_id, sku, desired, pushed, reason, stale_since
FROM item_level
WHERE store = $1 AND desired IS DISTINCT FROM dry_run_recorded
ORDER BY desired_at
LIMIT $2

-- name: record_pushed
UPDATE item_level l SET pushed = t.q, pushed_at = now(), failed_desired = NULL,
    failed_reason = NULL, increase_since = NULL, guard_checked_at = NULL,
    stale_since = CASE WHEN l.desired = t.q THEN NULL ELSE l.stale_since END
FROM unnest($2::text[], $3::int[], $4::int[]) AS t(item_key, location_id, q)
WHERE l.store = $1 AND l.item_key = t.item_key AND l.location_id = t.location_id

-- name: record_failed
UPDATE item_level l SET failed_desired = t.q, failed_reason = t.why
FROM unnest($2::text[], $3::int[], $4::int[], $5::text[]) AS t(item_key, location_id, q, why)
WHERE l.store = $1 AND l.item_key = t.item_key AND l.location_id = t.location_id

-- name: record_dry_run
UPDATE item_level l SET dry_run_recorded = t.q
FROM unnest($2::text[], $3::int[], $4::int[]) AS t(item_key, location_id, q)
WHERE l.store = $1 AND l.item_key = t.item_key AND l.location_id = t.location_id

-- name: insert_push_log
INSERT INTO push_log (store, sku, item_key, location_id, old_quantity, new_quantity, reason,
                      transaction_id, outcome, stale_since)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int[], $5::int[], $6::int[], $7::text[],
                         $8::text[], $9::text[], $10::timestamptz[])

-- name: prune_push_log
DELETE FROM push_log WHERE at < now() - make_interval(days => $1)

-- name: store_stats
SELECT store,
       count(*) FILTER (WHERE desired IS DISTINCT FROM pushed
                        AND desired IS DISTINCT FROM failed_desired) AS backlog,
       count(*) FILTER (WHERE desired IS DISTINCT FROM dry_run_recorded) AS dry_run_backlog,
       count(*) FILTER (WHERE failed_desired IS NOT NULL) AS failed,
       count(*) AS items,
       extract(epoch FROM max(pushed_at))::float8 AS last_push
FROM item_level GROUP BY store

-- name: unmatched_skus
SELECT DISTINCT v.sku FROM katana_variant v
WHERE v.deleted_at IS NULL AND v.type = 'product' AND v.sku IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM bc_item b WHERE b.store = $1 AND b.sku = v.sku)
ORDER BY v.sku

-- name: untracked_skus
SELECT sku FROM bc_item WHERE store = $1 AND tracking = 'none' ORDER BY sku

-- name: recent_pushes
SELECT at, store, sku, item_key, location_id, old_quantity, new_quantity, reason, transaction_id,
       outcome
FROM push_log WHERE store = $1 ORDER BY id DESC LIMIT $2

-- name: matched_skus
SELECT DISTINCT sku FROM bc_item WHERE store = ANY($1::text[]) AND tracking <> 'none'

-- name: live_product_skus
-- Every SKU a live Katana product variant carries (the reconcile's Katana side, S6/S10).
SELECT DISTINCT sku FROM katana_variant
WHERE deleted_at IS NULL AND type = 'product' AND sku IS NOT NULL

-- name: duplicate_live_skus
-- S8: SKUs carried by more than one live product variant, with every such variant id.
SELECT sku, array_agg(id ORDER BY id) AS ids FROM katana_variant
WHERE deleted_at IS NULL AND type = 'product' AND sku IS NOT NULL
GROUP BY sku HAVING count(*) > 1

-- name: db_clock
SELECT clock_timestamp()

-- name: record_observed
-- What a reconcile saw BigCommerce holding, read at $5 (database clock). A push recorded after
-- that read is newer and wins; a level BigCommerce already has leaves nothing to push.
UPDATE item_level l SET pushed = t.q,
    stale_since = CASE WHEN l.desired = t.q THEN NULL ELSE COALESCE(l.stale_since, now()) END
FROM unnest($2::text[], $3::int[], $4::int[]) AS t(item_key, location_id, q)
WHERE l.store = $1 AND l.item_key = t.item_key AND l.location_id = t.location_id
  AND l.pushed IS DISTINCT FROM t.q
  AND (l.pushed_at IS NULL OR l.pushed_at < $5)

-- name: forget_inventory
DELETE FROM katana_inventory WHERE variant_id = ANY($1::bigint[])

-- name: record_inventory
INSERT INTO katana_inventory (variant_id, location_id, in_stock, read_at)
SELECT *, now() FROM unnest($1::bigint[], $2::bigint[], $3::numeric[])
ON CONFLICT (variant_id, location_id) DO UPDATE SET in_stock = EXCLUDED.in_stock, read_at = now()

-- ----- the status page and `katsyncd explain` (issue 13) ---------------------------------------
-- name: variants_with_sku
SELECT id, sku, type, created_at, updated_at, deleted_at, product_id FROM katana_variant
WHERE sku = $1 ORDER BY created_at DESC, id DESC

-- name: inventory_of_variant
SELECT location_id, in_stock, read_at FROM katana_inventory WHERE variant_id = $1
ORDER BY location_id

-- name: order_rows_of_variant
SELECT so.id AS so_id, so.order_no, r.variant_id,
       COALESCE(r.location_id, so.location_id) AS location_id, r.quantity, so.status,
       so.from_channel
FROM katana_so_row r JOIN katana_sales_order so ON so.id = r.so_id
WHERE r.variant_id = $1 AND so.deleted_at IS NULL
ORDER BY so.id, r.row_id

-- name: items_with_sku
SELECT b.store, b.item_key, b.tracking, l.location_id, l.desired, l.desired_at, l.reason,
       l.pushed, l.pushed_at, l.dry_run_recorded, l.failed_desired, l.failed_reason
FROM bc_item b LEFT JOIN item_level l ON l.store = b.store AND l.item_key = b.item_key
WHERE b.sku = $1 AND b.store = ANY($2::text[])
ORDER BY b.store, b.item_key

-- name: pushes_of_sku
SELECT at, store, item_key, old_quantity, new_quantity, reason, outcome FROM push_log
WHERE sku = $1 AND store = ANY($2::text[]) ORDER BY id DESC LIMIT $3

-- name: push_page
-- The audit log, newest first, filtered; keyset on id ($5: rows older than this id).
SELECT id, at, store, sku, item_key, location_id, old_quantity, new_quantity, reason,
       transaction_id, outcome, extract(epoch FROM at - stale_since)::float8 AS lag_seconds
FROM push_log
WHERE ($1::text IS NULL OR store = $1) AND ($2::text IS NULL OR sku = $2)
  AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4)
  AND ($5::bigint IS NULL OR id < $5)
ORDER BY id DESC LIMIT $6

-- name: push_lag
-- Per store over the last hour: event-to-push lag percentiles (pushes with a recorded stale
-- mark) and how many levels were written in the last five minutes (the catch-up rate).
SELECT store,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM at - stale_since))
           FILTER (WHERE stale_since IS NOT NULL) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM at - stale_since))
           FILTER (WHERE stale_since IS NOT NULL) AS p99,
       count(*) FILTER (WHERE at > now() - interval '5 minutes') AS recent
FROM push_log
WHERE at > now() - interval '1 hour' AND outcome <> 'rejected'
GROUP BY store

-- name: sku_agreement
-- Per store: SKUs matched (a stock-tracked item and a live Katana product variant carry them)
-- and how many of them have every item at its desired level (pushed; recorded in dry run).
WITH per AS (
    SELECT b.store, b.sku,
           bool_and(l.desired IS NOT NULL AND l.desired = l.pushed) AS pushed_ok,
           bool_and(l.desired IS NOT NULL AND l.desired = l.dry_run_recorded) AS dry_ok
    FROM bc_item b LEFT JOIN item_level l ON l.store = b.store AND l.item_key = b.item_key
    WHERE b.tracking <> 'none'
      AND EXISTS (SELECT 1 FROM katana_variant v
                  WHERE v.sku = b.sku AND v.deleted_at IS NULL AND v.type = 'product')
    GROUP BY b.store, b.sku
)
SELECT store, count(*) AS matched, count(*) FILTER (WHERE pushed_ok) AS right_pushed,
       count(*) FILTER (WHERE dry_ok) AS right_dry_run
FROM per GROUP BY store

-- name: failed_items
SELECT sku, item_key, failed_desired, failed_reason FROM item_level
WHERE store = $1 AND failed_desired IS NOT NULL ORDER BY sku, item_key LIMIT $2

-- name: unmatched_katana_page
-- Live Katana product SKUs the store's catalogue lacks (S6), containing $2 (any case). EXCEPT
-- (a hash set operation) stays linear whatever the planner's row estimates say.
SELECT sku FROM (
    SELECT sku FROM katana_variant
    WHERE deleted_at IS NULL AND type = 'product' AND sku IS NOT NULL
    EXCEPT
    SELECT sku FROM bc_item WHERE store = $1
) x
WHERE strpos(lower(sku), lower($2)) > 0
ORDER BY sku LIMIT $3 OFFSET $4

-- name: unmatched_bigcommerce_page
-- SKUs of the store's stock-tracked items that no live Katana product variant carries.
SELECT sku FROM (
    SELECT sku FROM bc_item WHERE store = $1 AND tracking <> 'none'
    EXCEPT
    SELECT sku FROM katana_variant WHERE deleted_at IS NULL AND type = 'product'
) x
WHERE strpos(lower(sku), lower($2)) > 0
ORDER BY sku LIMIT $3 OFFSET $4

-- name: unmatched_bigcommerce_count
SELECT count(*) FROM (
    SELECT sku FROM bc_item WHERE store = $1 AND tracking <> 'none'
    EXCEPT
    SELECT sku FROM katana_variant WHERE deleted_at IS NULL AND type = 'product'
) x
-- name: lease_acquire
-- Take the lease if nobody holds it or it has expired (database clock): a new epoch. No row:
-- someone else holds it.
INSERT INTO leader_lease AS l (scope, holder, epoch, acquired_at, renewed_at, expires_at)
VALUES ($1, $2, 1, now(), now(), now() + make_interval(secs => $3))
ON CONFLICT (scope) DO UPDATE SET holder = EXCLUDED.holder, epoch = l.epoch + 1,
    acquired_at = now(), renewed_at = now(), expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= now()
RETURNING epoch

-- name: lease_renew
-- Extend the lease this holder has in this epoch, if it has not expired. No row: it is lost.
UPDATE leader_lease SET renewed_at = now(), expires_at = now() + make_interval(secs => $4)
WHERE scope = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
RETURNING epoch

-- name: lease_release
-- Hand the lease over (a clean stop): it expires now, so a follower may take it at once.
UPDATE leader_lease SET expires_at = now()
WHERE scope = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
RETURNING epoch

-- name: lease_read
SELECT holder, epoch,
       extract(epoch FROM now() - acquired_at)::float8 AS age,
       extract(epoch FROM expires_at - now())::float8 AS expires_in
FROM leader_lease WHERE scope = $1

-- name: lease_fence
-- Inside the transaction that records a push: the writer's lease still holds. FOR SHARE makes a
-- takeover wait for this transaction's commit (its UPDATE conflicts with the share lock).
SELECT 1 FROM leader_lease
WHERE scope = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
FOR SHARE

-- name: notify
SELECT pg_notify($1, $2)

-- name: ping
SELECT 1
-- name: analyze_sync_tables
-- Fresh statistics for the tables a cold start fills from nothing: the planner would otherwise
-- still think them empty and scan every row once per value of an ``= ANY($1)`` filter.
ANALYZE katana_variant, stale_variant, bc_item, item_level

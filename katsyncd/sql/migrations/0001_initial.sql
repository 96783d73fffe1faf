-- katsyncd schema v1. Level-triggered: what is durable is "this may be stale" and "this is the
-- level BigCommerce should have", never an event payload.

-- Durable work set: variants and sales orders that may have changed. gen changes on every
-- re-mark so a flush that started before the re-mark does not clear it.
CREATE SEQUENCE stale_gen;

CREATE TABLE stale_variant (
    variant_id      bigint PRIMARY KEY,
    gen             bigint NOT NULL DEFAULT nextval('stale_gen'),
    first_marked_at timestamptz NOT NULL DEFAULT now(),
    reason          text NOT NULL
);

CREATE TABLE stale_sales_order (
    so_id           bigint PRIMARY KEY,
    gen             bigint NOT NULL DEFAULT nextval('stale_gen'),
    first_marked_at timestamptz NOT NULL DEFAULT now(),
    reason          text NOT NULL
);

-- A webhook that only hints "something moved" asks for an early incremental poll.
CREATE TABLE poll_request (
    kind         text PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now()
);

-- Where each incremental poll resumes (Katana's updated_at clock).
CREATE TABLE poll_watermark (
    kind       text PRIMARY KEY,
    updated_at timestamptz NOT NULL,
    polled_at  timestamptz NOT NULL DEFAULT now()
);

-- Mirror of Katana product variants (S6, S8, S10).
CREATE TABLE katana_variant (
    id         bigint PRIMARY KEY,
    sku        text,
    type       text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz
);
CREATE INDEX katana_variant_live_sku ON katana_variant (sku)
    WHERE deleted_at IS NULL AND type = 'product';

-- Mirror of sales orders and their rows (S4, S5): committed for sync is a SUM over open rows.
CREATE TABLE katana_sales_order (
    id           bigint PRIMARY KEY,
    status       text NOT NULL,
    location_id  bigint,
    from_channel boolean NOT NULL,
    updated_at   timestamptz NOT NULL,
    deleted_at   timestamptz
);

CREATE TABLE katana_so_row (
    so_id       bigint NOT NULL REFERENCES katana_sales_order (id) ON DELETE CASCADE,
    row_id      bigint NOT NULL,
    variant_id  bigint NOT NULL,
    location_id bigint,
    quantity    numeric NOT NULL,
    PRIMARY KEY (so_id, row_id)
);
CREATE INDEX katana_so_row_variant ON katana_so_row (variant_id);

CREATE TABLE katana_location (
    id   bigint PRIMARY KEY,
    name text NOT NULL
);

-- Per-store SKU index of stock-tracked BigCommerce items.
CREATE TABLE bc_item (
    store        text NOT NULL,
    item_key     text NOT NULL,          -- "p:<product_id>" or "v:<variant_id>"
    sku          text NOT NULL,
    product_id   bigint NOT NULL,
    variant_id   bigint,
    tracking     text NOT NULL,          -- product | variant | none
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store, item_key)
);
CREATE INDEX bc_item_sku ON bc_item (store, sku);

-- What each store should have (desired) and what it was last given (pushed). Where they differ
-- is the store's durable backlog.
CREATE TABLE item_level (
    store            text NOT NULL,
    item_key         text NOT NULL,
    location_id      integer NOT NULL,
    sku              text NOT NULL,
    variant_id       bigint,               -- the Katana variant the level came from
    desired          integer NOT NULL,
    desired_at       timestamptz NOT NULL DEFAULT now(),
    reason           text NOT NULL,
    stale_since      timestamptz,          -- first stale mark behind a not-yet-pushed desired level
    pushed           integer,
    pushed_at        timestamptz,
    dry_run_recorded integer,
    failed_desired   integer,              -- a level BigCommerce rejected; not retried until desired changes
    failed_reason    text,
    PRIMARY KEY (store, item_key, location_id)
);
CREATE INDEX item_level_backlog ON item_level (store, desired_at)
    WHERE desired IS DISTINCT FROM pushed;

-- Audit of every push (and every dry-run decision).
CREATE TABLE push_log (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    store          text NOT NULL,
    sku            text NOT NULL,
    item_key       text NOT NULL,
    location_id    integer NOT NULL,
    old_quantity   integer,
    new_quantity   integer NOT NULL,
    reason         text NOT NULL,
    transaction_id text,
    outcome        text NOT NULL           -- written | rejected | dry_run
);
CREATE INDEX push_log_at ON push_log (at);
CREATE INDEX push_log_store_sku ON push_log (store, sku, at);

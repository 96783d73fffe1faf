-- Issue 12: several replicas on one database, one leader. The leader holds this lease (one row:
-- one database serves one Katana account) and renews it every few seconds on the database
-- clock; a replica may take it over only once it has expired. Every new holder gets a higher
-- epoch; the transaction that records a push to BigCommerce checks holder, epoch and expiry.
CREATE TABLE leader_lease (
    scope       text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

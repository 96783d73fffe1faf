-- Oversell guard: an increase over what BigCommerce was last given is held, then re-read.
ALTER TABLE item_level
    ADD COLUMN increase_since   timestamptz,  -- when desired first rose above pushed
    ADD COLUMN guard_checked_at timestamptz;  -- when the held increase was sent for a re-read

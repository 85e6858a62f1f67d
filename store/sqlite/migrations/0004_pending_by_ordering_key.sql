-- 0004_pending_by_ordering_key lets a delivery applied in the transaction
-- that commits it check, in one index probe, whether an earlier delivery of
-- the same calendar still waits (it must then wait behind it). The index
-- holds PENDING deliveries only, a handful while processing keeps up.
CREATE INDEX deliveries_pending_by_key ON deliveries (ordering_key, id) WHERE state = 1;

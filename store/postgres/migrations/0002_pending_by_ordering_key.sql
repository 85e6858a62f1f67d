-- deliveries_pending_by_ordering_key finds whether a delivery waits behind
-- a PENDING one of its ordering key (1 is DELIVERY_STATE_PENDING).
CREATE INDEX deliveries_pending_by_ordering_key ON deliveries (ordering_key, id) WHERE state = 1;

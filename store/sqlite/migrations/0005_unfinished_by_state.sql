-- 0005_unfinished_by_state narrows deliveries_by_state to the deliveries
-- that are not DONE. A postpress delivery applied in the transaction that
-- commits it is stored DONE, and entered an index read only by the scan of
-- PENDING deliveries, the listings of one state and the count of dead
-- ones: one B-tree insert per webhook that nothing used. A listing of DONE
-- deliveries, most of the inbox, reads the table newest first instead.
-- The queries that use the index say state <> 2 themselves: SQLite takes a
-- partial index only for a query whose WHERE holds the index's own term.
DROP INDEX deliveries_by_state;
CREATE INDEX deliveries_unfinished_by_state ON deliveries (state, id) WHERE state <> 2;

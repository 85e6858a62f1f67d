-- 0002_dedupe_window bounds dedupe in time: a dedup key is no longer unique
-- for ever, only within the dedupe window, so the unique constraint on
-- (provider, dedup_key) becomes an index that also holds the receive time.
-- SQLite cannot drop a table constraint: the table is rebuilt.

CREATE TABLE deliveries_new (
	id              INTEGER PRIMARY KEY AUTOINCREMENT,
	provider        TEXT NOT NULL,
	dedup_key       TEXT NOT NULL,
	message_id      TEXT NOT NULL,
	event_type      TEXT NOT NULL,
	ordering_key    TEXT NOT NULL,
	body            BLOB NOT NULL,
	state           INTEGER NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	last_error      TEXT NOT NULL DEFAULT '',
	receive_ns      INTEGER NOT NULL,
	process_ns      INTEGER,
	next_attempt_ns INTEGER
) STRICT;

INSERT INTO deliveries_new (id, provider, dedup_key, message_id, event_type, ordering_key, body,
	state, attempts, last_error, receive_ns, process_ns, next_attempt_ns)
SELECT id, provider, dedup_key, message_id, event_type, ordering_key, body,
	state, attempts, last_error, receive_ns, process_ns, next_attempt_ns
FROM deliveries;

-- Keep delivery ids from ever being reused, as AUTOINCREMENT promised.
INSERT INTO sqlite_sequence (name, seq)
SELECT 'deliveries_new', seq FROM sqlite_sequence WHERE name = 'deliveries'
	AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'deliveries_new');
UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'))
WHERE name = 'deliveries_new' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'deliveries');

DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;

-- deliveries_by_key finds the newest delivery of a key for dedupe.
CREATE INDEX deliveries_by_key ON deliveries (provider, dedup_key, receive_ns);
-- deliveries_by_state lists PENDING deliveries by id for the workers and
-- any state newest first for operators.
CREATE INDEX deliveries_by_state ON deliveries (state, id);
CREATE INDEX deliveries_by_provider ON deliveries (provider, id);
-- deliveries_by_state_receive finds the finished deliveries old enough to
-- prune, and the oldest pending one.
CREATE INDEX deliveries_by_state_receive ON deliveries (state, receive_ns);

-- 0001_init creates calsync's first schema. Times are unix nanoseconds;
-- messages are deterministic protobuf encodings.

-- meta holds single values of the database itself: the store id and the
-- change log compaction point.
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value ANY NOT NULL
) STRICT;

CREATE TABLE calendars (
	id                   TEXT PRIMARY KEY,
	provider             TEXT NOT NULL,
	provider_calendar_id TEXT NOT NULL,
	data                 BLOB NOT NULL
) STRICT;

CREATE INDEX calendars_by_provider ON calendars (provider, provider_calendar_id, id);
CREATE INDEX calendars_by_provider_calendar_id ON calendars (provider_calendar_id, id);

-- events keeps the indexed fields as columns; data is the event marshaled
-- without its raw payload, raw the payload (a google.protobuf.Struct) apart,
-- so listings never read it unless asked.
CREATE TABLE events (
	id          TEXT PRIMARY KEY,
	calendar_id TEXT NOT NULL,
	provider    TEXT NOT NULL,
	start_ns    INTEGER NOT NULL,
	end_ns      INTEGER NOT NULL,
	update_ns   INTEGER NOT NULL,
	deleted     INTEGER NOT NULL,
	data        BLOB NOT NULL,
	raw         BLOB
) STRICT;

-- events_by_calendar serves one calendar's listing and snapshots (which
-- read in (calendar_id, start_ns, id) order).
CREATE INDEX events_by_calendar ON events (calendar_id, start_ns, id);
-- events_by_start serves listings across every calendar.
CREATE INDEX events_by_start ON events (start_ns, id);
-- events_by_update serves updated_since.
CREATE INDEX events_by_update ON events (update_ns);

-- changes is the change log. AUTOINCREMENT keeps cursors from ever being
-- reused, even once the newest rows are gone; sqlite_sequence holds the head.
CREATE TABLE changes (
	cursor      INTEGER PRIMARY KEY AUTOINCREMENT,
	type        INTEGER NOT NULL,
	calendar_id TEXT NOT NULL,
	provider    TEXT NOT NULL,
	commit_ns   INTEGER NOT NULL,
	data        BLOB NOT NULL
) STRICT;

CREATE TABLE sync_state (
	calendar_id       TEXT PRIMARY KEY,
	watermark_ns      INTEGER,
	last_full_sync_ns INTEGER
) STRICT;

-- deliveries is the webhook inbox. state is a calsync.v1.DeliveryState.
CREATE TABLE deliveries (
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
	next_attempt_ns INTEGER,
	UNIQUE (provider, dedup_key)
) STRICT;

-- deliveries_by_state lists PENDING deliveries by id for the workers and
-- any state newest first for operators.
CREATE INDEX deliveries_by_state ON deliveries (state, id);
CREATE INDEX deliveries_by_provider ON deliveries (provider, id);

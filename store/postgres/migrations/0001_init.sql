-- 0001_init creates calsync's first PostgreSQL schema. Times are unix
-- nanoseconds, event starts and ends unix seconds plus nanoseconds (an event
-- may lie anywhere from year 1 to 9999); messages are deterministic protobuf
-- encodings. Identifiers sort bytewise (COLLATE "C"), as on SQLite, whatever
-- the database's locale. Free text from webhooks is kept as bytes, which
-- PostgreSQL's text type would refuse when it holds a NUL.

-- meta holds single values of the database itself: the store id and the
-- change log compaction point.
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

-- change_log_head holds the newest cursor ever handed out. Only a
-- transaction holding the change log's append lock updates it (see the
-- package documentation).
CREATE TABLE change_log_head (
	one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
	head BIGINT NOT NULL
);
INSERT INTO change_log_head (head) VALUES (0);

CREATE TABLE calendars (
	id                   TEXT COLLATE "C" PRIMARY KEY,
	provider             TEXT COLLATE "C" NOT NULL,
	provider_calendar_id TEXT COLLATE "C" NOT NULL,
	data                 BYTEA NOT NULL
);
CREATE INDEX calendars_by_provider ON calendars (provider, provider_calendar_id, id);
CREATE INDEX calendars_by_provider_calendar_id ON calendars (provider_calendar_id, id);

-- events keeps the indexed fields as columns; data is the event marshaled
-- without its raw payload, raw the payload apart, so listings never read it
-- unless asked.
CREATE TABLE events (
	id          TEXT COLLATE "C" PRIMARY KEY,
	calendar_id TEXT COLLATE "C" NOT NULL,
	provider    TEXT COLLATE "C" NOT NULL,
	start_sec   BIGINT NOT NULL,
	start_nsec  INTEGER NOT NULL,
	end_sec     BIGINT NOT NULL,
	end_nsec    INTEGER NOT NULL,
	update_ns   BIGINT NOT NULL,
	deleted     BOOLEAN NOT NULL,
	data        BYTEA NOT NULL,
	raw         BYTEA
);
CREATE INDEX events_by_calendar ON events (calendar_id, start_sec, start_nsec, id);
CREATE INDEX events_by_start ON events (start_sec, start_nsec, id);
CREATE INDEX events_by_update ON events (update_ns);

-- changes is the change log; cursors are handed out from change_log_head.
CREATE TABLE changes (
	cursor      BIGINT PRIMARY KEY,
	type        INTEGER NOT NULL,
	calendar_id TEXT COLLATE "C" NOT NULL,
	provider    TEXT COLLATE "C" NOT NULL,
	commit_ns   BIGINT NOT NULL,
	data        BYTEA NOT NULL
);

CREATE TABLE sync_state (
	calendar_id       TEXT COLLATE "C" PRIMARY KEY,
	watermark_ns      BIGINT,
	last_full_sync_ns BIGINT
);

-- deliveries is the webhook inbox. state is a calsync.v1.DeliveryState.
CREATE TABLE deliveries (
	id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	provider        TEXT COLLATE "C" NOT NULL,
	dedup_key       BYTEA NOT NULL,
	message_id      BYTEA NOT NULL,
	event_type      BYTEA NOT NULL,
	ordering_key    BYTEA NOT NULL,
	body            BYTEA NOT NULL,
	state           INTEGER NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	last_error      BYTEA NOT NULL DEFAULT '',
	receive_ns      BIGINT NOT NULL,
	process_ns      BIGINT,
	next_attempt_ns BIGINT
);
-- deliveries_by_key finds the newest delivery of a key for dedupe.
CREATE INDEX deliveries_by_key ON deliveries (provider, dedup_key, receive_ns);
CREATE INDEX deliveries_by_state ON deliveries (state, id);
CREATE INDEX deliveries_by_provider ON deliveries (provider, id);
CREATE INDEX deliveries_by_state_receive ON deliveries (state, receive_ns);

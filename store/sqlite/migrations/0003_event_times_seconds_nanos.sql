-- 0002_event_times_seconds_nanos keeps event starts and ends as unix seconds
-- plus nanoseconds within the second. A count of nanoseconds in 64 bits
-- holds only 1677 to 2262, while an event may lie anywhere from year 1 to
-- year 9999: the old columns clamped such times, which broke ordering, range
-- filters and paging. Rows whose times were clamped are re-read from their
-- data by the program right after this script (see migrationFixes).

CREATE TABLE events_new (
	id          TEXT PRIMARY KEY,
	calendar_id TEXT NOT NULL,
	provider    TEXT NOT NULL,
	start_sec   INTEGER NOT NULL,
	start_nsec  INTEGER NOT NULL,
	end_sec     INTEGER NOT NULL,
	end_nsec    INTEGER NOT NULL,
	update_ns   INTEGER NOT NULL,
	deleted     INTEGER NOT NULL,
	data        BLOB NOT NULL,
	raw         BLOB
) STRICT;

-- SQLite's / and % truncate toward zero; the nanoseconds within the second
-- must be 0..999999999, so times before 1970 borrow one second.
INSERT INTO events_new (id, calendar_id, provider, start_sec, start_nsec, end_sec, end_nsec, update_ns, deleted, data, raw)
SELECT id, calendar_id, provider,
	start_ns / 1000000000 - (start_ns % 1000000000 < 0), (start_ns % 1000000000 + 1000000000) % 1000000000,
	end_ns / 1000000000 - (end_ns % 1000000000 < 0), (end_ns % 1000000000 + 1000000000) % 1000000000,
	update_ns, deleted, data, raw
FROM events;

DROP TABLE events;
ALTER TABLE events_new RENAME TO events;

-- events_by_calendar serves one calendar's listing and snapshots (which
-- read in (calendar_id, start, id) order).
CREATE INDEX events_by_calendar ON events (calendar_id, start_sec, start_nsec, id);
-- events_by_start serves listings across every calendar.
CREATE INDEX events_by_start ON events (start_sec, start_nsec, id);
-- events_by_update serves updated_since.
CREATE INDEX events_by_update ON events (update_ns);

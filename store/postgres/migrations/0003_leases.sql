-- 0003_leases adds what several replicas on one database share: leases with
-- fencing tokens (inbox claims per ordering key, and roles such as the
-- leader) and token buckets for rate limits counted per provider account.
-- Times here are the database's own clock (clock_timestamp()), so that the
-- replicas' clocks do not matter.

-- lease_tokens hands out fencing tokens. A sequence never goes back, not
-- even across deleted lease rows, a crash or a failover, so a token taken
-- later is always greater than every token handed out before.
CREATE SEQUENCE lease_tokens;

-- leases holds one row per lease name. A lease passing to a new holder
-- (free, released or expired before) gets a new token from lease_tokens; a
-- released lease keeps its row, marked free (owner empty, already expired);
-- pruning the inbox removes the rows of free claims whose key has nothing
-- pending.
-- Names are bytes, as ordering keys are: a claim's name embeds its key.
CREATE TABLE leases (
	name    BYTEA PRIMARY KEY,
	owner   BYTEA NOT NULL,
	token   BIGINT NOT NULL,
	expires TIMESTAMPTZ NOT NULL
);

-- rate_buckets holds one token bucket per name, kept as the time its
-- bucket will be full again (tat, the "theoretical arrival time" of the
-- generic cell rate algorithm), which one UPDATE moves atomically. checked
-- and allowed record the last call's instant and answer, so that the
-- statement that took (or refused) a token can return them.
CREATE TABLE rate_buckets (
	name    BYTEA PRIMARY KEY,
	tat     TIMESTAMPTZ NOT NULL,
	checked TIMESTAMPTZ NOT NULL,
	allowed BOOLEAN NOT NULL
);

-- ClaimPending needs no index of its own: it finds each ordering key's
-- oldest PENDING delivery by skipping from key to key through
-- deliveries_pending_by_ordering_key (ordering_key, id) WHERE state = 1,
-- one index probe per key with pending deliveries, however many finished
-- deliveries the inbox retains and however many pending ones a key has.

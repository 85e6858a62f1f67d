// # Leases and claims
//
// [DB] implements [store.Leaser], [store.ClaimingInbox] and
// [store.RateLimiter], and its Update transactions implement
// [store.LeaseTx], for replicas sharing one database.
//
// A lease is a row of the leases table: its name, owner, fencing token and
// expiry, by the database's clock (clock_timestamp()), so the replicas'
// clocks never matter. Every statement that changes a lease is one INSERT
// ... ON CONFLICT DO UPDATE or UPDATE whose WHERE says when the change is
// allowed (the lease is free, expired, or held with the caller's token).
// Under READ COMMITTED, PostgreSQL evaluates that WHERE on the newest
// committed version of the row while holding the row's lock, after a
// concurrent writer of the row has finished; so of two replicas racing for
// a lease exactly one gets it, and the other sees the winner's row.
//
// Tokens come from the lease_tokens sequence whenever a lease passes to a
// holder that did not hold it the moment before; a renewal keeps the
// token. A sequence never goes back, so a later holder's token is always
// greater, even where a lease's row was removed and made again.
//
// CheckLease reads the lease row FOR SHARE in the write transaction: it
// fails with [store.ErrLeaseLost] unless the caller's token still holds the
// lease, and otherwise the row lock makes every takeover, renewal and
// release of the lease wait until the transaction ends (ClaimPending skips
// the key instead). So a transaction that checked its lease commits while
// holding it, or not at all, however long its process was paused. Among
// Updates sharing a transaction, one that returns ErrLeaseLost rolls back
// its own savepoint only.
//
// Inbox claims are leases named "key:" and the ordering key, or "delivery:"
// and the id of a delivery without one; [DB.AcquireLease] refuses those
// prefixes, so no other lease (the leader's, say) can take a claim's name.
// [DB.ClaimPending] claims a batch in one statement; [DB.PruneDeliveries]
// also removes the rows of claims no one holds on keys with nothing
// pending.
//
// [DB.TakeToken] keeps a bucket as one row moved by one upsert (the
// generic cell rate algorithm), by the database's clock.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

var (
	_ store.Leaser        = (*DB)(nil)
	_ store.ClaimingInbox = (*DB)(nil)
	_ store.RateLimiter   = (*DB)(nil)
	_ store.LeaseTx       = (*tx)(nil)
)

// Prefixes of the names of inbox claims (see claimName).
const (
	claimKeyPrefix      = "key:"
	claimDeliveryPrefix = "delivery:"
)

// maxClaimBatch is the most claims one ClaimPending call makes.
const maxClaimBatch = 1000

// pruneClaimsChunk is the most claim rows one statement of pruneClaims
// removes.
const pruneClaimsChunk = 256

// claimName is the lease name of the claim on ordering key key, or, for a
// delivery without one, on delivery id.
func claimName(key string, id int64) string {
	if key == "" {
		return claimDeliveryPrefix + strconv.FormatInt(id, 10)
	}
	return claimKeyPrefix + key
}

// micros converts a positive duration to whole microseconds (the
// database's resolution), rounding up so that a positive duration stays
// positive.
func micros(d time.Duration) int64 {
	us := int64(d / time.Microsecond)
	if d%time.Microsecond > 0 {
		us++
	}
	return us
}

// checkLease validates the parts of a lease every call needs.
func checkLease(what string, l store.Lease) error {
	if l.Name == "" || l.Owner == "" {
		return fmt.Errorf("postgres: %s: lease needs a name and an owner: %w", what, store.ErrInvalidArgument)
	}
	return nil
}

func checkTTL(what string, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("postgres: %s: ttl %v must be positive: %w", what, ttl, store.ErrInvalidArgument)
	}
	return nil
}

// AcquireLease takes the lease name for owner, or renews it if owner holds
// it, as [store.Leaser] describes. Names starting with "key:" or
// "delivery:" belong to inbox claims (see [DB.ClaimPending]) and are
// refused with ErrInvalidArgument.
//
// If a transaction that checked the lease ([store.LeaseTx.CheckLease]) is
// open, AcquireLease waits for it to end.
func (db *DB) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (store.Lease, bool, error) {
	if name == "" || owner == "" {
		return store.Lease{}, false, fmt.Errorf("postgres: acquire lease: needs a name and an owner: %w", store.ErrInvalidArgument)
	}
	if strings.HasPrefix(name, claimKeyPrefix) || strings.HasPrefix(name, claimDeliveryPrefix) {
		return store.Lease{}, false, fmt.Errorf("postgres: acquire lease %q: the name is an inbox claim's: %w", name, store.ErrInvalidArgument)
	}
	if err := checkTTL("acquire lease", ttl); err != nil {
		return store.Lease{}, false, err
	}
	if err := db.enter(); err != nil {
		return store.Lease{}, false, err
	}
	defer db.leave()
	// The upsert decides, on the newest version of the row and under its
	// lock: a free or expired lease (or one owner already holds) is taken;
	// otherwise the upsert changes nothing and the second branch reports
	// the holder. That branch reads the statement's snapshot, which may
	// predate a holder whose insert the upsert waited for: then neither
	// branch returns a row and the statement runs again, on a new snapshot.
	const q = `WITH taken AS (
			INSERT INTO leases AS l (name, owner, token, expires)
			VALUES ($1::bytea, $2::bytea, nextval('lease_tokens'), clock_timestamp() + $3::bigint * interval '1 microsecond')
			ON CONFLICT (name) DO UPDATE SET
				token = CASE WHEN l.owner = excluded.owner AND l.expires > clock_timestamp()
					THEN l.token ELSE excluded.token END,
				owner = excluded.owner,
				expires = excluded.expires
			WHERE l.owner = excluded.owner OR l.owner = '' OR l.expires <= clock_timestamp()
			RETURNING owner, token, expires)
		SELECT owner, token, expires, TRUE FROM taken
		UNION ALL
		SELECT owner, token, expires, FALSE FROM leases WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM taken)`
	for attempt := 1; ; attempt++ {
		var l store.Lease
		var gotOwner []byte
		var held bool
		err := db.pool.QueryRow(ctx, q, []byte(name), []byte(owner), micros(ttl)).Scan(&gotOwner, &l.Token, &l.Expires, &held)
		if errors.Is(err, pgx.ErrNoRows) && attempt < 10 {
			// A holder inserted the row after the snapshot: look again.
			continue
		}
		if err != nil {
			return store.Lease{}, false, classify(fmt.Errorf("postgres: acquire lease %q: %w", name, err))
		}
		l.Name, l.Owner, l.Expires = name, string(gotOwner), l.Expires.UTC()
		return l, held, nil
	}
}

// RenewLease extends l to ttl from now if l's token still holds it, as
// [store.Leaser] describes. It waits for an open transaction that checked
// the lease.
func (db *DB) RenewLease(ctx context.Context, l store.Lease, ttl time.Duration) (store.Lease, error) {
	if err := checkLease("renew lease", l); err != nil {
		return store.Lease{}, err
	}
	if err := checkTTL("renew lease", ttl); err != nil {
		return store.Lease{}, err
	}
	if err := db.enter(); err != nil {
		return store.Lease{}, err
	}
	defer db.leave()
	err := db.pool.QueryRow(ctx, `UPDATE leases SET expires = clock_timestamp() + $4::bigint * interval '1 microsecond'
		WHERE name = $1 AND owner = $2 AND token = $3 RETURNING expires`,
		[]byte(l.Name), []byte(l.Owner), l.Token, micros(ttl)).Scan(&l.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Lease{}, fmt.Errorf("postgres: renew lease %q (token %d): %w", l.Name, l.Token, store.ErrLeaseLost)
	}
	if err != nil {
		return store.Lease{}, classify(fmt.Errorf("postgres: renew lease %q: %w", l.Name, err))
	}
	l.Expires = l.Expires.UTC()
	return l, nil
}

// ReleaseLease frees l if l's token still holds it, as [store.Leaser]
// describes. The row stays, marked free (no owner, expired); the next
// holder gets a new token all the same. Pruning the inbox removes the rows
// of free claims (see pruneClaims).
func (db *DB) ReleaseLease(ctx context.Context, l store.Lease) error {
	if err := checkLease("release lease", l); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	_, err := db.pool.Exec(ctx, `UPDATE leases SET owner = '', expires = clock_timestamp()
		WHERE name = $1 AND owner = $2 AND token = $3`, []byte(l.Name), []byte(l.Owner), l.Token)
	if err != nil {
		return classify(fmt.Errorf("postgres: release lease %q: %w", l.Name, err))
	}
	return nil
}

// CheckLease fails with ErrLeaseLost unless l's token holds the lease, and
// otherwise keeps the lease row share-locked until the transaction ends:
// takeovers, renewals and releases of the lease wait for the commit or
// rollback (see the package's "Leases and claims"). fn must return the
// ErrLeaseLost it gets: in a batch of Updates that rolls back fn's
// savepoint alone.
//
// Because of that lock, fn must not renew or release a lease it checked
// through the DB while its transaction is open: the call would wait for
// the transaction, which waits for fn.
func (t *tx) CheckLease(ctx context.Context, l store.Lease) error {
	if err := t.live(); err != nil {
		return err
	}
	if err := checkLease("check lease", l); err != nil {
		return err
	}
	// FOR SHARE conflicts with the row lock of every UPDATE and upsert,
	// and READ COMMITTED re-reads a row updated concurrently before
	// locking it: the token compared is the newest one.
	var one int
	err := t.tx.QueryRow(ctx, `SELECT 1 FROM leases WHERE name = $1 AND owner = $2 AND token = $3 FOR SHARE`,
		[]byte(l.Name), []byte(l.Owner), l.Token).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres: check lease %q (token %d): %w", l.Name, l.Token, store.ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("postgres: check lease %q: %w", l.Name, err)
	}
	return nil
}

// claimPendingSQL claims, in one statement, up to $4 ordering keys (or
// deliveries without one) whose oldest PENDING delivery is due ($3, the
// store's clock, against next_attempt_ns, which the store's clock wrote)
// for owner $1 for $2 microseconds. Its parts:
//
//   - heads: each key's oldest PENDING delivery, skipping from key to key
//     through deliveries_pending_by_ordering_key, one probe per key.
//   - loose: the due PENDING deliveries without a key, each its own claim,
//     in id order, leaving out those whose claim is held (few: each holder
//     works through a bounded batch).
//   - picked: of those, the ones whose lease row is absent, free or
//     expired in the statement's snapshot, oldest first, $4 at most.
//   - locked: of the picked rows that exist, the ones still free or
//     expired on their newest version (FOR UPDATE re-reads a row updated
//     concurrently), skipping those another transaction has locked: a
//     claim being taken by another replica, or a lease checked in an open
//     transaction, which is not to be taken over until it ends.
//   - claimed: the upsert of the locked rows and of the rows absent from
//     the snapshot. Its WHERE is evaluated again on the newest version
//     under the row lock, so a row another replica claimed after the
//     snapshot (an insert the upsert had to wait for) is left alone: two
//     concurrent calls never both claim a key. Rows are written in name
//     order, so that two calls that wait for each other's rows cannot
//     deadlock.
//
// A key claimed from a stale snapshot may have no due delivery left (its
// head was finished meanwhile); its claimant finds nothing to do and
// releases it.
const claimPendingSQL = `WITH RECURSIVE heads (ordering_key, id, next_ns) AS (
		(SELECT ordering_key, id, next_attempt_ns FROM deliveries
			WHERE state = 1 AND ordering_key > '\x'::bytea ORDER BY ordering_key, id LIMIT 1)
		UNION ALL
		SELECT d.ordering_key, d.id, d.next_attempt_ns FROM heads h CROSS JOIN LATERAL (
			SELECT ordering_key, id, next_attempt_ns FROM deliveries
			WHERE state = 1 AND ordering_key > h.ordering_key ORDER BY ordering_key, id LIMIT 1) d
	),
	keyed AS (
		SELECT 'key:'::bytea || h.ordering_key AS name, h.ordering_key, 0::bigint AS delivery_id, h.id,
			l.name IS NOT NULL AS existed
		FROM heads h LEFT JOIN leases l ON l.name = 'key:'::bytea || h.ordering_key
		WHERE coalesce(h.next_ns, 0) <= $3::bigint AND (l.name IS NULL OR l.owner = '' OR l.expires <= clock_timestamp())
	),
	loose AS (
		SELECT n.name, ''::bytea AS ordering_key, d.id AS delivery_id, d.id, l.name IS NOT NULL AS existed
		FROM deliveries d
		CROSS JOIN LATERAL (SELECT convert_to('delivery:' || d.id::text, 'UTF8') AS name) n
		LEFT JOIN leases l ON l.name = n.name
		WHERE d.state = 1 AND d.ordering_key = '\x'::bytea AND coalesce(d.next_attempt_ns, 0) <= $3
			AND (l.name IS NULL OR l.owner = '' OR l.expires <= clock_timestamp())
		ORDER BY d.id LIMIT $4
	),
	picked AS MATERIALIZED (
		SELECT * FROM (SELECT * FROM keyed UNION ALL SELECT * FROM loose) c ORDER BY id LIMIT $4
	),
	locked AS MATERIALIZED (
		SELECT name FROM leases
		WHERE name IN (SELECT name FROM picked WHERE existed) AND (owner = '' OR expires <= clock_timestamp())
		FOR UPDATE SKIP LOCKED
	),
	claimed AS (
		INSERT INTO leases AS l (name, owner, token, expires)
		SELECT name, $1::bytea, nextval('lease_tokens'), clock_timestamp() + $2::bigint * interval '1 microsecond'
		FROM picked WHERE NOT existed OR name IN (SELECT name FROM locked)
		ORDER BY name
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token, expires = excluded.expires
		WHERE l.owner = '' OR l.expires <= clock_timestamp()
		RETURNING name, token, expires
	)
	SELECT p.ordering_key, p.delivery_id, c.token, c.expires FROM claimed c JOIN picked p ON p.name = c.name
	ORDER BY p.id`

// ClaimPending claims for owner, for ttl, up to limit ordering keys (or
// deliveries without one) whose oldest PENDING delivery is due, oldest
// first, as [store.ClaimingInbox] describes; limit is capped at 1000.
// A delivery is due when its next attempt time, written with the store's
// clock (Options.Now), is not after that clock's now; claims expire by
// the database's clock. It never waits for an open transaction that
// checked a lease: such a claim is left out.
func (db *DB) ClaimPending(ctx context.Context, owner string, ttl time.Duration, limit int) ([]store.Claim, error) {
	if owner == "" {
		return nil, fmt.Errorf("postgres: claim pending: needs an owner: %w", store.ErrInvalidArgument)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("postgres: claim pending: limit must be positive: %w", store.ErrInvalidArgument)
	}
	if err := checkTTL("claim pending", ttl); err != nil {
		return nil, err
	}
	if err := db.enter(); err != nil {
		return nil, err
	}
	defer db.leave()
	limit = min(limit, maxClaimBatch)
	rows, err := db.pool.Query(ctx, claimPendingSQL, []byte(owner), micros(ttl), rowcodec.Nanos(db.now()), limit)
	if err != nil {
		return nil, classify(fmt.Errorf("postgres: claim pending: %w", err))
	}
	defer rows.Close()
	var claims []store.Claim
	for rows.Next() {
		var key []byte
		var c store.Claim
		if err := rows.Scan(&key, &c.DeliveryID, &c.Token, &c.Expires); err != nil {
			return nil, classify(fmt.Errorf("postgres: claim pending: %w", err))
		}
		c.OrderingKey, c.Owner, c.Expires = string(key), owner, c.Expires.UTC()
		c.Name = claimName(c.OrderingKey, c.DeliveryID)
		claims = append(claims, c)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(fmt.Errorf("postgres: claim pending: %w", err))
	}
	return claims, nil
}

// ClaimedDeliveries returns up to limit PENDING deliveries c covers with an
// id greater than afterID, in id order, as [store.ClaimingInbox]
// describes. It fails with ErrLeaseLost when c's token no longer holds its
// lease, and with ErrInvalidArgument when c's name is not its key's.
//
// The check and the read are one statement (two when nothing is
// pending), but the claim may be lost right after: only
// [store.LeaseTx.CheckLease] in the transaction that records the outcome
// fences the work.
func (db *DB) ClaimedDeliveries(ctx context.Context, c store.Claim, afterID int64, limit int) ([]store.Delivery, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("postgres: claimed deliveries: limit must be positive: %w", store.ErrInvalidArgument)
	}
	if c.Name != claimName(c.OrderingKey, c.DeliveryID) || c.Owner == "" {
		return nil, fmt.Errorf("postgres: claimed deliveries: %q with owner %q is not a claim: %w", c.Name, c.Owner, store.ErrInvalidArgument)
	}
	if err := db.enter(); err != nil {
		return nil, err
	}
	defer db.leave()
	// One statement reads the deliveries if the claim holds; only an empty
	// answer needs a second one to tell a lost claim from nothing to do.
	const held = `EXISTS (SELECT 1 FROM leases WHERE name = $1 AND owner = $2 AND token = $3)`
	var out []store.Delivery
	var err error
	if c.OrderingKey == "" {
		out, err = queryDeliveries(ctx, db.pool, `SELECT `+deliveryColumns+` FROM deliveries
			WHERE `+held+` AND id = $4 AND state = 1 AND ordering_key = '\x'::bytea AND id > $5`,
			[]byte(c.Name), []byte(c.Owner), c.Token, c.DeliveryID, afterID)
	} else {
		// The literal state = 1 lets the plan use
		// deliveries_pending_by_ordering_key.
		out, err = queryDeliveries(ctx, db.pool, `SELECT `+deliveryColumns+` FROM deliveries
			WHERE `+held+` AND state = 1 AND ordering_key = $4 AND id > $5 ORDER BY id LIMIT $6`,
			[]byte(c.Name), []byte(c.Owner), c.Token, []byte(c.OrderingKey), afterID, limit)
	}
	if err == nil && len(out) == 0 {
		var holds bool
		err = db.pool.QueryRow(ctx, `SELECT `+held, []byte(c.Name), []byte(c.Owner), c.Token).Scan(&holds)
		if err == nil && !holds {
			return nil, fmt.Errorf("postgres: claimed deliveries: claim %q (token %d): %w", c.Name, c.Token, store.ErrLeaseLost)
		}
	}
	if err != nil {
		return nil, classify(fmt.Errorf("postgres: claimed deliveries: %w", err))
	}
	return out, nil
}

// TakeToken takes a token from the bucket name, as [store.RateLimiter]
// describes, in one statement, by the database's clock. The bucket is
// kept as the generic cell rate algorithm has it: tat, the instant at
// which the bucket is full again, moves interval later with every token
// taken, and a token is there when tat is at most (burst−1)·interval
// ahead of now. The upsert reads and moves tat under the row's lock, so
// concurrent callers of every process take turns on it; each measures
// now when its statement starts, which for one that waited for the lock
// is a little early and only makes its answer stricter. So over any
// span, at most burst + span/interval tokens are taken.
func (db *DB) TakeToken(ctx context.Context, name string, interval time.Duration, burst int) (time.Duration, error) {
	if name == "" || interval <= 0 || burst <= 0 {
		return 0, fmt.Errorf("postgres: take token from %q: needs a name, a positive interval and burst: %w", name, store.ErrInvalidArgument)
	}
	if err := db.enter(); err != nil {
		return 0, err
	}
	defer db.leave()
	every := micros(interval)
	if int64(burst-1) > (math.MaxInt64/2)/every {
		return 0, fmt.Errorf("postgres: take token from %q: a burst of %d every %v is out of range: %w", name, burst, interval, store.ErrInvalidArgument)
	}
	tolerance := every * int64(burst-1)
	var allowed bool
	var tat, checked time.Time
	err := db.pool.QueryRow(ctx, `WITH clock AS MATERIALIZED (SELECT clock_timestamp() AS t)
		INSERT INTO rate_buckets AS b (name, tat, checked, allowed)
		SELECT $1::bytea, t + $2::bigint * interval '1 microsecond', t, TRUE FROM clock
		ON CONFLICT (name) DO UPDATE SET
			allowed = greatest(b.tat, excluded.checked) <= excluded.checked + $3::bigint * interval '1 microsecond',
			tat = CASE WHEN greatest(b.tat, excluded.checked) <= excluded.checked + $3::bigint * interval '1 microsecond'
				THEN greatest(b.tat, excluded.checked) + $2::bigint * interval '1 microsecond' ELSE b.tat END,
			checked = excluded.checked
		RETURNING allowed, tat, checked`, []byte(name), every, tolerance).Scan(&allowed, &tat, &checked)
	if err != nil {
		return 0, classify(fmt.Errorf("postgres: take token from %q: %w", name, err))
	}
	if allowed {
		return 0, nil
	}
	// Refused means tat is more than the tolerance ahead: the wait is
	// positive.
	wait := tat.Sub(checked) - time.Duration(tolerance)*time.Microsecond
	return max(wait, time.Microsecond), nil
}

// pruneClaims removes the lease rows of claims no one holds (released or
// expired) whose key, or delivery without one, has no PENDING delivery
// left, so that the leases table does not grow with every delivery ever
// claimed. Tokens come from a sequence, so a claim made again later still
// gets a greater token than the removed row had. A row whose claim is
// being taken, renewed or checked in an open transaction is locked and
// skipped; the removal re-checks that the row is still free on its newest
// version before it removes it. It returns how many rows it removed.
func (db *DB) pruneClaims(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := db.pool.Exec(ctx, `DELETE FROM leases WHERE name IN (
			SELECT l.name FROM leases l
			WHERE (l.owner = '' OR l.expires <= clock_timestamp())
				AND CASE
					WHEN substring(l.name FOR 4) = 'key:'::bytea THEN NOT EXISTS (
						SELECT 1 FROM deliveries d WHERE d.state = 1 AND d.ordering_key = substring(l.name FROM 5))
					WHEN substring(l.name FOR 9) = 'delivery:'::bytea
						AND convert_from(substring(l.name FROM 10), 'UTF8') ~ '^[0-9]{1,18}$' THEN NOT EXISTS (
						SELECT 1 FROM deliveries d WHERE d.state = 1
							AND d.id = convert_from(substring(l.name FROM 10), 'UTF8')::bigint)
					ELSE FALSE END
			LIMIT $1 FOR UPDATE SKIP LOCKED)`, pruneClaimsChunk)
		if err != nil {
			return total, classify(fmt.Errorf("postgres: prune claims: %w", err))
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneClaimsChunk {
			return total, nil
		}
	}
}

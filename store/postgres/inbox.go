package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/handoff"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

const (
	statePending = int32(calsyncv1.DeliveryState_DELIVERY_STATE_PENDING)
	stateDone    = int32(calsyncv1.DeliveryState_DELIVERY_STATE_DONE)
	stateIgnored = int32(calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED)
	stateDead    = int32(calsyncv1.DeliveryState_DELIVERY_STATE_DEAD)
)

type enqueueRequest struct {
	ctx context.Context
	d   store.NewDelivery
	// apply, if set, processes the delivery in its transaction; applyErr
	// is its failure in an earlier run of the batch, which leaves the
	// delivery PENDING.
	apply    store.ApplyFunc
	applyErr error
	done     chan enqueueResult // Buffered: the committer never waits for a caller.
	state    handoff.State
}

type enqueueResult struct {
	id  int64
	dup bool
	// state is the state the delivery was stored in.
	state int32
	err   error
}

// Enqueue commits d durably and returns its id. Concurrent calls share one
// transaction (group commit), sent to the server in one round trip. Dedupe
// holds across every process sharing the database: a transaction takes a
// transaction-scoped advisory lock per (provider, dedup key), in a fixed
// order, before looking for a stored copy.
func (db *DB) Enqueue(ctx context.Context, d store.NewDelivery) (int64, bool, error) {
	r := db.enqueueOne(ctx, d, nil)
	return r.id, r.dup, r.err
}

// EnqueueApply commits d as Enqueue does and processes it with apply in the
// same group commit, as [store.ApplyingInbox] describes.
//
// Order holds across every process sharing the database: a transaction
// takes a transaction-scoped advisory lock per ordering key of its
// deliveries (after the dedupe locks, both in a fixed order, so that two
// batches never deadlock) before inserting them and before looking for a
// PENDING delivery of the key. Enqueue takes the same locks, so whichever
// transaction inserts a delivery of a key, the next one to look sees it.
//
// An apply that fails rolls its batch back, and the batch runs again with
// that delivery left PENDING (see insertDeliveries).
func (db *DB) EnqueueApply(ctx context.Context, d store.NewDelivery, apply store.ApplyFunc) (store.Enqueued, error) {
	if apply == nil {
		return store.Enqueued{}, fmt.Errorf("postgres: enqueue apply without an apply: %w", store.ErrInvalidArgument)
	}
	r := db.enqueueOne(ctx, d, apply)
	if r.err != nil {
		return store.Enqueued{}, r.err
	}
	return store.Enqueued{ID: r.id, Duplicate: r.dup, State: calsyncv1.DeliveryState(r.state)}, nil
}

var _ store.ApplyingInbox = (*DB)(nil)

// enqueueOne queues d for the group committer and waits for its outcome.
func (db *DB) enqueueOne(ctx context.Context, d store.NewDelivery, apply store.ApplyFunc) enqueueResult {
	if d.Provider == "" || d.DedupKey == "" {
		return enqueueResult{err: fmt.Errorf("postgres: delivery needs a provider and a dedup key: %w", store.ErrInvalidArgument)}
	}
	if err := db.enter(); err != nil {
		return enqueueResult{err: err}
	}
	defer db.leave()
	if d.ReceiveTime.IsZero() {
		d.ReceiveTime = db.now()
	}
	req := &enqueueRequest{ctx: ctx, d: d, apply: apply, done: make(chan enqueueResult, 1)}
	r, err := handoff.Submit(ctx, db.enqueue, req, &req.state, req.done)
	if err != nil {
		return enqueueResult{err: fmt.Errorf("postgres: enqueue: %w", err)}
	}
	return r
}

// commitLoop commits queued deliveries, everything queued at once in one
// transaction, until Close closes the queue. One loop per instance keeps the
// instance's delivery ids in commit order.
func (db *DB) commitLoop() {
	defer close(db.committerDone)
	batch := make([]*enqueueRequest, 0, db.maxBatch)
	for req := range db.enqueue {
		batch = append(batch[:0], req)
	fill:
		for len(batch) < db.maxBatch {
			select {
			case r, ok := <-db.enqueue:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		db.commitBatch(batch)
		clear(batch)
	}
}

// commitBatch commits batch and answers its callers. It holds the writer
// turn throughout, so that the change feed gets the applied changes before
// those of any later transaction of this instance.
func (db *DB) commitBatch(batch []*enqueueRequest) {
	db.wlock <- struct{}{}
	defer db.unlockWriter()
	live := batch[:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			if r.state.Abandon() {
				r.done <- enqueueResult{err: fmt.Errorf("postgres: enqueue: %w", err)}
			}
			continue
		}
		if r.state.Take() {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	began := time.Now()
	results, err := db.insertDeliveries(live)
	if db.onBatch != nil {
		db.onBatch(len(live), time.Since(began))
	}
	if err != nil && len(live) > 1 {
		// One bad delivery must not fail the others: commit them alone.
		db.log.Warn("inbox batch commit failed; committing deliveries one by one", "batch", len(live), "err", err)
		for _, r := range live {
			res, err := db.insertDeliveries([]*enqueueRequest{r})
			if err != nil {
				r.done <- enqueueResult{err: err}
				continue
			}
			r.done <- res[0]
		}
		return
	}
	for i, r := range live {
		if err != nil {
			r.done <- enqueueResult{err: err}
			continue
		}
		r.done <- results[i]
	}
}

// dedupeLockKey is the advisory lock key of a (provider, dedup key).
func dedupeLockKey(provider, key string) int64 {
	h := fnv.New64a()
	h.Write([]byte(provider))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return int64(h.Sum64())
}

// orderingLockKey is the second half of the advisory lock key of an
// ordering key, in the lockOrdering class.
func orderingLockKey(key string) int32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int32(h.Sum32())
}

// sortedUnique sorts keys and drops repeats.
func sortedUnique[K int32 | int64](keys []K) []K {
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	out := keys[:0]
	for i, k := range keys {
		if i == 0 || k != keys[i-1] {
			out = append(out, k)
		}
	}
	return out
}

// insertDeliveries commits reqs in one transaction (see insertOnce). When
// an apply fails, the transaction rolls back and runs again with that
// delivery left PENDING: a failed statement aborts a PostgreSQL transaction,
// so the alternative, a savepoint around every apply, would cost two more
// round trips per delivery to save a rerun that only failures need.
func (db *DB) insertDeliveries(reqs []*enqueueRequest) ([]enqueueResult, error) {
	for {
		results, err := db.insertOnce(reqs)
		var af *applyFailure
		if errors.As(err, &af) {
			// Each rerun has one apply fewer: this ends.
			af.req.applyErr = af.err
			continue
		}
		var wf *appliedWritesFailure
		if errors.As(err, &wf) {
			if r := reqs[0]; len(reqs) == 1 && r.apply != nil && r.applyErr == nil &&
				!errors.Is(classify(wf.err), store.ErrUnavailable) {
				// The server refused what the delivery's apply wrote (its
				// writes are sent after it returned): leave it PENDING.
				r.applyErr = wf.err
				continue
			}
			err = classify(fmt.Errorf("postgres: enqueue: %w", wf.err))
		}
		return results, err
	}
}

// appliedWritesFailure is the failure of the round trip that sends the
// applies' writes and commits; with several deliveries in the batch, which
// apply wrote what the server refused is unknown, so the batch is then
// committed one delivery at a time (see commitBatch).
type appliedWritesFailure struct{ err error }

func (f *appliedWritesFailure) Error() string { return "applied writes: " + f.err.Error() }

// applyFailure is an apply that failed in insertOnce; its transaction
// rolls back.
type applyFailure struct {
	req *enqueueRequest
	err error
}

func (f *applyFailure) Error() string { return "apply: " + f.err.Error() }

// insertOnce commits reqs in one transaction. One round trip begins it,
// takes the dedupe and ordering locks, finds the ordering keys that have a
// PENDING delivery stored before the batch, and, per delivery, returns the
// stored copy within the window or inserts it PENDING. Then the applies
// run, in inbox order (see [DB.EnqueueApply]), costing only their reads;
// one last round trip sends their writes, records their outcomes and
// commits. After the commit it hands the applied changes to the change
// feed, which passes them to the commit hooks (see Commit hooks in the
// package documentation).
func (db *DB) insertOnce(reqs []*enqueueRequest) ([]enqueueResult, error) {
	ctx := context.Background()
	keys := make([]int64, 0, len(reqs))
	var orderKeys []int32
	for _, r := range reqs {
		keys = append(keys, dedupeLockKey(r.d.Provider, r.d.DedupKey))
		if r.d.OrderingKey != "" {
			orderKeys = append(orderKeys, orderingLockKey(r.d.OrderingKey))
		}
	}
	// A fixed order keeps two batches taking the same keys from deadlocking:
	// dedupe locks, then ordering locks, then (in an apply) the change log's
	// append lock, each class in ascending key order.
	keys = sortedUnique(keys)
	orderKeys = sortedUnique(orderKeys)
	window := db.dedupeWindow.Nanoseconds()
	results := make([]enqueueResult, len(reqs))
	t := &tx{commit: time.Unix(0, rowcodec.Nanos(db.now())).UTC(), now: db.now}
	// spans[i] delimits request i's changes in t.records.
	spans := make([][2]int, len(reqs))
	err := db.withIntakeConn(ctx, func(conn *pgxpool.Conn) error {
		// BEGIN goes with the batch's first statements, and COMMIT with its
		// last writes (see withIntakeConn): a round trip each fewer, and the
		// change log's append lock, once taken, is held for the writes'
		// round trip, which also commits.
		b := &pgx.Batch{}
		b.Queue(`BEGIN`)
		b.Queue(`SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS u(k, i) ORDER BY i`, keys)
		b.Queue(`SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::integer[]) WITH ORDINALITY AS u(k, i) ORDER BY i`,
			lockOrdering, orderKeys)
		// Under the ordering locks no other transaction stores deliveries
		// of these keys: a PENDING one found now precedes the batch.
		waitingKeys := applyKeys(reqs)
		b.Queue(`SELECT DISTINCT ordering_key FROM deliveries WHERE state = 1 AND ordering_key = ANY($1::bytea[])`, waitingKeys)
		for _, r := range reqs {
			d := r.d
			body := d.Body
			if body == nil {
				body = []byte{}
			}
			recv := rowcodec.Nanos(d.ReceiveTime)
			b.Queue(`WITH existing AS (
					SELECT id FROM deliveries
					WHERE provider = $1 AND dedup_key = $2 AND receive_ns > $3 AND receive_ns < $4
					ORDER BY receive_ns DESC, id DESC LIMIT 1),
				inserted AS (
					INSERT INTO deliveries (provider, dedup_key, message_id, event_type, ordering_key, body,
						state, receive_ns, next_attempt_ns)
					SELECT $1, $2, $5, $6, $7, $8, $9, $10, $10 WHERE NOT EXISTS (SELECT 1 FROM existing)
					RETURNING id)
				SELECT id, TRUE FROM existing UNION ALL SELECT id, FALSE FROM inserted`,
				d.Provider, []byte(d.DedupKey), satSub(recv, window), satAdd(recv, window),
				[]byte(d.MessageID), []byte(d.EventType), []byte(d.OrderingKey), body, statePending, recv)
		}
		br := conn.SendBatch(ctx, b)
		for range 3 {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return err
			}
		}
		waiting, err := scanKeys(br)
		if err != nil {
			br.Close()
			return err
		}
		for i := range reqs {
			results[i].state = statePending
			if err := br.QueryRow().Scan(&results[i].id, &results[i].dup); err != nil {
				br.Close()
				return err
			}
		}
		if err := br.Close(); err != nil {
			return err
		}
		var finished finishedDeliveries
		for i, r := range reqs {
			spans[i] = [2]int{len(t.records), len(t.records)}
			if results[i].dup {
				continue
			}
			key := r.d.OrderingKey
			switch {
			case r.apply == nil || (key != "" && waiting[key]):
			case r.applyErr != nil:
				finished.add(results[i].id, statePending, "apply at intake: "+r.applyErr.Error())
			default:
				state, note, err := applyNow(ctx, conn, t, r)
				if err != nil {
					return err
				}
				results[i].state = state
				finished.add(results[i].id, state, note)
				spans[i][1] = len(t.records)
			}
			// A delivery left PENDING holds back the later ones of its key.
			if key != "" && results[i].state == statePending {
				waiting[key] = true
			}
		}
		if len(t.records) > 0 {
			db.feed.committing(t.records[0].Cursor)
		}
		// The applies' writes, their outcomes and the commit share a round
		// trip.
		end := finished.batch(t.commit)
		end.Queue(`COMMIT`)
		t.tx = conn
		err = t.flush(ctx, end)
		t.tx = nil
		if err != nil {
			return &appliedWritesFailure{err}
		}
		return nil
	})
	if err != nil {
		if len(t.records) > 0 {
			db.feed.abandoned()
		}
		var af *applyFailure
		var wf *appliedWritesFailure
		if errors.As(err, &af) || errors.As(err, &wf) {
			return nil, err
		}
		return nil, classify(fmt.Errorf("postgres: enqueue: %w", err))
	}
	if len(t.records) > 0 {
		// Hooks see each applied delivery's changes as one commit, in
		// cursor order.
		var groups [][]store.ChangeRecord
		for _, sp := range spans {
			if sp[1] > sp[0] {
				groups = append(groups, t.records[sp[0]:sp[1]:sp[1]])
			}
		}
		db.feed.committed(groups)
	}
	return results, nil
}

// applyKeys returns the ordering keys of reqs' deliveries to apply.
func applyKeys(reqs []*enqueueRequest) [][]byte {
	var keys [][]byte
	for _, r := range reqs {
		if r.apply != nil && r.d.OrderingKey != "" {
			keys = append(keys, []byte(r.d.OrderingKey))
		}
	}
	return keys
}

// scanKeys reads the next result of br, a set of ordering keys.
func scanKeys(br pgx.BatchResults) (map[string]bool, error) {
	keys := map[string]bool{}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var key []byte
		if err := rows.Scan(&key); err != nil {
			return nil, err
		}
		keys[string(key)] = true
	}
	return keys, rows.Err()
}

// withIntakeConn runs fn on a connection of the pool. fn begins a
// transaction and commits it itself, possibly within a batch of other
// statements (the intake's, an Update's writes); if fn fails, withIntakeConn rolls the transaction back, or
// closes the connection when even that fails, so that it never goes back
// to the pool inside a transaction.
func (db *DB) withIntakeConn(ctx context.Context, fn func(*pgxpool.Conn) error) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	err = fn(conn)
	if err != nil && !conn.Conn().IsClosed() {
		if _, rerr := conn.Exec(ctx, `ROLLBACK`); rerr != nil {
			conn.Conn().Close(ctx)
		}
	}
	return err
}

// applyNow runs r's apply through t and returns the state to store its
// delivery in. An apply's own failure is an *applyFailure.
func applyNow(ctx context.Context, conn txConn, t *tx, r *enqueueRequest) (int32, string, error) {
	t.tx = conn
	state, note, err := r.apply(ctx, t)
	t.tx = nil
	if err == nil {
		switch state {
		case calsyncv1.DeliveryState_DELIVERY_STATE_DONE,
			calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED,
			calsyncv1.DeliveryState_DELIVERY_STATE_DEAD:
			return int32(state), note, nil
		}
		err = fmt.Errorf("postgres: apply returned state %v: %w", state, store.ErrInvalidArgument)
	}
	return 0, "", &applyFailure{req: r, err: err}
}

// finishedDeliveries collects the outcomes of a batch's applies, recorded
// in one statement.
type finishedDeliveries struct {
	ids    []int64
	states []int32
	notes  [][]byte
}

func (f *finishedDeliveries) add(id int64, state int32, note string) {
	f.ids = append(f.ids, id)
	f.states = append(f.states, state)
	f.notes = append(f.notes, []byte(store.TruncateNote(note)))
}

// batch returns the statement that stores the outcomes, if any: a
// finished delivery gets its state, process time and note; one left
// PENDING by a failed apply keeps its state and gets the failure as its
// last error.
func (f *finishedDeliveries) batch(commit time.Time) *pgx.Batch {
	b := &pgx.Batch{}
	if len(f.ids) == 0 {
		return b
	}
	b.Queue(`UPDATE deliveries SET state = u.state, last_error = u.note,
			process_ns = CASE WHEN u.state = $4 THEN NULL ELSE $5::bigint END,
			next_attempt_ns = CASE WHEN u.state = $4 THEN next_attempt_ns ELSE NULL END
		FROM unnest($1::bigint[], $2::integer[], $3::bytea[]) AS u(id, state, note)
		WHERE deliveries.id = u.id`, f.ids, f.states, f.notes, statePending, commit.UnixNano())
	return b
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func satSub(a, b int64) int64 {
	if a < math.MinInt64+b {
		return math.MinInt64
	}
	return a - b
}

const deliveryColumns = `id, provider, dedup_key, message_id, event_type, ordering_key, body,
	state, attempts, last_error, receive_ns, process_ns, next_attempt_ns`

const deliveryColumnsNoBody = `id, provider, dedup_key, message_id, event_type, ordering_key, NULL::bytea,
	state, attempts, last_error, receive_ns, process_ns, next_attempt_ns`

func scanDelivery(row pgx.Row) (store.Delivery, error) {
	var d store.Delivery
	var dedup, msg, typ, ordering, lastErr []byte
	var state int32
	var recv int64
	var proc, next *int64
	if err := row.Scan(&d.ID, &d.Provider, &dedup, &msg, &typ, &ordering, &d.Body,
		&state, &d.Attempts, &lastErr, &recv, &proc, &next); err != nil {
		return store.Delivery{}, err
	}
	d.DedupKey, d.MessageID, d.EventType, d.OrderingKey, d.LastError =
		string(dedup), string(msg), string(typ), string(ordering), string(lastErr)
	d.State = calsyncv1.DeliveryState(state)
	d.ReceiveTime = time.Unix(0, recv).UTC()
	d.ProcessTime = fromNanos(proc)
	d.NextAttemptTime = fromNanos(next)
	return d, nil
}

func queryDeliveries(ctx context.Context, q querier, query string, args ...any) ([]store.Delivery, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// PendingDeliveries returns up to limit PENDING deliveries after afterID.
func (db *DB) PendingDeliveries(ctx context.Context, afterID int64, limit int) ([]store.Delivery, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("postgres: pending deliveries: limit must be positive: %w", store.ErrInvalidArgument)
	}
	var out []store.Delivery
	err := db.read(ctx, func(tx pgx.Tx) (err error) {
		out, err = queryDeliveries(ctx, tx, `SELECT `+deliveryColumns+` FROM deliveries
			WHERE state = $1 AND id > $2 ORDER BY id LIMIT $3`, statePending, afterID, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: pending deliveries: %w", err)
	}
	return out, nil
}

// GetDelivery returns one delivery, body included, or ErrNotFound.
func (db *DB) GetDelivery(ctx context.Context, id int64) (store.Delivery, error) {
	var d store.Delivery
	err := db.read(ctx, func(tx pgx.Tx) (err error) {
		d, err = getDelivery(ctx, tx, id)
		return err
	})
	return d, err
}

func getDelivery(ctx context.Context, q querier, id int64) (store.Delivery, error) {
	d, err := scanDelivery(q.QueryRow(ctx, `SELECT `+deliveryColumns+` FROM deliveries WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Delivery{}, fmt.Errorf("postgres: delivery %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Delivery{}, fmt.Errorf("postgres: get delivery %d: %w", id, err)
	}
	return d, nil
}

// ListDeliveries returns deliveries matching q, newest first, without
// bodies.
func (db *DB) ListDeliveries(ctx context.Context, q store.DeliveryQuery) ([]store.Delivery, error) {
	if q.Limit < 0 {
		return nil, fmt.Errorf("postgres: negative limit: %w", store.ErrInvalidArgument)
	}
	var w where
	if q.State != calsyncv1.DeliveryState_DELIVERY_STATE_UNSPECIFIED {
		w.add("state = ?", int32(q.State))
	}
	if q.Provider != "" {
		w.add("provider = ?", q.Provider)
	}
	if q.BeforeID > 0 {
		w.add("id < ?", q.BeforeID)
	}
	var out []store.Delivery
	err := db.read(ctx, func(tx pgx.Tx) (err error) {
		out, err = queryDeliveries(ctx, tx, `SELECT `+deliveryColumnsNoBody+` FROM deliveries`+w.String()+
			` ORDER BY id DESC`+limit(q.Limit), w.args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list deliveries: %w", err)
	}
	return out, nil
}

// RecordAttempt records a failed attempt on a PENDING delivery.
func (db *DB) RecordAttempt(ctx context.Context, id int64, lastErr string, next time.Time) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	return db.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE deliveries SET attempts = attempts + 1, last_error = $1, next_attempt_ns = $2
			WHERE id = $3 AND state = $4`, []byte(store.TruncateNote(lastErr)), nullNanos(next), id, statePending)
		if err != nil {
			return fmt.Errorf("postgres: record attempt on delivery %d: %w", id, err)
		}
		if tag.RowsAffected() == 1 {
			return nil
		}
		d, err := getDelivery(ctx, tx, id)
		if err != nil {
			return err
		}
		return fmt.Errorf("postgres: record attempt on delivery %d in state %v: %w", id, d.State, store.ErrFailedPrecondition)
	})
}

// RetryDelivery puts a DEAD delivery back to PENDING, due now.
func (db *DB) RetryDelivery(ctx context.Context, id int64) (store.Delivery, error) {
	if err := db.enter(); err != nil {
		return store.Delivery{}, err
	}
	defer db.leave()
	var d store.Delivery
	err := db.write(ctx, func(tx pgx.Tx) error {
		var err error
		if d, err = getDelivery(ctx, tx, id); err != nil {
			return err
		}
		if d.State != calsyncv1.DeliveryState_DELIVERY_STATE_DEAD {
			return fmt.Errorf("postgres: retry delivery %d in state %v: %w", id, d.State, store.ErrFailedPrecondition)
		}
		if _, err := tx.Exec(ctx, `UPDATE deliveries SET state = $1, attempts = 0, process_ns = NULL, next_attempt_ns = $2
			WHERE id = $3`, statePending, rowcodec.Nanos(db.now()), id); err != nil {
			return fmt.Errorf("postgres: retry delivery %d: %w", id, err)
		}
		d, err = getDelivery(ctx, tx, id)
		return err
	})
	return d, err
}

// InboxStats summarizes the inbox at one instant.
func (db *DB) InboxStats(ctx context.Context) (store.InboxStats, error) {
	var s store.InboxStats
	err := db.read(ctx, func(tx pgx.Tx) error {
		var oldest *int64
		err := tx.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = $1), min(receive_ns) FILTER (WHERE state = $1),
			count(*) FILTER (WHERE state = $2) FROM deliveries WHERE state IN ($1, $2)`,
			statePending, stateDead).Scan(&s.Pending, &oldest, &s.Dead)
		s.OldestPending = fromNanos(oldest)
		return err
	})
	if err != nil {
		return store.InboxStats{}, fmt.Errorf("postgres: inbox stats: %w", err)
	}
	return s, nil
}

// pruneChunk is the most deliveries one pruning transaction removes.
const pruneChunk = 256

// PruneDeliveries removes finished deliveries received and finished before
// the given time, a chunk per transaction, and then the rows of claims no
// one holds whose key has no PENDING delivery left (see pruneClaims).
func (db *DB) PruneDeliveries(ctx context.Context, before time.Time) (store.PrunedDeliveries, error) {
	var total store.PrunedDeliveries
	if err := db.enter(); err != nil {
		return total, err
	}
	defer db.leave()
	beforeNs := rowcodec.Nanos(before)
	for {
		var chunk store.PrunedDeliveries
		err := db.write(ctx, func(tx pgx.Tx) error {
			chunk = store.PrunedDeliveries{}
			rows, err := tx.Query(ctx, `DELETE FROM deliveries WHERE id IN (
				SELECT id FROM deliveries WHERE state IN ($1, $2, $3) AND receive_ns < $4 AND process_ns < $4
				LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING state`,
				stateDone, stateIgnored, stateDead, beforeNs, pruneChunk)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var state int32
				if err := rows.Scan(&state); err != nil {
					return err
				}
				switch state {
				case stateDone:
					chunk.Done++
				case stateIgnored:
					chunk.Ignored++
				case stateDead:
					chunk.Dead++
				}
			}
			return rows.Err()
		})
		if err != nil {
			return total, fmt.Errorf("postgres: prune deliveries: %w", err)
		}
		total.Done += chunk.Done
		total.Ignored += chunk.Ignored
		total.Dead += chunk.Dead
		if chunk.Total() < pruneChunk {
			// Claims of deliveries gone or finished go with them.
			if _, err := db.pruneClaims(ctx); err != nil {
				return total, err
			}
			return total, nil
		}
	}
}

// Package store declares what calsync needs from its database: calendars,
// events, the change log and the webhook inbox, and the errors each call can
// return. Backends live in subpackages (store/sqlite); store/storetest is the
// conformance suite every backend must pass.
//
// Events and calendars are kept as the API's own messages
// ([calsyncv1.CalendarEvent], [calsyncv1.Calendar]); the backend indexes the
// fields queries need and stores the rest opaquely.
package store

import (
	"context"
	"errors"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
)

// Sentinel errors. Backends wrap them; callers test with errors.Is.
var (
	// ErrNotFound means the calendar, event or delivery does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrCompacted means a cursor is older than the change log still holds.
	ErrCompacted = errors.New("store: cursor compacted")
	// ErrFailedPrecondition means the object is not in a state that allows
	// the call (for example retrying a delivery that is not dead).
	ErrFailedPrecondition = errors.New("store: failed precondition")
	// ErrInvalidArgument means a query or object is malformed (for example an
	// event without an id).
	ErrInvalidArgument = errors.New("store: invalid argument")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrUnavailable means the database could not be reached (it is down,
	// restarting or failing over, or the connection broke). The call may
	// succeed if retried later. A write that failed with it may still have
	// committed if the connection broke during the commit: callers retry
	// (an inbox delivery's dedupe absorbs the second copy), never assume
	// success.
	ErrUnavailable = errors.New("store: database unavailable")
)

// Pinger is a store whose database can become unreachable while the
// process runs (a database server, not an embedded file). Backends
// implement it optionally.
type Pinger interface {
	// Ping returns nil when the database answers a trivial query within
	// ctx, and otherwise an error that wraps [ErrUnavailable] (or
	// [ErrClosed] after Close). It is cheap enough to call every second
	// and safe to call concurrently with anything.
	Ping(ctx context.Context) error
}

// Cursor is a position in the change log: the sequence number of a change.
// Cursors only grow; 0 is before the first change.
type Cursor uint64

// Store is everything calsync keeps.
type Store interface {
	Reader
	ChangeLog
	Inbox

	// Update runs fn in one write transaction and commits it if fn returns
	// nil. Changes appended through the Tx are handed to the commit hooks
	// (see [ChangeLog.OnCommit]) only after the commit succeeded. fn may be
	// called once per Update; it must not keep tx after returning.
	//
	// Waiting for the writer honours ctx: if ctx ends before fn was called,
	// Update returns an error wrapping ctx.Err() and fn is never called.
	// Once fn has been called, Update reports its transaction's outcome.
	Update(ctx context.Context, fn func(tx Tx) error) error

	// ID identifies this store (this database) for ever: cursors from one
	// store are meaningless in another.
	ID() string

	// Close waits for writes under way and releases the database.
	Close() error
}

// Reader reads calendars and events outside any write transaction. Each call
// sees one consistent state, no older than the state seen by any call that
// returned before it began, and including every Update that returned before
// it began. Two calls are two states: a write may commit between them.
type Reader interface {
	// GetCalendar returns the calendar with calsync id id, or ErrNotFound.
	GetCalendar(ctx context.Context, id string) (*calsyncv1.Calendar, error)
	// ListCalendars returns calendars matching q in id order.
	ListCalendars(ctx context.Context, q CalendarQuery) ([]*calsyncv1.Calendar, error)
	// GetEvent returns the event (tombstones included) with calsync id id, or
	// ErrNotFound. The raw payload is set only when withRaw is true.
	GetEvent(ctx context.Context, id string, withRaw bool) (*calsyncv1.CalendarEvent, error)
	// ListEvents returns events matching q ordered by (start_time, id).
	ListEvents(ctx context.Context, q EventQuery) ([]*calsyncv1.CalendarEvent, error)
	// GetSyncState returns the provider sync state of a calendar, or
	// ErrNotFound if none was stored.
	GetSyncState(ctx context.Context, calendarID string) (SyncState, error)
	// Snapshot calls fn with every event matching f, all read at one
	// instant, and returns the change log head at that instant: a watcher that
	// continues after the returned cursor misses nothing and sees nothing
	// twice. It stops at the first error fn returns.
	//
	// fn is called only after the read is over: the events wait in a spool
	// bounded by disk rather than memory, so fn may block (on a slow
	// client, say) for as long as it likes without holding a database
	// connection, a read transaction or the WAL from being checkpointed.
	Snapshot(ctx context.Context, f SnapshotFilter, fn func(*calsyncv1.CalendarEvent) error) (Cursor, error)
}

// Tx is one write transaction. Reads inside it see its own writes.
type Tx interface {
	// GetCalendar returns the calendar or ErrNotFound.
	GetCalendar(ctx context.Context, id string) (*calsyncv1.Calendar, error)
	// GetEvent returns the event, or ErrNotFound. The raw payload is set
	// only when withRaw is true: decoding it is most of a read's cost.
	// The event is the caller's, but see AppendChange before modifying it.
	GetEvent(ctx context.Context, id string, withRaw bool) (*calsyncv1.CalendarEvent, error)
	// PutCalendar inserts or replaces a calendar. It needs Id and Provider.
	//
	// PutCalendar, PutEvent and AppendChange refuse with ErrInvalidArgument
	// an object some API encoding cannot carry (see model.CheckEncodable):
	// once stored, it would fail every reader that lists or watches it.
	PutCalendar(ctx context.Context, c *calsyncv1.Calendar) error
	// PutEvent inserts or replaces an event, raw payload included. It needs
	// Id, CalendarId and Provider.
	PutEvent(ctx context.Context, e *calsyncv1.CalendarEvent) error
	// PutEventRawJSON is PutEvent for an event whose raw payload is raw,
	// kept as the JSON object it arrived as (a webhook's body, say), and
	// not e.Raw, which is not read: the store may keep raw instead of
	// encoding the payload, and need not check it, since a RawJSON holds
	// only what every API encoding carries. Readers get the payload back
	// as model.StructFromJSON decodes raw. The zero RawJSON is no payload.
	PutEventRawJSON(ctx context.Context, e *calsyncv1.CalendarEvent, raw model.RawJSON) error
	// AppendChange appends c to the change log and returns its cursor. The
	// cursor and commit_time fields of c are ignored: the cursor is assigned
	// here and the commit time is the transaction's. The raw payloads of c's
	// events are left out: the change log carries the normalized model only.
	//
	// A change's event or previous event that is an event (the same
	// pointer) this transaction last wrote with PutEvent, or that its
	// GetEvent returned, may be carried as it was written or read: a
	// backend may reuse the encoding it already made, so a change to such
	// an event made in between may not be seen: modify a copy
	// (proto.Clone) instead.
	AppendChange(ctx context.Context, c *calsyncv1.Change) (Cursor, error)
	// GetSyncState returns a calendar's provider sync state or ErrNotFound.
	GetSyncState(ctx context.Context, calendarID string) (SyncState, error)
	// PutSyncState stores a calendar's provider sync state.
	PutSyncState(ctx context.Context, s SyncState) error
	// FinishDelivery records the outcome of processing a delivery: DONE,
	// IGNORED or DEAD (with note as the reason, cut by [TruncateNote]).
	// ErrNotFound if no such delivery.
	FinishDelivery(ctx context.Context, id int64, state calsyncv1.DeliveryState, note string) error
}

// CalendarQuery selects calendars. Zero fields match everything.
type CalendarQuery struct {
	Provider           string
	ProviderCalendarID string
	// AfterID returns only calendars whose id sorts after it (keyset paging).
	AfterID string
	// Limit is the most calendars returned; 0 means no limit.
	Limit int
}

// EventQuery selects events. Zero fields match everything.
type EventQuery struct {
	// CalendarID keeps one calendar's events; empty (or "-", as in the API)
	// means every calendar.
	CalendarID string
	// Start keeps events that end after it; End keeps events that start
	// before it. Together: events overlapping [Start, End).
	Start, End time.Time
	// UpdatedSince keeps events whose update_time is at or after it.
	UpdatedSince   time.Time
	IncludeDeleted bool
	IncludeRaw     bool
	// After returns only events sorting after this key (keyset paging).
	After *EventKey
	// Limit is the most events returned; 0 means no limit.
	Limit int
}

// EventKey is an event's position in ListEvents order.
type EventKey struct {
	StartTime time.Time
	ID        string
}

// SnapshotFilter selects the events of a watch snapshot. Zero fields match
// everything.
type SnapshotFilter struct {
	CalendarIDs    []string
	Providers      []string
	IncludeDeleted bool
}

// SyncState is what calsync remembers about syncing one calendar from its
// provider.
type SyncState struct {
	CalendarID string
	// Watermark is the greatest provider updated_at seen in a completed
	// incremental sync; the next sync asks for changes at or after it.
	Watermark time.Time
	// LastFullSync is when a full resync last completed.
	LastFullSync time.Time
}

// ChangeRecord is one committed entry of the change log.
type ChangeRecord struct {
	Cursor     Cursor
	Type       calsyncv1.ChangeType
	CalendarID string
	Provider   string
	CommitTime time.Time
	// Change is the change as a marshaled [calsyncv1.Change] whose cursor
	// field is empty and whose commit_time is set. It is shared: never
	// modify it.
	Change []byte
}

// VisitRecords hands recs to visit in order, stopping at visit's first
// error and returning it: VisitChangePage for a change log that reads its
// page whole anyway.
func VisitRecords(recs []ChangeRecord, visit func(*ChangeRecord) error) error {
	for i := range recs {
		if err := visit(&recs[i]); err != nil {
			return err
		}
	}
	return nil
}

// ChangeBounds says which cursors the change log can resume after.
type ChangeBounds struct {
	// Compacted is the newest cursor removed by compaction: resuming after a
	// cursor older than Compacted fails with ErrCompacted.
	Compacted Cursor
	// Head is the newest committed cursor.
	Head Cursor
}

// ChangeLog is the ordered record of every change.
type ChangeLog interface {
	// ReadChanges returns up to limit committed changes with cursors greater
	// than after, in cursor order. ErrCompacted if after < Compacted.
	ReadChanges(ctx context.Context, after Cursor, limit int) ([]ChangeRecord, error)
	// ReadChangePage is ReadChanges bounded in bytes as well: it stops after
	// the change that brings the Change bytes it returns to maxBytes or
	// more. So it returns at least one change when any follows after, and
	// at most maxBytes plus one change's bytes; a page shorter than limit
	// does not mean the log ends there. maxBytes must be positive.
	ReadChangePage(ctx context.Context, after Cursor, limit, maxBytes int) ([]ChangeRecord, error)
	// VisitChangePage reads the page ReadChangePage would return and hands
	// its records to visit one at a time, in cursor order, instead of
	// returning them, so that a caller turning each change into something
	// else (a stream's frames) needs no copy of the page. A record and its
	// Change bytes are valid only until visit returns: the store may reuse
	// them. visit runs inside the store's read and must not call the
	// store. An error from visit ends the page and is returned as it is.
	// Records may be visited before the commits that wrote them are
	// durable: what the caller makes of them may leave the process (be
	// sent) only once VisitChangePage has returned nil, as ReadChangePage
	// returns only durable changes. On any error the caller discards it.
	// Nothing is visited when after < Compacted (ErrCompacted).
	VisitChangePage(ctx context.Context, after Cursor, limit, maxBytes int, visit func(*ChangeRecord) error) error
	// ChangeBounds returns the current bounds of the change log.
	ChangeBounds(ctx context.Context) (ChangeBounds, error)
	// CompactChanges removes changes committed before the given time, never
	// the newest change, without blocking writers for long. It returns how
	// many it removed.
	CompactChanges(ctx context.Context, before time.Time) (int64, error)
	// OnCommit registers fn to be called after every commit that appended
	// changes, with those changes in cursor order. Calls are made one at a
	// time, in cursor order, and together they carry every change
	// committed after fn was registered, each once, with no gap: fn must
	// not block or call back into the store.
	//
	// A backend one process owns (SQLite) calls fn once the commit is
	// durable, before the committing call returns, from the goroutine
	// that made it durable (the committer's or a sync goroutine's). A
	// backend several processes share (PostgreSQL) reports
	// the commits of every process, its own included, from a goroutine of
	// its own, shortly after they commit; a commit whose answer was lost
	// (the connection broke during COMMIT) is reported all the same.
	OnCommit(fn func([]ChangeRecord))
}

// NewDelivery is a verified webhook delivery to commit to the inbox.
type NewDelivery struct {
	Provider string
	// DedupKey identifies the delivery across retries: the Svix message id
	// for Recall, a hash of the body for postpress. A second delivery with
	// the same Provider and DedupKey, received within the store's dedupe
	// window of a stored one, is a duplicate (see [Inbox.Enqueue]).
	DedupKey string
	// MessageID is the provider's message id, if it has one.
	MessageID string
	// EventType is the webhook's event name, if it could be read.
	EventType string
	// OrderingKey groups deliveries that must be processed in order (the
	// calsync calendar id they concern); empty means no ordering.
	OrderingKey string
	Body        []byte
	// ReceiveTime is when calsync received the delivery; zero means now.
	// Dedupe compares receive times.
	ReceiveTime time.Time
	// ApplyEventID, for [ApplyingInbox.EnqueueApply], is the id of the
	// event apply reads first, when the webhook names it. A backend may
	// look the event up together with the delivery's dedupe check, so that
	// apply's read of a new event costs no statement of its own. It is a
	// hint: it changes no outcome, and Enqueue ignores it.
	ApplyEventID string
}

// ApplyFunc processes a delivery inside the transaction that commits it to
// the inbox (see [ApplyingInbox]). It writes through tx as an Update's fn
// does and returns the state the delivery is stored in: DONE, IGNORED or
// DEAD, with note (cut by [TruncateNote]) kept as its last error. An error
// undoes its writes and leaves the delivery PENDING (see
// [ApplyingInbox.EnqueueApply]). apply must not call [Tx.FinishDelivery]:
// the deliveries of its batch are not stored yet, and its own outcome is
// what it returns; a backend may fail such a call, and apply with it.
type ApplyFunc func(ctx context.Context, tx Tx) (state calsyncv1.DeliveryState, note string, err error)

// Enqueued is the outcome of [ApplyingInbox.EnqueueApply].
type Enqueued struct {
	ID        int64
	Duplicate bool
	// State is the state the delivery was stored in: PENDING when it was
	// left for asynchronous processing, or the outcome apply returned.
	// A duplicate's State is unspecified (nothing was stored).
	State calsyncv1.DeliveryState
}

// ApplyingInbox is an [Inbox] that can process a delivery in the same
// transaction that makes it durable, so that a webhook carrying all its
// data costs one commit instead of two. Backends implement it optionally;
// callers fall back to [Inbox.Enqueue] and asynchronous processing.
type ApplyingInbox interface {
	// EnqueueApply commits d as [Inbox.Enqueue] does (same dedupe, same
	// durability, same group commit, same ctx rules) and, in the same
	// transaction, processes it with apply:
	//
	//   - A duplicate changes nothing: apply is not called.
	//   - Order: if the inbox holds a PENDING delivery with the same
	//     non-empty OrderingKey (stored before, or earlier in the same
	//     transaction), apply is not called and d is stored PENDING, to be
	//     processed after it. So deliveries of one key are applied in
	//     inbox order, whether at intake or asynchronously.
	//   - Otherwise apply runs in the transaction, after the dedupe check
	//     and before any later delivery of the batch; the delivery is
	//     stored in the state apply returns, and the changes apply
	//     appended reach the [ChangeLog.OnCommit] hooks after the commit,
	//     in cursor order, before those of later transactions.
	//   - Isolation: if apply fails (or returns a state other than DONE,
	//     IGNORED or DEAD), its writes are undone, d is stored PENDING with
	//     the error as its last error, and the other deliveries of the
	//     batch are unaffected.
	//   - apply may be called more than once for one delivery (a batch is
	//     run again when one of its deliveries fails), each time in a
	//     transaction of which only the last commits; it must have no
	//     effect outside tx, and must not keep tx after returning.
	//
	// A nil error means d and everything apply wrote committed together,
	// durably; an error means nothing of d was stored.
	EnqueueApply(ctx context.Context, d NewDelivery, apply ApplyFunc) (Enqueued, error)
}

// Delivery is a webhook delivery in the inbox.
type Delivery struct {
	ID          int64
	Provider    string
	DedupKey    string
	MessageID   string
	EventType   string
	OrderingKey string
	Body        []byte
	State       calsyncv1.DeliveryState
	Attempts    int
	LastError   string
	ReceiveTime time.Time
	// ProcessTime is when it reached DONE, IGNORED or DEAD.
	ProcessTime time.Time
	// NextAttemptTime is when a PENDING delivery may be tried next.
	NextAttemptTime time.Time
}

// DeliveryQuery selects deliveries, newest first. Zero fields match
// everything.
type DeliveryQuery struct {
	State    calsyncv1.DeliveryState
	Provider string
	// BeforeID returns only deliveries with a smaller id (keyset paging).
	BeforeID int64
	Limit    int
}

// Inbox holds webhook deliveries from their commit until they are processed,
// and then for a retention period, after which [Inbox.PruneDeliveries]
// removes them.
//
// Dedupe is bounded in time. A store is configured with a dedupe window (a
// backend option; [DefaultDedupeWindow] unless set): a delivery is a
// duplicate when a delivery with the same Provider and DedupKey that is
// still stored was received less than the window before it (or after it).
// The same key received later is a new delivery, processed like any other:
// providers resend a byte-identical body for a new event (a postpress
// delete, deleted again after a restore), and only their retries, which
// all come within the window, are copies.
//
// Every wait for the database's writer honours the caller's ctx: a call
// whose ctx ends while it waits returns an error wrapping ctx.Err() and
// has written nothing. Its reads (PendingDeliveries, GetDelivery,
// ListDeliveries, InboxStats) see the store as [Reader]'s calls do, and the
// order holds across both: a read never sees an older state than one seen
// by any read, of either, that returned before it began.
type Inbox interface {
	// Enqueue commits d durably (it survives a crash once Enqueue returns)
	// and returns its id. A duplicate (see [Inbox]) returns the stored
	// delivery's id and duplicate = true, and changes nothing. Backends
	// batch concurrent calls into one transaction (group commit).
	//
	// If ctx ends before d joined a transaction, Enqueue returns an error
	// wrapping ctx.Err() and nothing is stored. Once d has joined one,
	// Enqueue waits for that transaction's outcome and reports it, so an
	// answer is always exact: a nil error means stored, an error means
	// not stored.
	Enqueue(ctx context.Context, d NewDelivery) (id int64, duplicate bool, err error)
	// PendingDeliveries returns up to limit PENDING deliveries with an id
	// greater than afterID, in id order, bodies included.
	PendingDeliveries(ctx context.Context, afterID int64, limit int) ([]Delivery, error)
	// GetDelivery returns one delivery, body included, or ErrNotFound.
	GetDelivery(ctx context.Context, id int64) (Delivery, error)
	// ListDeliveries returns deliveries matching q, newest first, without
	// bodies.
	ListDeliveries(ctx context.Context, q DeliveryQuery) ([]Delivery, error)
	// RecordAttempt records a failed attempt on a PENDING delivery: attempts
	// grows by one, lastErr is kept (cut by [TruncateNote]) and the delivery
	// is not tried before next. ErrNotFound if no such delivery;
	// ErrFailedPrecondition if it is not PENDING.
	RecordAttempt(ctx context.Context, id int64, lastErr string, next time.Time) error
	// RetryDelivery puts a DEAD delivery back to PENDING, due now.
	// ErrNotFound if no such delivery; ErrFailedPrecondition if not DEAD.
	RetryDelivery(ctx context.Context, id int64) (Delivery, error)
	// InboxStats summarizes the inbox for metrics: how many deliveries wait,
	// since when, and how many are dead-lettered.
	InboxStats(ctx context.Context) (InboxStats, error)
	// PruneDeliveries removes the finished deliveries (DONE, IGNORED and
	// DEAD) that were both received and finished before the given time, in
	// transactions small enough that webhooks never wait long for the
	// writer. PENDING deliveries are never removed; a dead letter stays
	// until it is retried or has been dead for as long as the caller's
	// retention. A removed delivery no longer absorbs duplicates, so
	// before must be at least the dedupe window in the past for dedupe
	// to hold. It returns how many it removed of each state, also when it
	// fails part way.
	PruneDeliveries(ctx context.Context, before time.Time) (PrunedDeliveries, error)
}

// DefaultDedupeWindow is how long a delivery absorbs copies of itself
// unless the store is configured otherwise. Svix retries a message over
// about 27.6 hours (immediately, then after 5 s, 5 min, 30 min, 2 h, 5 h,
// 10 h and 10 h); postpress makes five attempts with growing delays, a far
// shorter schedule. 72 hours covers Svix's more than twice over, leaving
// room for a manual replay from Svix's dashboard the next day.
const DefaultDedupeWindow = 72 * time.Hour

// PrunedDeliveries counts the deliveries one [Inbox.PruneDeliveries] call
// removed, by state.
type PrunedDeliveries struct {
	Done, Ignored, Dead int64
}

// Total is how many deliveries were removed.
func (p PrunedDeliveries) Total() int64 { return p.Done + p.Ignored + p.Dead }

// MaxNoteBytes is the most bytes of a delivery's last error or outcome note
// a store keeps. Notes carry provider text (a parse error quoting a field,
// say), and a provider can make that text as long as its payload.
const MaxNoteBytes = 1024

// truncatedMarker ends a note cut by [TruncateNote].
const truncatedMarker = " …[truncated]"

// TruncateNote returns s if it fits in MaxNoteBytes, and otherwise the
// longest prefix of it that, followed by a marker saying it was cut, fits.
// The prefix ends on a character boundary, so valid UTF-8 stays valid.
// Stores apply it to every note they keep; logs of provider text may use it
// too.
func TruncateNote(s string) string {
	if len(s) <= MaxNoteBytes {
		return s
	}
	cut := MaxNoteBytes - len(truncatedMarker)
	// Back off to the start of a character: continuation bytes of UTF-8
	// are 10xxxxxx.
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + truncatedMarker
}

// InboxStats is a summary of the inbox at one instant.
type InboxStats struct {
	// Pending is how many deliveries are PENDING.
	Pending int64
	// OldestPending is the receive time of the oldest PENDING delivery; zero
	// when none is pending.
	OldestPending time.Time
	// Dead is how many deliveries are DEAD.
	Dead int64
}

// ErrLeaseLost means a lease is no longer held with the token given: it
// expired and another owner took it, or it was released. Work done under
// it must not be committed.
var ErrLeaseLost = errors.New("store: lease lost")

// Lease is a time-limited, exclusive hold on a named piece of work, shared
// by every process on one database: one ordering key's pending deliveries
// (see [Claim]) or a role only one replica plays at a time (the leader).
type Lease struct {
	Name  string
	Owner string
	// Token is the lease's fencing token. It grows every time the lease
	// passes to an owner that did not hold it the moment before, and never
	// goes back, so a write checked against it ([LeaseTx.CheckLease]) fails
	// once another owner has taken over, however long the old owner was
	// paused.
	Token int64
	// Expires is when the lease ends unless renewed, by the database's
	// clock.
	Expires time.Time
}

// Leaser hands out leases. Backends a single process owns (SQLite) do
// not implement it: that process holds every lease. All calls are safe
// to make concurrently, from any number of processes.
type Leaser interface {
	// AcquireLease takes the lease name for owner for ttl from now when
	// no one holds it or its holder's lease expired (a new, greater
	// token), or renews it when owner holds it already (the same token).
	// held reports whether owner holds it now; when it does not, l is the
	// current holder's lease.
	AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (l Lease, held bool, err error)
	// RenewLease extends l to ttl from now if l's token still holds it,
	// expired or not; otherwise it fails with ErrLeaseLost.
	RenewLease(ctx context.Context, l Lease, ttl time.Duration) (Lease, error)
	// ReleaseLease gives l up if l's token still holds it, so that the
	// next AcquireLease of any owner succeeds at once. Releasing a lease
	// lost already is not an error.
	ReleaseLease(ctx context.Context, l Lease) error
}

// LeaseTx is a [Tx] that can make its commit depend on a lease: backends
// implementing [Leaser] give Update transactions that implement it.
type LeaseTx interface {
	Tx
	// CheckLease fails with ErrLeaseLost unless l's token holds the lease
	// now, expired or not, and otherwise keeps anyone from taking the
	// lease over until the transaction ends: a transaction that checked
	// its lease commits while it holds it, or fails.
	CheckLease(ctx context.Context, l Lease) error
}

// Claim is a lease on the PENDING deliveries of one ordering key: while
// it holds, its owner is the only process that processes them, in id
// order. A delivery stored without an ordering key is claimed on its own.
type Claim struct {
	Lease
	// OrderingKey is the key claimed; empty for a delivery without one,
	// whose id is then DeliveryID.
	OrderingKey string
	DeliveryID  int64
}

// ClaimingInbox is an [Inbox] that several processes work through at once,
// each claiming whole ordering keys, so that every delivery is processed
// by one process at a time and one key's deliveries in order. Backends a
// single process owns do not implement it.
type ClaimingInbox interface {
	Inbox
	Leaser
	// ClaimPending claims for owner, for ttl, up to limit ordering keys
	// (or single deliveries without one) whose oldest PENDING delivery is
	// due (its next attempt time is now or past) and whose claim no one
	// holds, or whose holder let it expire. Keys are claimed oldest
	// pending delivery first. Two concurrent calls never return the same
	// key. A claim is renewed and released with [Leaser.RenewLease] and
	// [Leaser.ReleaseLease].
	ClaimPending(ctx context.Context, owner string, ttl time.Duration, limit int) ([]Claim, error)
	// ClaimedDeliveries returns up to limit PENDING deliveries c covers
	// with an id greater than afterID, in id order, bodies included. One
	// key's deliveries commit in id order, so this is the order they are
	// to be processed in. It fails with ErrLeaseLost if c no longer holds.
	ClaimedDeliveries(ctx context.Context, c Claim, afterID int64, limit int) ([]Delivery, error)
}

// RateLimiter is a token bucket shared by every process on one database,
// for limits that a provider counts per account rather than per client
// (Recall's, per API key).
type RateLimiter interface {
	// TakeToken takes one token from the bucket name, which holds at most
	// burst tokens and gains one every interval, and returns 0; when the
	// bucket is empty it takes nothing and returns how long until a token
	// will be there. A bucket starts full.
	TakeToken(ctx context.Context, name string, interval time.Duration, burst int) (wait time.Duration, err error)
}

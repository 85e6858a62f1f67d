// Package watch broadcasts committed changes to WatchEvents streams. A
// [Hub] keeps the newest changes in memory, fed by the store's commit hook,
// and serves every stream from there; a stream that falls out of memory (a
// slow reader, or a resume from an old cursor) reads the change log instead
// and comes back to memory once it has caught up, so no stream ever slows
// ingestion or another stream. Each change is encoded once, as a [Frame]
// shared by every stream that receives it.
//
// Guarantees, per stream: changes in cursor order, with no gap and no
// duplicate, from any cursor within the change log's retention, across
// server restarts.
package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
)

// Config tunes a [Hub]. Zero fields take the defaults below.
type Config struct {
	// Retention is how long the change log keeps changes (default 7 days).
	// Cursors older than that fail with OUT_OF_RANGE.
	Retention time.Duration
	// CompactInterval is how often [Hub.RunCompaction] enforces Retention
	// (default a tenth of Retention, at most one minute).
	CompactInterval time.Duration
	// TailSize is how many of the newest changes are kept in memory for
	// streams to share (default 4096). Streams further behind read the
	// change log.
	TailSize int
	// TailBytes bounds the memory those changes take, their encoded frames
	// included (default 64 MiB): whichever of TailSize and TailBytes is
	// reached first evicts the oldest change, and streams behind it read
	// the change log. Changes of a few KB stay within TailSize; the bytes
	// bound is what holds when changes are large.
	TailBytes int64
	// BatchSize is the most changes a stream takes at once from memory
	// (default 256). A stream reading the change log takes pages of up to
	// 4×BatchSize changes and LogPageBytes bytes.
	BatchSize int
	// LogPageBytes bounds a page of the change log, in the changes' stored
	// bytes (default 1 MiB; a page holds at least one change). A stream
	// catching up holds at most 1+readAheadPages pages (logread.go).
	LogPageBytes int
	// DefaultBookmarkInterval applies when a request sets none (default 15s).
	DefaultBookmarkInterval time.Duration
	// MinBookmarkInterval is the shortest interval a request may ask for;
	// shorter ones are raised to it (default 1s).
	MinBookmarkInterval time.Duration
	// FutureCursorWait is how long a resume from a cursor ahead of the
	// store waits for the store to reach it before UNAVAILABLE (default 2s).
	FutureCursorWait time.Duration
	// Logger receives compaction reports; default slog.Default().
	Logger *slog.Logger
	// OnSent, if set, is told how many changes a stream just sent
	// (snapshot changes included), for metrics. It must not block.
	OnSent func(n int)
	// JSON encodes the messages of JSON streams ([Hub.WatchJSON]); the zero
	// value is protojson's default.
	JSON protojson.MarshalOptions
	// OnFallback, if set, is called when a stream finds itself behind the
	// changes kept in memory and starts reading the change log, for
	// metrics. It must not block.
	OnFallback func()
}

// Default values of [Config].
const (
	DefaultRetention           = 7 * 24 * time.Hour
	DefaultTailSize            = 4096
	DefaultTailBytes           = 64 << 20
	DefaultBatchSize           = 256
	DefaultLogPageBytes        = 1 << 20
	DefaultBookmarkInterval    = 15 * time.Second
	DefaultMinBookmarkInterval = time.Second
	DefaultFutureCursorWait    = 2 * time.Second
	maxCompactInterval         = time.Minute
	maxFilterValues            = 1000
	changeTypeCreated          = calsyncv1.ChangeType_CHANGE_TYPE_CREATED
)

func (c Config) withDefaults() (Config, error) {
	if c.Retention < 0 || c.CompactInterval < 0 || c.TailSize < 0 || c.TailBytes < 0 || c.BatchSize < 0 || c.LogPageBytes < 0 ||
		c.DefaultBookmarkInterval < 0 || c.MinBookmarkInterval < 0 || c.FutureCursorWait < 0 {
		return c, errors.New("watch: config values must not be negative")
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.CompactInterval == 0 {
		c.CompactInterval = min(c.Retention/10, maxCompactInterval)
	}
	if c.TailSize == 0 {
		c.TailSize = DefaultTailSize
	}
	if c.TailBytes == 0 {
		c.TailBytes = DefaultTailBytes
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.LogPageBytes == 0 {
		c.LogPageBytes = DefaultLogPageBytes
	}
	if c.MinBookmarkInterval == 0 {
		c.MinBookmarkInterval = DefaultMinBookmarkInterval
	}
	if c.DefaultBookmarkInterval == 0 {
		c.DefaultBookmarkInterval = max(DefaultBookmarkInterval, c.MinBookmarkInterval)
	}
	if c.DefaultBookmarkInterval < c.MinBookmarkInterval {
		return c, errors.New("watch: the default bookmark interval is below the minimum")
	}
	if c.FutureCursorWait == 0 {
		c.FutureCursorWait = DefaultFutureCursorWait
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.OnSent == nil {
		c.OnSent = func(int) {}
	}
	if c.OnFallback == nil {
		c.OnFallback = func() {}
	}
	return c, nil
}

// Hub fans committed changes out to any number of streams. Create one per
// store with [New]; it is safe for concurrent use.
type Hub struct {
	st     store.Store
	cfg    Config
	codec  CursorCodec
	log    *slog.Logger
	active atomic.Int64

	mu   sync.RWMutex
	tail tail
	// wakers wakes, after every commit, the waiting streams whose filters
	// may match one of its changes.
	wakers wakers

	// heads holds the streams waiting for a read of the change log's head
	// (see [Hub.now]); headsReading says a goroutine serves them.
	headsMu      sync.Mutex
	heads        []chan headRead
	headsReading bool
}

// headRead is the outcome of one read of the change log's head.
type headRead struct {
	head store.Cursor
	err  error
}

// New returns a hub fed by st's commit hook. It reads the change log's head
// once, so that "from now" means the newest committed change.
func New(ctx context.Context, st store.Store, cfg Config) (*Hub, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &Hub{
		st:     st,
		cfg:    cfg,
		codec:  NewCursorCodec(st.ID()),
		log:    cfg.Logger,
		tail:   newTail(cfg.TailSize, cfg.TailBytes),
		wakers: newWakers(),
	}
	// The hook goes first: every commit after the bounds are read is
	// then reported, and the tail ignores what it reports twice.
	st.OnCommit(h.onCommit)
	b, err := st.ChangeBounds(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch: read the change log's bounds: %w", err)
	}
	h.mu.Lock()
	h.tail.init(b.Head)
	h.mu.Unlock()
	return h, nil
}

// Cursors returns the codec of the hub's store, for callers that hand out
// cursors of their own (a list's position, for example).
func (h *Hub) Cursors() CursorCodec { return h.codec }

// MemoryBytes returns the memory the changes kept for streams take now: at
// most [Config.TailBytes].
func (h *Hub) MemoryBytes() int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.tail.bytes
}

// Head returns the newest cursor the hub holds: the change log's head when
// the hub started, then the newest change its store's commit hook
// reported. The change log's head minus Head is how far this process's
// watchers lag behind the log (see [store.ChangeLog.OnCommit]: on a store
// several processes share, other processes' changes arrive shortly after
// they commit).
func (h *Hub) Head() store.Cursor {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.tail.head
}

// Streams returns how many streams are open.
func (h *Hub) Streams() int { return int(h.active.Load()) }

// onCommit is the store's commit hook. It encodes each change once, outside
// the lock, and wakes the waiting streams the changes may concern. It never
// blocks on a stream.
func (h *Hub) onCommit(recs []store.ChangeRecord) {
	entries := make([]*entry, 0, len(recs))
	for _, r := range recs {
		entries = append(entries, newEntry(r, h.codec))
	}
	h.mu.Lock()
	added := entries[:0]
	for _, e := range entries {
		if h.tail.push(e) {
			added = append(added, e)
		}
	}
	// Streams are woken under the lock: a stream that reads the tail
	// afterwards sees these changes, and one that read it before is
	// signalled (see [stream.run]).
	h.wakers.notify(added)
	h.mu.Unlock()
}

// Compact removes the changes older than the retention window once and
// returns how many it removed.
func (h *Hub) Compact(ctx context.Context) (int64, error) {
	return h.st.CompactChanges(ctx, time.Now().Add(-h.cfg.Retention))
}

// RunCompaction enforces the retention window until ctx is done: once at
// start, then every CompactInterval. Failures are logged and retried at the
// next tick; they never stop watching.
func (h *Hub) RunCompaction(ctx context.Context) {
	t := time.NewTicker(h.cfg.CompactInterval)
	defer t.Stop()
	for {
		n, err := h.Compact(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			h.log.WarnContext(ctx, "change log compaction failed", "err", err)
		case n > 0:
			h.log.InfoContext(ctx, "change log compacted", "removed", n, "retention", h.cfg.Retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Watch serves one WatchEvents request until ctx is done, send fails, or the
// stream cannot continue. send is called from Watch's goroutine only, with
// frames that must not be modified.
//
// Every stream starts with a bookmark at its starting position (for an
// initial snapshot: the snapshot, then the bookmark that completes it), so a
// client holds a cursor to resume from before any change arrives.
//
// Errors are [*Error] values for what the client can act on (INVALID_ARGUMENT,
// OUT_OF_RANGE, UNAVAILABLE, RESOURCE_EXHAUSTED), ctx's error when it is
// done, send's error, or a store error.
func (h *Hub) Watch(ctx context.Context, req *calsyncv1.WatchEventsRequest, send func(Frame) error) error {
	return h.watch(ctx, req, frameOut{send: send})
}

// watch serves a request of [Hub.Watch] or [Hub.WatchJSON].
func (h *Hub) watch(ctx context.Context, req *calsyncv1.WatchEventsRequest, out output) error {
	s, err := h.newStream(req, out)
	if err != nil {
		return err
	}
	h.active.Add(1)
	defer h.active.Add(-1)

	var pos store.Cursor
	switch {
	case req.GetInitialSnapshot():
		if pos, err = h.snapshot(ctx, s, req); err != nil {
			return err
		}
	case req.GetAfterCursor() != "":
		if pos, err = h.codec.Decode(req.GetAfterCursor()); err != nil {
			return err
		}
		if err := h.checkResume(ctx, pos); err != nil {
			return err
		}
		if err := out.bookmark(req.GetAfterCursor(), false); err != nil {
			return err
		}
	default:
		if pos, err = h.now(ctx); err != nil {
			return err
		}
		if err := out.bookmark(h.codec.Encode(pos), false); err != nil {
			return err
		}
	}
	return s.run(ctx, pos)
}

// now returns the newest change committed to the store: where a stream
// "from now" starts. It is the change log's head rather than the newest
// change this hub holds, which trails the log for a moment when other
// processes commit to a shared database: a stream started after a change
// committed anywhere never receives it.
//
// Streams starting together share one read, made on a goroutine of its
// own: a burst of thousands of streams costs a few reads, and the streams'
// goroutines never grow their stacks inside the database driver (an idle
// stream's memory is mostly its stack).
func (h *Hub) now(ctx context.Context) (store.Cursor, error) {
	done := make(chan headRead, 1)
	h.headsMu.Lock()
	h.heads = append(h.heads, done)
	if !h.headsReading {
		h.headsReading = true
		go h.readHeads()
	}
	h.headsMu.Unlock()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case r := <-done:
		if r.err != nil {
			return 0, fmt.Errorf("watch: read the change log's bounds: %w", r.err)
		}
		h.mu.RLock()
		defer h.mu.RUnlock()
		return max(r.head, h.tail.head), nil
	}
}

// readHeads answers the streams waiting in heads until none is left. Every
// read starts after the requests it answers were made, so each stream gets
// a head at least as new as the instant it asked.
func (h *Hub) readHeads() {
	for {
		h.headsMu.Lock()
		waiting := h.heads
		h.heads = nil
		if len(waiting) == 0 {
			h.headsReading = false
			h.headsMu.Unlock()
			return
		}
		h.headsMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), headReadTimeout)
		b, err := h.st.ChangeBounds(ctx)
		cancel()
		for _, w := range waiting {
			w <- headRead{head: b.Head, err: err}
		}
	}
}

// headReadTimeout bounds one read of the change log's head, for a database
// that stopped answering; the streams waiting for it get its error.
const headReadTimeout = 10 * time.Second

// checkResume fails for a cursor the change log can no longer resume after,
// and waits up to FutureCursorWait for a cursor ahead of the store.
func (h *Hub) checkResume(ctx context.Context, after store.Cursor) error {
	b, err := h.st.ChangeBounds(ctx)
	if err != nil {
		return fmt.Errorf("watch: read the change log's bounds: %w", err)
	}
	if after < b.Compacted {
		return errCompacted(h.codec.Encode(b.Compacted))
	}
	if after <= b.Head {
		return nil
	}
	deadline := time.NewTimer(h.cfg.FutureCursorWait)
	defer deadline.Stop()
	for {
		h.mu.RLock()
		head, wake := h.tail.head, h.wakers.all
		h.mu.RUnlock()
		if head >= after {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-deadline.C:
			// The hook may lag the commit by a moment: ask the log.
			if b, err := h.st.ChangeBounds(ctx); err == nil && after <= b.Head {
				return nil
			}
			return errAhead()
		}
	}
}

// snapshot sends the current state of every matching event as CREATED
// changes, read at one instant, then the bookmark that completes the
// snapshot. It returns the change log position of that instant, where live
// changes continue.
func (h *Hub) snapshot(ctx context.Context, s *stream, req *calsyncv1.WatchEventsRequest) (store.Cursor, error) {
	f := store.SnapshotFilter{
		CalendarIDs:    req.GetCalendarIds(),
		Providers:      req.GetProviders(),
		IncludeDeleted: req.GetIncludeDeleted(),
	}
	sendCreated := s.filter.types == 0 || s.filter.types&(1<<changeTypeCreated) != 0
	pos, err := h.st.Snapshot(ctx, f, func(ev *calsyncv1.CalendarEvent) error {
		if !sendCreated {
			return nil
		}
		if err := s.out.snapshot(ev); err != nil {
			return err
		}
		h.cfg.OnSent(1)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return pos, s.out.bookmark(h.codec.Encode(pos), true)
}

// filter is what a stream keeps of a request's filters. Empty sets match
// everything.
type filter struct {
	calendars map[string]struct{}
	providers map[string]struct{}
	types     uint64 // bit i set: ChangeType i passes
}

func (f *filter) matches(e *entry) bool {
	if f.types != 0 && f.types&(1<<uint(e.typ)) == 0 {
		return false
	}
	if f.providers != nil {
		if _, ok := f.providers[e.provider]; !ok {
			return false
		}
	}
	if f.calendars != nil {
		if _, ok := f.calendars[e.calendarID]; !ok {
			return false
		}
	}
	return true
}

// stream is one subscriber: its position is all it needs, because the
// changes themselves are shared.
type stream struct {
	hub             *Hub
	out             output
	filter          filter
	includePrevious bool
	interval        time.Duration
	// ahead holds the change log pages being read ahead, in cursor order
	// (logread.go).
	ahead []*pageAhead
}

// newStream validates a request.
func (h *Hub) newStream(req *calsyncv1.WatchEventsRequest, out output) (*stream, error) {
	s := &stream{hub: h, out: out, includePrevious: req.GetIncludePrevious(), interval: h.cfg.DefaultBookmarkInterval}
	if req.GetInitialSnapshot() && req.GetAfterCursor() != "" {
		return nil, errInvalid("initial_snapshot cannot be combined with after_cursor: resume from the snapshot's bookmark instead")
	}
	if n := len(req.GetCalendarIds()); n > maxFilterValues {
		return nil, errInvalid(fmt.Sprintf("calendar_ids has %d values; the most is %d", n, maxFilterValues))
	}
	for i, id := range req.GetCalendarIds() {
		if !model.ValidID("cal_", id) {
			return nil, errInvalid(fmt.Sprintf("calendar_ids[%d] is not a calsync calendar id (cal_...)", i))
		}
		if s.filter.calendars == nil {
			s.filter.calendars = map[string]struct{}{}
		}
		s.filter.calendars[id] = struct{}{}
	}
	for i, p := range req.GetProviders() {
		if p != model.ProviderRecall && p != model.ProviderPostpress {
			return nil, errInvalid(fmt.Sprintf(`providers[%d] must be "recall" or "postpress"`, i))
		}
		if s.filter.providers == nil {
			s.filter.providers = map[string]struct{}{}
		}
		s.filter.providers[p] = struct{}{}
	}
	for i, t := range req.GetChangeTypes() {
		if _, known := calsyncv1.ChangeType_name[int32(t)]; !known || t == calsyncv1.ChangeType_CHANGE_TYPE_UNSPECIFIED {
			return nil, errInvalid(fmt.Sprintf("change_types[%d] is not a change type", i))
		}
		s.filter.types |= 1 << uint(t)
	}
	if d := req.GetBookmarkInterval(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, errInvalid("bookmark_interval must be a valid, non-negative duration")
		}
		if d.AsDuration() > 0 {
			s.interval = max(d.AsDuration(), h.cfg.MinBookmarkInterval)
		}
	}
	return s, nil
}

// run sends every matching change after pos, live, until an error. A
// stream reads from the hub's tail while its position is there and from the
// change log otherwise; either way it holds at most BatchSize changes.
//
// A stream filtered to calendars is woken only by commits for its calendars
// (see [wakers]), yet its position must keep up with the tail's head: its
// bookmarks should carry a recent cursor, and a position the tail has
// evicted sends it to the change log. So once a read has looked at every
// change up to the head, the next read skips the changes committed since
// for other calendars: up to the first for its calendars, or to the head if
// there is none.
func (s *stream) run(ctx context.Context, pos store.Cursor) error {
	h := s.hub
	var w *waiter
	if cals := s.filter.calendars; cals != nil {
		h.mu.Lock()
		w = h.wakers.register(cals)
		h.mu.Unlock()
		defer func() {
			h.mu.Lock()
			h.wakers.unregister(w, cals)
			h.mu.Unlock()
		}()
	}
	start := pos
	lastSend := time.Now()
	timer := time.NewTimer(s.interval)
	defer timer.Stop()
	var (
		batch  []*entry
		inTail bool
		// inLog says the stream is reading the change log, so that a
		// fallback is reported once, not once per batch.
		inLog bool
		// caughtUp says the last read reached the tail's head.
		caughtUp    bool
		bookmarkDue bool
		// gaps is the tail's count of gaps at the last read.
		gaps uint64
	)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h.mu.RLock()
		shared := h.wakers.all
		if w != nil {
			// After a gap in the reported changes (see [tail.push]), what
			// came between is unknown: the read must start from pos.
			if caughtUp && gaps == h.tail.gaps {
				// No commit can run while the lock is held, so pending
				// and head agree: nothing between the last read's head
				// and pending (or the head, if none) is for this stream.
				if w.pending != 0 {
					pos = max(pos, w.pending-1)
				} else {
					pos = max(pos, h.tail.head)
				}
			}
			w.pending = 0
			shared = nil // commits for other calendars do not concern it
		}
		batch, inTail = h.tail.after(pos, batch[:0], h.cfg.BatchSize)
		head := h.tail.head
		gaps = h.tail.gaps
		h.mu.RUnlock()
		caughtUp = inTail && (len(batch) == 0 || batch[len(batch)-1].cursor == head)
		if !inTail {
			if !inLog {
				inLog = true
				h.cfg.OnFallback()
			}
			var err error
			if batch, err = s.readLog(ctx, pos, start, batch); err != nil {
				return err
			}
		} else {
			inLog = false
		}
		sent := 0
		for i, e := range batch {
			if s.filter.matches(e) {
				if err := s.out.change(e, s.includePrevious); err != nil {
					h.cfg.OnSent(sent)
					return err
				}
				sent++
			}
			pos = e.cursor
			batch[i] = nil // let evicted changes go
		}
		if sent > 0 {
			if err := s.out.flush(); err != nil {
				h.cfg.OnSent(sent)
				return err
			}
			// Once per batch, not per change: the clock showed in catch-up
			// profiles.
			lastSend = time.Now()
			h.cfg.OnSent(sent)
		}

		if bookmarkDue {
			// Idle, or every recent change was filtered out: say where the
			// stream is, so a resume need not re-read what was skipped.
			// The read above brought pos up to date.
			bookmarkDue = false
			if idle := time.Since(lastSend); idle < s.interval {
				timer.Reset(s.interval - idle)
			} else {
				if err := s.out.bookmark(h.codec.Encode(pos), false); err != nil {
					return err
				}
				lastSend = time.Now()
				timer.Reset(s.interval)
			}
		}
		var wake <-chan struct{}
		if w != nil {
			wake = w.wake
		}
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-shared:
			case <-wake:
			case <-timer.C:
				bookmarkDue = true
			}
		} else {
			select {
			case <-timer.C:
				bookmarkDue = true
			default:
			}
		}
	}
}

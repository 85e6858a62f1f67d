package client

import (
	"cmp"
	"context"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// InformerOptions selects the events an [Informer] keeps. Zero fields match
// everything.
type InformerOptions struct {
	// CalendarIDs and Providers keep the events of these calendars and
	// providers; calsync filters them before sending.
	CalendarIDs []string
	Providers   []string
	// Start and End keep the events overlapping [Start, End): those that end
	// after Start and start before End. The window is fixed: an event whose
	// time moves out of it leaves the cache (OnDelete).
	Start, End time.Time
	// Match, if set, keeps only the events it returns true for, for
	// example those with a meeting URL. An event that stops matching
	// leaves the cache (OnDelete); one that starts matching enters it
	// (OnAdd). It must not modify the event.
	Match func(*calsyncv1.CalendarEvent) bool
	// NewBackoff and OnRetry are passed to [Client.Watch].
	NewBackoff func() backoff.BackOff
	OnRetry    func(err error, wait time.Duration)
}

// EventHandler is told how the informer's cache changes. Any field may be
// nil. Calls come one at a time, in order, from the goroutine running
// [Informer.Run], after the cache already holds the change; a handler may
// call the informer's Get and List, and must not modify the events it gets.
type EventHandler struct {
	// OnAdd is called when an event enters the cache.
	OnAdd func(ev *calsyncv1.CalendarEvent)
	// OnUpdate is called when a cached event changes.
	OnUpdate func(old, new *calsyncv1.CalendarEvent)
	// OnDelete is called with the last cached state of an event that was
	// deleted, or that no longer matches the informer's options.
	OnDelete func(ev *calsyncv1.CalendarEvent)
}

// Informer keeps a local, always current copy of the events matching its
// options: filled by a snapshot, then kept current by [Client.Watch], and
// refilled by a fresh snapshot whenever calsync can no longer replay what
// was missed. After a refill the cache equals calsync's state, and handlers
// are told only the differences (what was added, updated and deleted
// meanwhile), not a replay of everything.
//
// Get, List, HasSynced and WaitForSync are safe for concurrent use, also
// while Run updates the cache.
type Informer struct {
	client *Client
	opts   InformerOptions

	mu       sync.RWMutex
	events   map[string]*calsyncv1.CalendarEvent
	handlers []EventHandler

	syncOnce sync.Once
	synced   chan struct{}
}

// NewInformer returns an informer of the events matching opts. It does
// nothing until [Informer.Run].
func NewInformer(c *Client, opts InformerOptions) *Informer {
	return &Informer{client: c, opts: opts, events: map[string]*calsyncv1.CalendarEvent{}, synced: make(chan struct{})}
}

// AddEventHandler registers h. Register handlers before Run to see every
// event from the first snapshot on.
func (i *Informer) AddEventHandler(h EventHandler) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.handlers = append(i.handlers, h)
}

// Run fills the cache and keeps it current until ctx ends (then it returns
// nil) or the watch fails for good (see [Client.Watch]). Call it once.
func (i *Informer) Run(ctx context.Context) error {
	return i.client.Watch(ctx, WatchOptions{
		CalendarIDs: i.opts.CalendarIDs,
		Providers:   i.opts.Providers,
		ChangeTypes: []calsyncv1.ChangeType{
			calsyncv1.ChangeType_CHANGE_TYPE_CREATED,
			calsyncv1.ChangeType_CHANGE_TYPE_UPDATED,
			calsyncv1.ChangeType_CHANGE_TYPE_DELETED,
		},
		StartWithSnapshot: true,
		NewBackoff:        i.opts.NewBackoff,
		OnRetry:           i.opts.OnRetry,
	}, Handler{OnChange: i.apply, OnResync: i.refill})
}

// HasSynced reports whether the cache was filled by a first snapshot.
func (i *Informer) HasSynced() bool {
	select {
	case <-i.synced:
		return true
	default:
		return false
	}
}

// WaitForSync waits until the cache was filled by a first snapshot, or ctx
// ends (then it returns ctx's error).
func (i *Informer) WaitForSync(ctx context.Context) error {
	select {
	case <-i.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Get returns the cached event with calsync id id.
func (i *Informer) Get(id string) (*calsyncv1.CalendarEvent, bool) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	ev, ok := i.events[id]
	return ev, ok
}

// List returns the cached events overlapping [start, end) (a zero bound is
// open), ordered by start time, then id, as calsync's ListEvents orders
// them.
func (i *Informer) List(start, end time.Time) []*calsyncv1.CalendarEvent {
	i.mu.RLock()
	out := make([]*calsyncv1.CalendarEvent, 0, len(i.events))
	for _, ev := range i.events {
		if overlaps(ev, start, end) {
			out = append(out, ev)
		}
	}
	i.mu.RUnlock()
	slices.SortFunc(out, byStartThenID)
	return out
}

func byStartThenID(a, b *calsyncv1.CalendarEvent) int {
	if c := a.GetStartTime().AsTime().Compare(b.GetStartTime().AsTime()); c != 0 {
		return c
	}
	return cmp.Compare(a.GetId(), b.GetId())
}

// overlaps reports whether ev ends after start and starts before end; zero
// bounds are open.
func overlaps(ev *calsyncv1.CalendarEvent, start, end time.Time) bool {
	if !start.IsZero() && !ev.GetEndTime().AsTime().After(start) {
		return false
	}
	if !end.IsZero() && !ev.GetStartTime().AsTime().Before(end) {
		return false
	}
	return true
}

// keeps reports whether ev belongs in the cache.
func (i *Informer) keeps(ev *calsyncv1.CalendarEvent) bool {
	if ev == nil || ev.GetDeleted() || !overlaps(ev, i.opts.Start, i.opts.End) {
		return false
	}
	return i.opts.Match == nil || i.opts.Match(ev)
}

// apply folds one live change into the cache.
func (i *Informer) apply(_ context.Context, c *calsyncv1.Change) error {
	ev := c.GetEvent()
	if ev == nil {
		return nil
	}
	keep := i.keeps(ev)
	i.mu.Lock()
	old, had := i.events[ev.GetId()]
	if keep {
		i.events[ev.GetId()] = ev
	} else {
		delete(i.events, ev.GetId())
	}
	handlers := i.handlers
	i.mu.Unlock()
	switch {
	case keep && !had:
		notify(handlers, func(h EventHandler) { call1(h.OnAdd, ev) })
	case keep && had:
		notify(handlers, func(h EventHandler) { call2(h.OnUpdate, old, ev) })
	case !keep && had:
		notify(handlers, func(h EventHandler) { call1(h.OnDelete, old) })
	}
	return nil
}

// refill replaces the cache by a snapshot and tells the handlers what
// differs from the cache it replaces.
func (i *Informer) refill(_ context.Context, snapshot iter.Seq2[*calsyncv1.CalendarEvent, error]) error {
	fresh := map[string]*calsyncv1.CalendarEvent{}
	for ev, err := range snapshot {
		if err != nil {
			return err
		}
		if i.keeps(ev) {
			fresh[ev.GetId()] = ev
		}
	}
	i.mu.Lock()
	old := i.events
	i.events = fresh
	handlers := i.handlers
	i.mu.Unlock()

	var added, updated, deleted []*calsyncv1.CalendarEvent
	for id, ev := range fresh {
		prev, ok := old[id]
		switch {
		case !ok:
			added = append(added, ev)
		case !proto.Equal(prev, ev):
			updated = append(updated, ev)
		}
	}
	for id, ev := range old {
		if _, ok := fresh[id]; !ok {
			deleted = append(deleted, ev)
		}
	}
	// Handlers see the differences in a stable order: deletes, then adds
	// and updates by start time.
	slices.SortFunc(deleted, byStartThenID)
	slices.SortFunc(added, byStartThenID)
	slices.SortFunc(updated, byStartThenID)
	for _, ev := range deleted {
		notify(handlers, func(h EventHandler) { call1(h.OnDelete, ev) })
	}
	for _, ev := range added {
		notify(handlers, func(h EventHandler) { call1(h.OnAdd, ev) })
	}
	for _, ev := range updated {
		notify(handlers, func(h EventHandler) { call2(h.OnUpdate, old[ev.GetId()], ev) })
	}
	i.syncOnce.Do(func() { close(i.synced) })
	return nil
}

func notify(handlers []EventHandler, f func(EventHandler)) {
	for _, h := range handlers {
		f(h)
	}
}

func call1(f func(*calsyncv1.CalendarEvent), ev *calsyncv1.CalendarEvent) {
	if f != nil {
		f(ev)
	}
}

func call2(f func(old, new *calsyncv1.CalendarEvent), old, ev *calsyncv1.CalendarEvent) {
	if f != nil {
		f(old, ev)
	}
}

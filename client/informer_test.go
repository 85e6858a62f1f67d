package client_test

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calsync/calsync/client"
	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/watch/watchtest"
)

// mirror is an informer's handlers keeping their own copy of the cache, and
// the calls they received since the last reset.
type mirror struct {
	mu      sync.Mutex
	events  map[string]*calsyncv1.CalendarEvent
	adds    []string
	updates []string
	deletes []string
	bad     []string
}

func newMirror(inf *client.Informer) *mirror {
	m := &mirror{events: map[string]*calsyncv1.CalendarEvent{}}
	inf.AddEventHandler(client.EventHandler{
		OnAdd: func(ev *calsyncv1.CalendarEvent) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if _, ok := m.events[ev.GetId()]; ok {
				m.bad = append(m.bad, "OnAdd of a known event "+ev.GetId())
			}
			m.events[ev.GetId()] = ev
			m.adds = append(m.adds, ev.GetTitle())
		},
		OnUpdate: func(old, ev *calsyncv1.CalendarEvent) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if !proto.Equal(m.events[ev.GetId()], old) {
				m.bad = append(m.bad, "OnUpdate whose old state is not the last one seen: "+ev.GetId())
			}
			m.events[ev.GetId()] = ev
			m.updates = append(m.updates, ev.GetTitle())
		},
		OnDelete: func(ev *calsyncv1.CalendarEvent) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if _, ok := m.events[ev.GetId()]; !ok {
				m.bad = append(m.bad, "OnDelete of an unknown event "+ev.GetId())
			}
			delete(m.events, ev.GetId())
			m.deletes = append(m.deletes, ev.GetTitle())
		},
	})
	return m
}

func (m *mirror) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adds, m.updates, m.deletes = nil, nil, nil
}

func (m *mirror) calls() (adds, updates, deletes []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(slices.Values(m.adds)), slices.Sorted(slices.Values(m.updates)), slices.Sorted(slices.Values(m.deletes))
}

// runInformer runs inf until the test ends and waits for its first sync.
func runInformer(t *testing.T, inf *client.Informer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inf.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Informer.Run: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := inf.WaitForSync(wctx); err != nil {
		t.Fatalf("WaitForSync: %v", err)
	}
}

// serverEvents is calsync's state: every live event, by id, as ListEvents
// returns it.
func serverEvents(t *testing.T, c *client.Client) map[string]*calsyncv1.CalendarEvent {
	t.Helper()
	out := map[string]*calsyncv1.CalendarEvent{}
	for ev, err := range c.ListEvents(context.Background(), &calsyncv1.ListEventsRequest{PageSize: 7}) {
		if err != nil {
			t.Fatalf("ListEvents: %v", err)
		}
		out[ev.GetId()] = ev
	}
	return out
}

// sameEvents says how a and b differ, or "" when they hold equal events.
func sameEvents(a, b map[string]*calsyncv1.CalendarEvent) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d events against %d", len(a), len(b))
	}
	for id, ev := range a {
		if !proto.Equal(ev, b[id]) {
			return fmt.Sprintf("event %s differs: %v against %v", id, ev, b[id])
		}
	}
	return ""
}

// view is what the handlers saw, as a map like cacheOf's.
func (m *mirror) view() map[string]*calsyncv1.CalendarEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.events)
}

func cacheOf(inf *client.Informer) map[string]*calsyncv1.CalendarEvent {
	out := map[string]*calsyncv1.CalendarEvent{}
	for _, ev := range inf.List(time.Time{}, time.Time{}) {
		out[ev.GetId()] = ev
	}
	return out
}

// TestInformerResyncAfterCompaction: changes made through real webhooks
// while the informer is disconnected are compacted away; on reconnecting it
// resyncs, its cache equals ListEvents, and its handlers are told exactly
// the net differences.
func TestInformerResyncAfterCompaction(t *testing.T) {
	ts := startServer(t)
	px := startProxy(t, ts.grpcAddr)
	c := newClient(t, px.Addr())
	start := time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC)
	version := 0
	send := func(kind string, n int, title string) {
		version++
		mustSendWebhook(t, ts, postpressEvent{Event: kind, ID: fmt.Sprintf("evt-%d", n), Title: title,
			Start: start.Add(time.Duration(n) * time.Hour), Version: version})
	}
	processed := func() {
		waitFor(t, "every delivery processed", func() bool {
			stats, err := ts.Store().InboxStats(context.Background())
			return err == nil && stats.Pending == 0 && stats.Dead == 0
		})
	}
	for n := range 6 {
		send(postpress.EventCreated, n, fmt.Sprintf("e%d", n))
	}
	processed()
	inf := client.NewInformer(c, client.InformerOptions{NewBackoff: fastRetry})
	m := newMirror(inf)
	runInformer(t, inf)
	if adds, _, _ := m.calls(); len(adds) != 6 {
		t.Fatalf("first sync added %v, want the 6 events", adds)
	}
	send(postpress.EventUpdated, 0, "e0 live")
	waitFor(t, "a live update", func() bool { ev, ok := inf.Get(eventID(0)); return ok && ev.GetTitle() == "e0 live" })

	px.SetDown(true)
	m.reset()
	send(postpress.EventUpdated, 1, "e1 changed")
	send(postpress.EventDeleted, 2, "")
	send(postpress.EventCreated, 6, "e6")
	send(postpress.EventCreated, 7, "e7 short-lived")
	send(postpress.EventDeleted, 7, "")
	send(postpress.EventUpdated, 3, "e3 first")
	send(postpress.EventUpdated, 3, "e3 second")
	processed()
	st := ts.Store()
	if n, err := st.CompactChanges(context.Background(), time.Now().Add(time.Second)); err != nil || n == 0 {
		t.Fatalf("compaction removed %d changes: %v", n, err)
	}
	if _, err := st.ReadChanges(context.Background(), 1, 1); err == nil {
		t.Fatal("the informer's cursor is still in the change log: it would not need a resync")
	}
	px.SetDown(false)

	want := serverEvents(t, newClient(t, ts.grpcAddr))
	// The cache changes first, then the handlers are told.
	waitFor(t, "the cache and the handlers' view to equal ListEvents", func() bool {
		return sameEvents(cacheOf(inf), want) == "" && sameEvents(m.view(), want) == ""
	})
	adds, updates, deletes := m.calls()
	if fmt.Sprint(adds) != "[e6]" || fmt.Sprint(updates) != "[e1 changed e3 second]" || fmt.Sprint(deletes) != "[e2]" {
		t.Errorf("handlers saw adds %q, updates %q, deletes %q; want the net differences: adds [e6], updates [e1 changed, e3 second], deletes [e2]", adds, updates, deletes)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.bad) > 0 {
		t.Errorf("the handlers were told inconsistent things: %v", m.bad)
	}
}

func eventID(n int) string {
	w := postpress.Webhook{AccountID: "acct-1", ProviderCalendarID: "owner@example.com", ID: fmt.Sprintf("evt-%d", n)}
	return w.EventID()
}

var seedFlag = flag.Uint64("seed", 0, "seed of TestInformerRandomSchedules (0: a new one)")

// TestInformerRandomSchedules runs random schedules of creates, updates and
// deletes, with random disconnects and compactions, and requires the
// informer's cache, and the view its handlers built, to equal calsync's
// state at the end. A failure prints the seed; -seed replays it.
func TestInformerRandomSchedules(t *testing.T) {
	ts := startServer(t)
	st := ts.Store()
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with: go test ./client -run TestInformerRandomSchedules -seed %d", seed)
		}
	})
	rng := rand.New(rand.NewPCG(seed, seed))
	direct := newClient(t, ts.grpcAddr)
	for round := range 3 {
		px := startProxy(t, ts.grpcAddr)
		c := newClient(t, px.Addr())
		cal := watchtest.CalendarID(model.ProviderPostpress, round)
		window := client.InformerOptions{CalendarIDs: []string{cal}, NewBackoff: fastRetry,
			// A window that half of the events fall out of.
			Start: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC),
			Match: func(ev *calsyncv1.CalendarEvent) bool { return ev.GetTitle() != "hidden" }}
		inf := client.NewInformer(c, window)
		m := newMirror(inf)
		runInformer(t, inf)
		live := map[int]*calsyncv1.CalendarEvent{}
		down := false
		for op := range 150 {
			n := rng.IntN(12)
			ev := watchtest.Event(model.ProviderPostpress, cal, n, fmt.Sprintf("r%d op%d", round, op))
			if rng.IntN(8) == 0 {
				ev.Title = "hidden"
			}
			prev, exists := live[n]
			var change *calsyncv1.Change
			switch {
			case !exists:
				change = watchtest.Created(ev)
			case rng.IntN(3) == 0:
				change = watchtest.Deleted(prev)
			default:
				change = watchtest.Updated(prev, ev)
			}
			watchtest.Commit(t, st, change)
			if change.GetType() == calsyncv1.ChangeType_CHANGE_TYPE_DELETED {
				delete(live, n)
			} else {
				live[n] = ev
			}
			switch r := rng.IntN(40); {
			case r == 0:
				px.Cut()
			case r == 1:
				down = !down
				px.SetDown(down)
			case r == 2 && down:
				if _, err := st.CompactChanges(context.Background(), time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
			}
		}
		px.SetDown(false)
		want := map[string]*calsyncv1.CalendarEvent{}
		for ev, err := range direct.ListEvents(context.Background(), &calsyncv1.ListEventsRequest{CalendarId: cal, StartTime: timestamppb.New(window.Start)}) {
			if err != nil {
				t.Fatal(err)
			}
			if ev.GetTitle() != "hidden" {
				want[ev.GetId()] = ev
			}
		}
		// The cache changes first, then the handlers are told: both end
		// equal to calsync's state.
		deadline := time.Now().Add(20 * time.Second)
		for sameEvents(cacheOf(inf), want) != "" || sameEvents(m.view(), want) != "" {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the informer never matched calsync's state: cache: %s; handlers: %s", round,
					sameEvents(cacheOf(inf), want), sameEvents(m.view(), want))
			}
			time.Sleep(5 * time.Millisecond)
		}
		m.mu.Lock()
		if len(m.bad) > 0 {
			t.Errorf("round %d: the handlers were told inconsistent things: %v", round, m.bad)
		}
		m.mu.Unlock()
		got := inf.List(time.Time{}, time.Time{})
		if !sort.SliceIsSorted(got, func(i, j int) bool {
			a, b := got[i].GetStartTime().AsTime(), got[j].GetStartTime().AsTime()
			return a.Before(b) || a.Equal(b) && got[i].GetId() < got[j].GetId()
		}) {
			t.Errorf("round %d: List is not ordered by start time, then id", round)
		}
	}
}

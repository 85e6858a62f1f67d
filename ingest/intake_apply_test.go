package ingest

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
)

// TestPostpressAppliedAtIntake checks that a postpress webhook is applied
// by the commit that answers it: with no processor running, its event and
// change are stored and its delivery finished as soon as Receive returns,
// and an authenticated body that cannot be used is dead-lettered with the
// reason at once.
func TestPostpressAppliedAtIntake(t *testing.T) {
	ctx := context.Background()
	h := http.Header{"Postpress-Auth": {testPostpressSecret}}
	var mu sync.Mutex
	outcomes := map[string]int{}
	p := newPipeline(t, nil, func(c *ProcessorConfig) {
		c.OnProcessed = func(provider, outcome string, n int, _ time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			outcomes[provider+"/"+outcome] += n
		}
	}) // never started

	rc, err := p.recv.Receive(ctx, model.ProviderPostpress, ppVersion("evt1", 0, false), h)
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.st.GetDelivery(ctx, rc.DeliveryID)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != calsyncv1.DeliveryState_DELIVERY_STATE_DONE {
		t.Fatalf("delivery is %v after Receive, want DONE", d.State)
	}
	changes := changesByEvent(t, p.st)
	if len(changes) != 1 {
		t.Fatalf("change log holds %d events, want the one received", len(changes))
	}
	for id, cs := range changes {
		checkLog(t, p.st, id, cs)
	}

	// A retry of the same body changes nothing.
	again, err := p.recv.Receive(ctx, model.ProviderPostpress, ppVersion("evt1", 0, false), h)
	if err != nil || !again.Duplicate || again.DeliveryID != rc.DeliveryID {
		t.Fatalf("retry: %+v, %v; want a duplicate of %d", again, err, rc.DeliveryID)
	}

	bad, err := p.recv.Receive(ctx, model.ProviderPostpress, []byte(`{"event":"calendar_event_created","id":`), h)
	if err != nil {
		t.Fatal(err)
	}
	d, err = p.st.GetDelivery(ctx, bad.DeliveryID)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != calsyncv1.DeliveryState_DELIVERY_STATE_DEAD || d.LastError == "" {
		t.Errorf("unparsable delivery: %v %q, want DEAD with the reason", d.State, d.LastError)
	}
	s, err := p.st.InboxStats(ctx)
	if err != nil || s.Pending != 0 || s.Dead != 1 {
		t.Errorf("InboxStats = %+v, %v; want nothing pending and one dead letter", s, err)
	}
	// The processing metrics count deliveries applied at intake.
	mu.Lock()
	defer mu.Unlock()
	if want := map[string]int{"postpress/done": 1, "postpress/dead": 1}; !maps.Equal(outcomes, want) {
		t.Errorf("outcomes reported: %v, want %v", outcomes, want)
	}
}

// TestPostpressWaitsBehindPendingOfItsCalendar checks per-calendar order
// across the two paths: while a delivery of a calendar waits in the inbox,
// a newer one of the same calendar is not applied at intake but waits
// behind it, and the processor applies both in order.
func TestPostpressWaitsBehindPendingOfItsCalendar(t *testing.T) {
	ctx := context.Background()
	h := http.Header{"Postpress-Auth": {testPostpressSecret}}
	p := newPipeline(t, nil, func(*ProcessorConfig) {})
	if _, err := p.recv.Receive(ctx, model.ProviderPostpress, ppVersion("evt1", 0, false), h); err != nil {
		t.Fatal(err)
	}
	// Version 1 waits in the inbox, as one waiting for a retry would.
	deferred := NewReceiver(p.st, ReceiverConfig{Postpress: p.recv.postpress})
	if _, err := deferred.Receive(ctx, model.ProviderPostpress, ppVersion("evt1", 1, false), h); err != nil {
		t.Fatal(err)
	}
	rc, err := p.recv.Receive(ctx, model.ProviderPostpress, ppVersion("evt1", 2, false), h)
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.st.GetDelivery(ctx, rc.DeliveryID)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != calsyncv1.DeliveryState_DELIVERY_STATE_PENDING {
		t.Fatalf("delivery behind a pending one of its calendar is %v, want PENDING", d.State)
	}
	p.start(t)
	p.drain(t)
	changes := changesByEvent(t, p.st)
	for id, cs := range changes {
		if n := checkLog(t, p.st, id, cs); n != 3 {
			t.Fatalf("%d changes of %s, want 3", n, id)
		}
		for i, c := range cs {
			if want := "version " + string(rune('0'+i)); !strings.Contains(c.GetEvent().GetTitle(), want) {
				t.Errorf("change %d is %q, want %s", i, c.GetEvent().GetTitle(), want)
			}
		}
	}
}

// namingInbox is a store that records the event each delivery applied at
// intake names to it (store.NewDelivery.ApplyEventID).
type namingInbox struct {
	store.Store
	mu    sync.Mutex
	named []string
}

func (n *namingInbox) EnqueueApply(ctx context.Context, d store.NewDelivery, apply store.ApplyFunc) (store.Enqueued, error) {
	n.mu.Lock()
	n.named = append(n.named, d.ApplyEventID)
	n.mu.Unlock()
	return n.Store.(store.ApplyingInbox).EnqueueApply(ctx, d, apply)
}

// TestPostpressNamesItsEventToTheStore checks that a postpress webhook
// applied at intake names the event its apply reads, so the store can
// look it up with the delivery's dedupe check, and names none when it
// applies nothing.
func TestPostpressNamesItsEventToTheStore(t *testing.T) {
	ctx := context.Background()
	h := http.Header{"Postpress-Auth": {testPostpressSecret}}
	p := newPipeline(t, nil, func(*ProcessorConfig) {}) // never started
	inbox := &namingInbox{Store: p.st}
	recv := NewReceiver(inbox, ReceiverConfig{Postpress: p.recv.postpress, Processor: p.proc})
	if _, err := recv.Receive(ctx, model.ProviderPostpress, ppVersion("evt1", 0, false), h); err != nil {
		t.Fatal(err)
	}
	if _, err := recv.Receive(ctx, model.ProviderPostpress, []byte(`{"event":"calendar_event_created","id":`), h); err != nil {
		t.Fatal(err)
	}
	evs, err := p.st.ListEvents(ctx, store.EventQuery{})
	if err != nil || len(evs) != 1 {
		t.Fatalf("events = %v, %v; want the one received", evs, err)
	}
	inbox.mu.Lock()
	defer inbox.mu.Unlock()
	if want := []string{evs[0].GetId(), ""}; !slices.Equal(inbox.named, want) {
		t.Errorf("events named to the store: %q, want %q", inbox.named, want)
	}
}

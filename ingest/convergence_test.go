package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"

	svix "github.com/svix/svix-webhooks/go"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/provider/recall/recalltest"
	"github.com/calsync/calsync/store"
)

// pipeline is the ingestion path of one server: receiver, inbox, processor.
type pipeline struct {
	st        store.Store
	recv      *Receiver
	proc      *Processor
	recallAPI *recall.Client
}

const (
	testPostpressSecret = "pp-secret"
	testRecallSecret    = "whsec_plJ3nmyCDGBKInavdOK15jsl"
)

func mustPipeline(t testing.TB, fake *recalltest.Server) *pipeline {
	t.Helper()
	p := newPipeline(t, fake, func(*ProcessorConfig) {})
	p.start(t)
	return p
}

// newPipeline builds a pipeline whose processor is not running yet.
func newPipeline(t testing.TB, fake *recalltest.Server, configure func(*ProcessorConfig)) *pipeline {
	t.Helper()
	return newPipelineOn(t, mustOpenStore(t), fake, configure)
}

// newPipelineOn builds a pipeline over st (a store, or a test's wrapper
// around one) whose processor is not running yet.
func newPipelineOn(t testing.TB, st store.Store, fake *recalltest.Server, configure func(*ProcessorConfig)) *pipeline {
	t.Helper()
	auth, err := postpress.NewAuthenticator("Postpress-Auth", []string{testPostpressSecret})
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := recall.NewVerifier([]string{testRecallSecret})
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeline{st: st}
	cfg := ProcessorConfig{
		Workers: 4, RetryBase: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond, ResyncInterval: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if fake != nil {
		// The fake answers at once; lift Recall's limits so many schedules
		// run quickly (the client's limiter has tests of its own).
		p.recallAPI = recall.NewClient(fake.URL, fake.APIKey(),
			recall.WithRateLimit(recall.EndpointEventList, 0, 0), recall.WithRateLimit(recall.EndpointCalendarRetrieve, 0, 0))
		cfg.Recall = p.recallAPI
	}
	configure(&cfg)
	p.proc = NewProcessor(st, cfg)
	p.recv = NewReceiver(st, ReceiverConfig{Postpress: auth, Recall: verifier, Notify: p.proc.Notify, Processor: p.proc})
	return p
}

// start runs the processor until the test ends.
func (p *pipeline) start(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.proc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// drain waits until every delivery in the inbox is processed.
func (p *pipeline) drain(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := p.st.InboxStats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if s.Pending == 0 && p.proc.Pending() == 0 {
			if s.Dead != 0 {
				t.Fatalf("%d deliveries were dead-lettered", s.Dead)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("inbox not drained: %+v", s)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// changesByEvent reads the whole change log, grouped by event id.
func changesByEvent(t *testing.T, st store.Store) map[string][]*calsyncv1.Change {
	t.Helper()
	out := map[string][]*calsyncv1.Change{}
	var after store.Cursor
	for {
		recs, err := st.ReadChanges(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			c := &calsyncv1.Change{}
			if err := proto.Unmarshal(r.Change, c); err != nil {
				t.Fatal(err)
			}
			if c.GetEvent() != nil {
				out[c.GetEvent().GetId()] = append(out[c.GetEvent().GetId()], c)
			}
			after = r.Cursor
		}
		if len(recs) < 1000 {
			return out
		}
	}
}

// checkLog checks one event's changes: each is a real transition (the
// state differs from the one before), provider versions only move forward,
// the types follow the lifecycle, and the last change is what the store
// holds. It returns the number of changes.
func checkLog(t *testing.T, st store.Store, id string, changes []*calsyncv1.Change) int {
	t.Helper()
	var prev *calsyncv1.CalendarEvent
	for i, c := range changes {
		ev := c.GetEvent()
		switch {
		case prev == nil && c.GetType() != calsyncv1.ChangeType_CHANGE_TYPE_CREATED:
			t.Errorf("%s: change %d is %v before any CREATED", id, i, c.GetType())
		case prev != nil && len(model.ChangedFields(prev, ev)) == 0:
			t.Errorf("%s: change %d changes nothing (a duplicate)", id, i)
		case prev != nil && ev.GetProviderUpdateTime().AsTime().Before(prev.GetProviderUpdateTime().AsTime()):
			t.Errorf("%s: change %d goes back to an older version", id, i)
		case prev != nil && prev.GetDeleted() && c.GetType() == calsyncv1.ChangeType_CHANGE_TYPE_DELETED:
			t.Errorf("%s: deleted twice", id)
		}
		prev = ev
	}
	held, err := st.GetEvent(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	if prev != nil && len(model.ChangedFields(prev, held)) != 0 {
		t.Errorf("%s: the log ends at %v but the store holds %v", id, prev, held)
	}
	return len(changes)
}

// ppVersion is one version of a postpress event as postpress would send it.
func ppVersion(eventID string, n int, deleted bool) []byte {
	if deleted {
		return fmt.Appendf(nil, `{"event":"calendar_event_deleted","webhook_name":"w","account_id":"acct","calendar_id":"owner@example.com","id":%q}`, eventID)
	}
	kind := "calendar_event_updated"
	if n == 0 {
		kind = "calendar_event_created"
	}
	updated := time.Date(2026, 1, 16, 16, 0, n, 0, time.UTC).Format(time.RFC3339)
	return fmt.Appendf(nil, `{"event":%q,"webhook_name":"w","account_id":"acct","id":%q,"calendar_id":"owner@example.com",
		"created_at":"2026-01-16T16:00:00Z","updated_at":%q,"title":"version %d","location":"room %d",
		"is_cancelled":false,"is_all_day":false,"attendees":[],
		"start":{"date_time":"2026-01-20T14:30:00+01:00","time_zone":"Europe/Paris"},
		"end":{"date_time":"2026-01-20T15:30:00+01:00","time_zone":"Europe/Paris"}}`, kind, eventID, updated, n, n)
}

// TestPostpressConvergence replays many randomized schedules of postpress
// deliveries — duplicated, reordered, some delayed to the end as
// postpress's retries would deliver them — and requires the store to end
// equal to postpress's truth, with a change log of real transitions only.
// Delivered in order, the log has exactly one change per transition.
func TestPostpressConvergence(t *testing.T) {
	h := http.Header{"Postpress-Auth": {testPostpressSecret}}
	for seed := range 24 {
		inOrder := seed%4 == 0
		t.Run(fmt.Sprintf("seed%d_inOrder=%v", seed, inOrder), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			p := mustPipeline(t, nil)
			type truth struct {
				versions    int
				deleted     bool
				transitions int
			}
			events := map[string]truth{}
			var schedule [][]byte
			for e := range 6 {
				id := fmt.Sprintf("evt%d", e)
				tr := truth{versions: 1 + rng.IntN(4), deleted: rng.IntN(3) == 0}
				for n := range tr.versions {
					schedule = append(schedule, ppVersion(id, n, false))
				}
				tr.transitions = tr.versions
				if tr.deleted {
					schedule = append(schedule, ppVersion(id, tr.versions, true))
					tr.transitions++
				}
				events[id] = tr
			}
			if !inOrder {
				rng.Shuffle(len(schedule), func(i, j int) { schedule[i], schedule[j] = schedule[j], schedule[i] })
				var late [][]byte
				kept := schedule[:0:0]
				for _, b := range schedule {
					if rng.IntN(5) == 0 {
						late = append(late, b) // "dropped": redelivered after the rest
						continue
					}
					kept = append(kept, b)
				}
				schedule = append(kept, late...)
			}
			ctx := context.Background()
			for _, body := range schedule {
				copies := 1 + rng.IntN(2)
				for range copies {
					if _, err := p.recv.Receive(ctx, model.ProviderPostpress, body, h); err != nil {
						t.Fatal(err)
					}
				}
				if inOrder {
					p.drain(t) // each delivery applied before the next arrives
				}
			}
			p.drain(t)

			log := changesByEvent(t, p.st)
			for id, tr := range events {
				evID := model.EventID(model.ProviderPostpress, model.PostpressScope("acct", "owner@example.com"), id)
				held, err := p.st.GetEvent(ctx, evID, false)
				if err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				wantTitle := fmt.Sprintf("version %d", tr.versions-1)
				if held.GetDeleted() != tr.deleted || (!tr.deleted && held.GetTitle() != wantTitle) {
					t.Errorf("%s: store holds %q deleted=%v, truth %q deleted=%v", id, held.GetTitle(), held.GetDeleted(), wantTitle, tr.deleted)
				}
				n := checkLog(t, p.st, evID, log[evID])
				if inOrder && n != tr.transitions {
					t.Errorf("%s: %d changes for %d transitions", id, n, tr.transitions)
				}
			}
		})
	}
}

// TestRecallConvergence mutates a fake Recall calendar at random; each
// mutation's sync_events hint is sent, duplicated (same Svix message id) or
// dropped, and the processor runs concurrently with the mutations. A final
// resync repairs what dropped hints missed: the store must then equal
// Recall's truth, and the log hold real transitions only. With every hint
// delivered after its mutation, exactly one change per transition.
func TestRecallConvergence(t *testing.T) {
	for seed := range 10 {
		sequential := seed%3 == 0
		t.Run(fmt.Sprintf("seed%d_sequential=%v", seed, sequential), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 11))
			fake := recalltest.New(t)
			p := mustPipeline(t, fake)
			cal := fake.PutCalendar(recalltest.Calendar{PlatformEmail: "owner@example.com"})
			calID := model.CalendarID(model.ProviderRecall, "", cal.ID)
			wh, _ := svix.NewWebhook(testRecallSecret)
			ctx := context.Background()
			hint := func(msgID string) {
				body := fmt.Appendf(nil, `{"event":"calendar.sync_events","data":{"calendar_id":%q,"last_updated_ts":%q}}`,
					cal.ID, time.Now().UTC().Format(time.RFC3339))
				ts := time.Now()
				sig, _ := wh.Sign(msgID, ts, body)
				h := http.Header{}
				h.Set("svix-id", msgID)
				h.Set("svix-timestamp", strconv.FormatInt(ts.Unix(), 10))
				h.Set("svix-signature", sig)
				if _, err := p.recv.Receive(ctx, model.ProviderRecall, body, h); err != nil {
					t.Fatal(err)
				}
			}

			transitions := map[string]int{}
			var live []string
			start := time.Now().Add(48 * time.Hour).Truncate(time.Hour)
			for step := range 20 {
				switch op := rng.IntN(3); {
				case op == 0 || len(live) == 0:
					e := fake.PutEvent(recalltest.Google(fmt.Sprintf("g%d", step)).Summary(fmt.Sprint("meeting ", step)).
						Timed(start, start.Add(time.Hour), "UTC").Event(cal.ID))
					live = append(live, e.ID)
					transitions[e.ID]++
				case op == 1:
					id := live[rng.IntN(len(live))]
					fake.UpdateEvent(id, func(e *recalltest.Event) { e.Raw["summary"] = fmt.Sprint("renamed at ", step) })
					transitions[id]++
				default:
					i := rng.IntN(len(live))
					fake.DeleteEvent(live[i])
					transitions[live[i]]++
					live = append(live[:i], live[i+1:]...)
				}
				msgID := fmt.Sprintf("msg_%d_%d", seed, step)
				switch {
				case sequential:
					hint(msgID)
					hint(msgID) // a Svix retry of the same message
					p.drain(t)
				case rng.IntN(4) == 0:
					// dropped
				default:
					hint(msgID)
					if rng.IntN(3) == 0 {
						hint(msgID)
					}
				}
			}
			if !sequential {
				// Every hint may have been dropped: one that arrives makes
				// the calendar known, and the resync repairs the rest.
				hint(fmt.Sprintf("msg_%d_last", seed))
				p.drain(t)
				if _, err := p.proc.RequestResync(ctx, calID); err != nil {
					t.Fatal(err)
				}
			}
			p.drain(t)

			log := changesByEvent(t, p.st)
			for id, n := range transitions {
				fetched, err := p.recallAPI.GetEvent(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				want, err := recall.NormalizeEvent(fetched)
				if err != nil {
					t.Fatal(err)
				}
				evID := model.EventID(model.ProviderRecall, "", id)
				held, err := p.st.GetEvent(ctx, evID, false)
				if err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				if diff := model.ChangedFields(want, held); len(diff) != 0 {
					t.Errorf("%s: store differs from Recall in %v", id, diff)
				}
				got := checkLog(t, p.st, evID, log[evID])
				if sequential && got != n {
					t.Errorf("%s: %d changes for %d transitions", id, got, n)
				}
			}
		})
	}
}

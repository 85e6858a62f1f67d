package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/metrics"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/watch"
)

// The operator console (served at /ui/) reads the gRPC API through the
// gateway, and these three JSON routes for what the API does not say: a
// summary of the metrics, a calendar's sync state, and one event's history.
// They sit behind the API's authentication like every other route.
const (
	consoleOverviewPath  = "GET /v1/console/overview"
	consoleSyncStatePath = "GET /v1/console/calendars/{calendar_id}/sync"
	consoleHistoryPath   = "GET /v1/console/events/{event_id}/history"
)

// Bounds of the console's reads, so one request costs little whatever the
// size of the database.
const (
	// syncStateDeliveryScan is how many of the newest deliveries are searched
	// for a calendar's own.
	syncStateDeliveryScan = 2000
	// syncStateDeliveries is how many of a calendar's deliveries are shown.
	syncStateDeliveries = 10
	// historyScanBudget is how many change log entries one history request
	// reads; the client continues from next_cursor.
	historyScanBudget = 50000
	// historyPageChanges is the most changes one history answer holds.
	historyPageChanges = 200
	historyReadPage    = 1000
)

// consoleAPI serves the console's JSON routes.
type consoleAPI struct {
	store     store.Store
	metrics   *metrics.Metrics
	cursors   watch.CursorCodec
	retention time.Duration
	log       *slog.Logger
}

// register mounts the routes on mux, each bounded by timeout like a unary
// API call (0: no limit).
func (c *consoleAPI) register(mux *http.ServeMux, timeout time.Duration) {
	mux.Handle(consoleOverviewPath, withTimeout(timeout, c.overview))
	mux.Handle(consoleSyncStatePath, withTimeout(timeout, c.syncState))
	mux.Handle(consoleHistoryPath, withTimeout(timeout, c.history))
}

// withTimeout runs h with a request context that ends after timeout.
func withTimeout(timeout time.Duration, h http.HandlerFunc) http.Handler {
	if timeout <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		h(w, r.WithContext(ctx))
	})
}

// counter is one labeled value of a metric.
type counter struct {
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

// overviewAnswer is what the Overview page shows, read from the same
// registry /metrics serves, plus the change log's bounds.
type overviewAnswer struct {
	Time                time.Time `json:"time"`
	WebhooksReceived    []counter `json:"webhooks_received"`
	DeliveriesProcessed []counter `json:"deliveries_processed"`
	DeadLettered        []counter `json:"dead_lettered"`
	InboxPending        float64   `json:"inbox_pending"`
	InboxOldestAge      float64   `json:"inbox_oldest_pending_age_seconds"`
	InboxDead           float64   `json:"inbox_dead"`
	WatchStreams        float64   `json:"watch_streams"`
	WatchChangesSent    float64   `json:"watch_changes_sent"`
	WatchFallbacks      float64   `json:"watch_fallbacks"`
	AuthFailures        []counter `json:"auth_failures"`
	ChangeLog           struct {
		Head       uint64 `json:"head"`
		HeadCursor string `json:"head_cursor"`
		Compacted  uint64 `json:"compacted"`
		// OldestCommitTime is when the oldest change still held was
		// committed; absent when the log is empty.
		OldestCommitTime *time.Time `json:"oldest_commit_time,omitempty"`
		RetentionSeconds float64    `json:"retention_seconds"`
	} `json:"change_log"`
}

func (c *consoleAPI) overview(w http.ResponseWriter, r *http.Request) {
	families, err := c.metrics.Registry().Gather()
	if err != nil {
		// Gather returns what it could read alongside the error.
		c.log.WarnContext(r.Context(), "console: gather metrics", "err", err)
	}
	byName := make(map[string]*dto.MetricFamily, len(families))
	for _, f := range families {
		byName[f.GetName()] = f
	}
	a := overviewAnswer{
		Time:                time.Now().UTC(),
		WebhooksReceived:    counters(byName["calsync_webhooks_received_total"]),
		DeliveriesProcessed: counters(byName["calsync_deliveries_processed_total"]),
		DeadLettered:        counters(byName["calsync_deliveries_dead_lettered_total"]),
		InboxPending:        single(byName["calsync_inbox_pending_deliveries"]),
		InboxOldestAge:      single(byName["calsync_inbox_oldest_pending_age_seconds"]),
		InboxDead:           single(byName["calsync_inbox_dead_deliveries"]),
		WatchStreams:        single(byName["calsync_watch_streams"]),
		WatchChangesSent:    single(byName["calsync_watch_changes_sent_total"]),
		WatchFallbacks:      single(byName["calsync_watch_fallbacks_total"]),
		AuthFailures:        counters(byName["calsync_api_auth_failures_total"]),
	}
	bounds, err := c.store.ChangeBounds(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	a.ChangeLog.Head, a.ChangeLog.Compacted = uint64(bounds.Head), uint64(bounds.Compacted)
	a.ChangeLog.HeadCursor = c.cursors.Encode(bounds.Head)
	a.ChangeLog.RetentionSeconds = c.retention.Seconds()
	if bounds.Head > bounds.Compacted {
		oldest, err := c.store.ReadChanges(r.Context(), bounds.Compacted, 1)
		if err != nil && !errors.Is(err, store.ErrCompacted) {
			c.fail(w, r, err)
			return
		}
		if len(oldest) == 1 {
			t := oldest[0].CommitTime.UTC()
			a.ChangeLog.OldestCommitTime = &t
		}
	}
	writeJSON(w, a)
}

// counters lists a family's values with their labels.
func counters(f *dto.MetricFamily) []counter {
	out := []counter{}
	for _, m := range f.GetMetric() {
		labels := make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		out = append(out, counter{Labels: labels, Value: value(m)})
	}
	return out
}

// single is the value of an unlabeled gauge or counter; 0 when absent.
func single(f *dto.MetricFamily) float64 {
	if f == nil || len(f.GetMetric()) == 0 {
		return 0
	}
	return value(f.GetMetric()[0])
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

// syncStateAnswer is what calsync remembers about syncing one calendar,
// and its latest deliveries (bodies never included).
type syncStateAnswer struct {
	CalendarID   string     `json:"calendar_id"`
	Watermark    *time.Time `json:"watermark,omitempty"`
	LastFullSync *time.Time `json:"last_full_sync,omitempty"`
	// LastError is the newest error recorded on one of the calendar's
	// deliveries, with that delivery's id; empty when none failed.
	LastError           string            `json:"last_error"`
	LastErrorDeliveryID string            `json:"last_error_delivery_id,omitempty"`
	Deliveries          []json.RawMessage `json:"deliveries"`
	// DeliveriesSearched is how many of the newest deliveries were searched.
	DeliveriesSearched int `json:"deliveries_searched"`
}

func (c *consoleAPI) syncState(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("calendar_id")
	if err := checkID("calendar_id", "cal_", id); err != nil {
		c.fail(w, r, err)
		return
	}
	if _, err := c.store.GetCalendar(r.Context(), id); err != nil {
		c.fail(w, r, err)
		return
	}
	a := syncStateAnswer{CalendarID: id, Deliveries: []json.RawMessage{}}
	// The deliveries are read before the sync state, in two reads: a
	// delivery shown finished then comes with the sync state its
	// processing committed with it (a read sees every commit that ended
	// before it began), and a console waiting for a resync to finish shows
	// its result. The other order could show it finished beside the state
	// from before it.
	ds, err := c.store.ListDeliveries(r.Context(), store.DeliveryQuery{Limit: syncStateDeliveryScan})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	st, err := c.store.GetSyncState(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		c.fail(w, r, err)
		return
	default:
		a.Watermark, a.LastFullSync = timeOrNil(st.Watermark), timeOrNil(st.LastFullSync)
	}
	a.DeliveriesSearched = len(ds)
	for _, d := range ds {
		if d.OrderingKey != id {
			continue
		}
		if a.LastError == "" && d.LastError != "" {
			a.LastError, a.LastErrorDeliveryID = d.LastError, strconv.FormatInt(d.ID, 10)
		}
		if len(a.Deliveries) < syncStateDeliveries {
			b, err := apiJSON().Marshal(deliveryProto(d))
			if err != nil {
				c.fail(w, r, err)
				return
			}
			a.Deliveries = append(a.Deliveries, b)
		}
	}
	writeJSON(w, a)
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// historyAnswer is one page of an event's changes, oldest first.
type historyAnswer struct {
	EventID    string            `json:"event_id"`
	CalendarID string            `json:"calendar_id"`
	Changes    []json.RawMessage `json:"changes"`
	// NextCursor continues the search (as after_cursor) when Complete is
	// false: the search stopped at its budget or at a full page.
	NextCursor string `json:"next_cursor"`
	Complete   bool   `json:"complete"`
	// CompactedBefore is set when the change log no longer holds the
	// oldest changes: the history starts after them.
	CompactedBefore bool `json:"compacted_before"`
}

// history finds an event's changes in the change log. The log has no index
// by event, so it reads the log from the given cursor on, decodes only the
// entries of the event's calendar, and stops at a budget per request.
func (c *consoleAPI) history(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("event_id")
	if err := checkID("event_id", "evt_", id); err != nil {
		c.fail(w, r, err)
		return
	}
	ev, err := c.store.GetEvent(ctx, id, false)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	bounds, err := c.store.ChangeBounds(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	pos := bounds.Compacted
	a := historyAnswer{EventID: id, CalendarID: ev.GetCalendarId(), Changes: []json.RawMessage{}, CompactedBefore: bounds.Compacted > 0}
	if after := r.URL.Query().Get("after_cursor"); after != "" {
		if pos, err = c.cursors.Decode(after); err != nil {
			c.fail(w, r, status.Error(codes.InvalidArgument, "after_cursor is not a cursor of this server"))
			return
		}
		a.CompactedBefore = false
	}
	marshal := apiJSON()
	for scanned, compactions := 0, 0; pos < bounds.Head && scanned < historyScanBudget && len(a.Changes) < historyPageChanges; {
		recs, err := c.store.ReadChanges(ctx, pos, historyReadPage)
		if errors.Is(err, store.ErrCompacted) && compactions < 3 {
			compactions++
			// Compaction ran meanwhile: what it removed is gone; go on
			// from what is left.
			if bounds, err = c.store.ChangeBounds(ctx); err != nil {
				c.fail(w, r, err)
				return
			}
			pos, a.CompactedBefore = bounds.Compacted, true
			continue
		}
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			if len(a.Changes) == historyPageChanges {
				break
			}
			pos = rec.Cursor
			scanned++
			if rec.CalendarID != ev.GetCalendarId() || rec.Type == calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED {
				continue
			}
			var ch calsyncv1.Change
			if err := proto.Unmarshal(rec.Change, &ch); err != nil {
				c.log.WarnContext(ctx, "console: undecodable change log entry", "cursor", uint64(rec.Cursor), "err", err)
				continue
			}
			if ch.GetEvent().GetId() != id {
				continue
			}
			ch.Cursor = c.cursors.Encode(rec.Cursor)
			b, err := marshal.Marshal(&ch)
			if err != nil {
				c.fail(w, r, err)
				return
			}
			a.Changes = append(a.Changes, b)
		}
	}
	a.NextCursor = c.cursors.Encode(pos)
	a.Complete = pos >= bounds.Head
	writeJSON(w, a)
}

// apiJSON marshals API messages as the REST gateway does.
func apiJSON() protojson.MarshalOptions {
	return protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	if err := enc.Encode(v); err != nil {
		// The client went away; nothing more to say.
		return
	}
}

// fail answers an error as the gateway does: the status's HTTP code and a
// {"code", "message", "details"} body, internal causes logged, never shown.
func (c *consoleAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	st := status.Convert(toStatus(r.Context(), c.log, err))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	msg, _ := json.Marshal(st.Message())
	w.Write([]byte(`{"code":` + strconv.Itoa(int(st.Code())) + `,"message":` + string(msg) + `,"details":[]}` + "\n"))
}

package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/watch"
	"github.com/calsync/calsync/watch/watchtest"
)

// getWatch opens GET /v1/events:watch with query q and extra headers.
func getWatch(t *testing.T, ts *testServer, q url.Values, header http.Header) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ts.srv.HTTPAddr()+"/v1/events:watch?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func commitN(t *testing.T, st store.Store, from, n int) []store.Cursor {
	t.Helper()
	var cs []*calsyncv1.Change
	for i := from; i < from+n; i++ {
		cs = append(cs, watchtest.Created(watchtest.Event(model.ProviderPostpress, calA, i, "e")))
	}
	return watchtest.Commit(t, st, cs...)
}

func TestWatchNDJSON(t *testing.T) {
	ts := mustStartServer(t, "", testWatchConfig())
	resp := getWatch(t, ts, url.Values{"change_types": {"CHANGE_TYPE_CREATED"}}, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, content type %q; want 200 application/x-ndjson", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(nil, 1<<20)
	type line struct {
		Result struct {
			Change   *struct{ Cursor, Type string }
			Bookmark *struct{ Cursor string }
		}
	}
	next := func() line {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("stream ended: %v", lines.Err())
		}
		var l line
		if err := json.Unmarshal(lines.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", lines.Text(), err)
		}
		return l
	}
	first := next()
	if first.Result.Bookmark == nil {
		t.Fatalf("first line %+v, want a bookmark", first)
	}
	start := watchtest.Decode(t, ts.st, first.Result.Bookmark.Cursor)
	cursors := commitN(t, ts.st, 0, 5)
	var got []store.Cursor
	for len(got) < len(cursors) {
		l := next()
		if l.Result.Change != nil {
			got = append(got, watchtest.Decode(t, ts.st, l.Result.Change.Cursor))
		}
	}
	watchtest.CheckStream(t, "ndjson", watchtest.Log(t, ts.st, start), nil, got)

	t.Run("ErrCompacted", func(t *testing.T) {
		commitN(t, ts.st, 10, 1)
		if _, err := ts.st.CompactChanges(context.Background(), timeFarAhead()); err != nil {
			t.Fatal(err)
		}
		resp := getWatch(t, ts, url.Values{"after_cursor": {ts.cursor(start)}}, nil)
		if resp.StatusCode != http.StatusGone {
			t.Fatalf("status %d, want 410 Gone", resp.StatusCode)
		}
	})
	t.Run("ErrMalformed", func(t *testing.T) {
		resp := getWatch(t, ts, url.Values{"after_cursor": {"nope"}}, nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ id, name, data string }

// readEvent reads the next event of an SSE stream.
func readEvent(t *testing.T, r *bufio.Reader) sseEvent {
	t.Helper()
	var ev sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream ended: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return ev
		}
		field, value, _ := strings.Cut(line, ": ")
		switch field {
		case "id":
			ev.id = value
		case "event":
			ev.name = value
		case "data":
			ev.data = value
		}
	}
}

func TestWatchSSE(t *testing.T) {
	ts := mustStartServer(t, "", testWatchConfig())
	commitN(t, ts.st, 0, 3)
	resp := getWatch(t, ts, url.Values{"initial_snapshot": {"true"}}, http.Header{"Accept": {"text/event-stream"}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q; want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := bufio.NewReader(resp.Body)
	for range 3 {
		if ev := readEvent(t, r); ev.name != "change" || ev.id != "" {
			t.Fatalf("snapshot event %+v, want a change without id", ev)
		}
	}
	done := readEvent(t, r)
	var bm struct {
		Cursor           string `json:"cursor"`
		SnapshotComplete bool   `json:"snapshot_complete"`
	}
	if err := json.Unmarshal([]byte(done.data), &bm); err != nil || done.name != "bookmark" || !bm.SnapshotComplete || done.id != bm.Cursor {
		t.Fatalf("event %+v, want the snapshot_complete bookmark with its cursor as id", done)
	}
	start := watchtest.Decode(t, ts.st, done.id)

	// Read two live changes, drop the connection, and reconnect the way
	// EventSource does: same URL, Last-Event-ID set.
	cursors := commitN(t, ts.st, 10, 6)
	var got []store.Cursor
	lastID := ""
	for len(got) < 2 {
		ev := readEvent(t, r)
		if ev.name == "change" {
			got = append(got, watchtest.Decode(t, ts.st, ev.id))
			lastID = ev.id
		}
	}
	resp.Body.Close()
	resp = getWatch(t, ts, url.Values{"initial_snapshot": {"true"}}, http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {lastID}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reconnect status %d", resp.StatusCode)
	}
	r = bufio.NewReader(resp.Body)
	if ev := readEvent(t, r); ev.name != "bookmark" || ev.id != lastID {
		t.Fatalf("reconnect began with %+v, want a bookmark at Last-Event-ID", ev)
	}
	for got[len(got)-1] < cursors[len(cursors)-1] {
		ev := readEvent(t, r)
		if ev.name == "change" {
			got = append(got, watchtest.Decode(t, ts.st, ev.id))
		}
	}
	watchtest.CheckStream(t, "sse", watchtest.Log(t, ts.st, start), nil, got)

	t.Run("ErrorEvent", func(t *testing.T) {
		resp := getWatch(t, ts, nil, http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {"garbage"}})
		ev := readEvent(t, bufio.NewReader(resp.Body))
		if resp.StatusCode != http.StatusBadRequest || ev.name != "error" || !strings.Contains(ev.data, watch.ReasonCursorMalformed) {
			t.Fatalf("status %d, event %+v; want 400 and an error event", resp.StatusCode, ev)
		}
	})
}

// TestWatchRESTIncludePrevious checks REST streams against gRPC ones: the
// same change, as the same JSON the REST API encodes everywhere (proto field
// names, defaults present), with previous state only when asked for.
func TestWatchRESTIncludePrevious(t *testing.T) {
	ts := mustStartServer(t, "", testWatchConfig())
	grpcWith, _ := ts.mustWatch(t, &calsyncv1.WatchEventsRequest{IncludePrevious: true})
	type line struct {
		Result struct {
			Change   map[string]json.RawMessage `json:"change"`
			Bookmark map[string]json.RawMessage `json:"bookmark"`
		} `json:"result"`
	}
	open := func(q url.Values) *bufio.Scanner {
		resp := getWatch(t, ts, q, nil)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		if !sc.Scan() || !strings.Contains(sc.Text(), `"bookmark"`) {
			t.Fatalf("stream began with %q, want a bookmark", sc.Text())
		}
		return sc
	}
	with, without := open(url.Values{"include_previous": {"true"}}), open(nil)

	ev := watchtest.Event(model.ProviderPostpress, calA, 1, "v1")
	next := proto.Clone(ev).(*calsyncv1.CalendarEvent)
	next.Title = "v2"
	watchtest.Commit(t, ts.st, watchtest.Updated(ev, next))
	want, err := grpcWith.stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	for name, sc := range map[string]*bufio.Scanner{"with": with, "without": without} {
		if !sc.Scan() {
			t.Fatalf("%s: stream ended: %v", name, sc.Err())
		}
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Result.Change == nil {
			t.Fatalf("%s: line %q (%v), want a change", name, sc.Text(), err)
		}
		_, hasPrev := l.Result.Change["previous_event"]
		if hasPrev != (name == "with") {
			t.Errorf("%s include_previous: previous_event present %v in %s", name, hasPrev, sc.Text())
		}
		if _, ok := l.Result.Change["changed_fields"]; !ok {
			t.Errorf("%s: no changed_fields key in %s; the REST encoding writes every field", name, sc.Text())
		}
		var got calsyncv1.Change
		if err := protojson.Unmarshal(sc.Bytes()[len(`{"result":{"change":`):len(sc.Bytes())-2], &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		w := proto.Clone(want.GetChange()).(*calsyncv1.Change)
		if name == "without" {
			w.PreviousEvent = nil
		}
		if !proto.Equal(&got, w) {
			t.Errorf("%s: REST change %v, gRPC change %v", name, &got, w)
		}
	}
}

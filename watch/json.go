package watch

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// Message is one WatchEventsResponse for a JSON stream (REST NDJSON or
// Server-Sent Events): the Change or Bookmark it carries, encoded alone as
// protojson, so that each REST encoding wraps it as its wire format wants.
// A live change's JSON is encoded once and shared by every JSON stream that
// sends it; never modify JSON.
type Message struct {
	// Bookmark says JSON is a Bookmark; otherwise it is a Change.
	Bookmark bool
	// Cursor is the change's or bookmark's cursor; empty for the changes of
	// an initial snapshot, which cannot be resumed part way.
	Cursor string
	// JSON is the Change or Bookmark object.
	JSON []byte
}

// JSONSink receives a JSON stream's messages. Send may buffer; Flush is
// called whenever the stream has sent what it has for now (after each
// batch, and before it waits), so a sink writes to its connection once per
// batch rather than once per change. Both are called from the stream's
// goroutine only.
type JSONSink interface {
	Send(Message) error
	Flush() error
}

// entryJSON is the JSON of a committed change, encoded once for every JSON
// stream: full carries previous_event / previous_calendar, lean does not
// (the same slice when the change has no previous state).
type entryJSON struct {
	cursor     string
	full, lean []byte
}

// size is the memory the encodings take, for the tail's byte bound.
func (j *entryJSON) size() int64 {
	n := int64(len(j.full) + len(j.cursor))
	if len(j.lean) > 0 && len(j.full) > 0 && &j.lean[0] != &j.full[0] {
		n += int64(len(j.lean))
	}
	return n
}

// encodeJSON encodes a change log record's Change, its cursor set, with and
// without its previous state. A record that does not parse gets no JSON: the
// streams that send it then decode its frame (see [jsonOut.change]), so
// the damage surfaces as it does for any change they encode themselves.
func encodeJSON(rec store.ChangeRecord, cursor string, opts protojson.MarshalOptions) *entryJSON {
	var c calsyncv1.Change
	if err := proto.Unmarshal(rec.Change, &c); err != nil {
		return nil
	}
	c.Cursor = cursor
	full, err := opts.Marshal(&c)
	if err != nil {
		return nil
	}
	j := &entryJSON{cursor: cursor, full: full, lean: full}
	if c.PreviousEvent != nil || c.PreviousCalendar != nil {
		c.PreviousEvent, c.PreviousCalendar = nil, nil
		if j.lean, err = opts.Marshal(&c); err != nil {
			return nil
		}
	}
	return j
}

// WatchJSON is [Hub.Watch] for REST streams: the same messages, in the same
// order, with the same guarantees, handed to sink as JSON encoded with
// [Config.JSON]. While any JSON stream is open, every committed change is
// encoded to JSON once, when it is committed, and that encoding is shared
// by all of them.
func (h *Hub) WatchJSON(ctx context.Context, req *calsyncv1.WatchEventsRequest, sink JSONSink) error {
	h.jsonStreams.Add(1)
	defer h.jsonStreams.Add(-1)
	return h.watch(ctx, req, &jsonOut{hub: h, sink: sink})
}

// jsonOut sends a stream's messages to a [JSONSink].
type jsonOut struct {
	hub  *Hub
	sink JSONSink
}

func (o *jsonOut) change(e *entry, includePrevious bool) error {
	if j := e.json; j != nil {
		data := j.lean
		if includePrevious {
			data = j.full
		}
		return o.sink.Send(Message{Cursor: j.cursor, JSON: data})
	}
	// A change committed before this stream's first commit was seen, or
	// read from the change log: encoded for this stream alone.
	var resp calsyncv1.WatchEventsResponse
	if err := proto.Unmarshal(e.frame(includePrevious), &resp); err != nil {
		return fmt.Errorf("watch: decode change %d: %w", e.cursor, err)
	}
	data, err := o.hub.cfg.JSON.Marshal(resp.GetChange())
	if err != nil {
		return fmt.Errorf("watch: encode change %d: %w", e.cursor, err)
	}
	return o.sink.Send(Message{Cursor: resp.GetChange().GetCursor(), JSON: data})
}

func (o *jsonOut) bookmark(cursor string, complete bool) error {
	data, err := o.hub.cfg.JSON.Marshal(&calsyncv1.Bookmark{Cursor: cursor, SnapshotComplete: complete})
	if err != nil {
		return fmt.Errorf("watch: encode bookmark: %w", err)
	}
	if err := o.sink.Send(Message{Bookmark: true, Cursor: cursor, JSON: data}); err != nil {
		return err
	}
	return o.sink.Flush()
}

func (o *jsonOut) snapshot(ev *calsyncv1.CalendarEvent) error {
	data, err := o.hub.cfg.JSON.Marshal(&calsyncv1.Change{Type: changeTypeCreated, Event: ev})
	if err != nil {
		return fmt.Errorf("watch: encode snapshot event: %w", err)
	}
	return o.sink.Send(Message{JSON: data})
}

func (o *jsonOut) flush() error { return o.sink.Flush() }

// frameOut sends a stream's messages as protobuf [Frame]s.
type frameOut struct {
	send func(Frame) error
}

func (o frameOut) change(e *entry, includePrevious bool) error {
	return o.send(e.frame(includePrevious))
}

func (o frameOut) bookmark(cursor string, complete bool) error {
	return o.send(bookmarkFrame(cursor, complete))
}

func (o frameOut) snapshot(ev *calsyncv1.CalendarEvent) error {
	fr, err := snapshotFrame(ev)
	if err != nil {
		return fmt.Errorf("watch: encode snapshot event: %w", err)
	}
	return o.send(fr)
}

func (frameOut) flush() error { return nil }

// output is how a stream sends: as protobuf frames (gRPC) or as JSON (REST).
type output interface {
	change(e *entry, includePrevious bool) error
	bookmark(cursor string, snapshotComplete bool) error
	snapshot(ev *calsyncv1.CalendarEvent) error
	// flush is called when the stream has sent all it has for now.
	flush() error
}

package watch

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
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

// lazyJSON is one JSON encoding of a change held in the tail, made by the
// first JSON stream that sends it and then shared by all of them. Encoding
// waits for a stream rather than running in the commit hook, which holds the
// store's writer.
type lazyJSON struct {
	once   sync.Once
	cursor string
	data   []byte
	err    error
}

// encodeChangeJSON encodes the Change of a change's frame as JSON, and
// returns it with the change's cursor.
func encodeChangeJSON(fr Frame, opts protojson.MarshalOptions) (cursor string, data []byte, err error) {
	var resp calsyncv1.WatchEventsResponse
	if err := proto.Unmarshal(fr, &resp); err != nil {
		return "", nil, fmt.Errorf("watch: decode change: %w", err)
	}
	if data, err = marshalJSON(opts, resp.GetChange()); err != nil {
		return "", nil, fmt.Errorf("watch: encode change: %w", err)
	}
	return resp.GetChange().GetCursor(), data, nil
}

// changeJSON returns the JSON of a change with or without its previous
// state, encoding it once for every JSON stream when the tail holds the
// change. The tail's byte count takes in what the encoding holds while the
// change is in the tail.
func (h *Hub) changeJSON(e *entry, includePrevious bool) (cursor string, data []byte, err error) {
	if e.shared == nil {
		// A change log page read for this stream alone.
		return encodeChangeJSON(e.frame(includePrevious), h.cfg.JSON)
	}
	l := &e.shared.json[0]
	if includePrevious && &e.full[0] != &e.lean[0] {
		l = &e.shared.json[1]
	}
	l.once.Do(func() {
		l.cursor, l.data, l.err = encodeChangeJSON(e.frame(includePrevious), h.cfg.JSON)
		if l.err == nil {
			h.mu.Lock()
			h.tail.grow(e, int64(len(l.data)+len(l.cursor)))
			h.mu.Unlock()
		}
	})
	return l.cursor, l.data, l.err
}

// WatchJSON is [Hub.Watch] for REST streams: the same messages, in the same
// order, with the same guarantees, handed to sink as JSON encoded with
// [Config.JSON]. A change held in memory is encoded to JSON once, by the
// first JSON stream that sends it, and every JSON stream sends those bytes.
func (h *Hub) WatchJSON(ctx context.Context, req *calsyncv1.WatchEventsRequest, sink JSONSink) error {
	return h.watch(ctx, req, &jsonOut{hub: h, sink: sink})
}

// jsonOut sends a stream's messages to a [JSONSink].
type jsonOut struct {
	hub  *Hub
	sink JSONSink
}

func (o *jsonOut) change(e *entry, includePrevious bool) error {
	cursor, data, err := o.hub.changeJSON(e, includePrevious)
	if err != nil {
		return err
	}
	return o.sink.Send(Message{Cursor: cursor, JSON: data})
}

func (o *jsonOut) bookmark(cursor string, complete bool) error {
	data, err := marshalJSON(o.hub.cfg.JSON, &calsyncv1.Bookmark{Cursor: cursor, SnapshotComplete: complete})
	if err != nil {
		return fmt.Errorf("watch: encode bookmark: %w", err)
	}
	if err := o.sink.Send(Message{Bookmark: true, Cursor: cursor, JSON: data}); err != nil {
		return err
	}
	return o.sink.Flush()
}

func (o *jsonOut) snapshot(ev *calsyncv1.CalendarEvent) error {
	data, err := marshalJSON(o.hub.cfg.JSON, &calsyncv1.Change{Type: changeTypeCreated, Event: ev})
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

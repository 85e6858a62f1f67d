package watch

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
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
	if opts == restJSON {
		if cursor, data, ok := changeJSONFromWire(fr); ok {
			return cursor, data, nil
		}
	}
	var resp calsyncv1.WatchEventsResponse
	if err := proto.Unmarshal(fr, &resp); err != nil {
		return "", nil, fmt.Errorf("watch: decode change: %w", err)
	}
	if data, err = marshalJSON(opts, resp.GetChange()); err != nil {
		return "", nil, fmt.Errorf("watch: encode change: %w", err)
	}
	return resp.GetChange().GetCursor(), data, nil
}

var changeDesc = (&calsyncv1.Change{}).ProtoReflect().Descriptor()

// changeJSONFromWire is encodeChangeJSON for the REST API's options, read
// from the frame's encoding in place (see appendWireJSON). It reports false
// for a frame that must be decoded instead: then the decode gives the
// answer, or the error.
func changeJSONFromWire(fr Frame) (cursor string, data []byte, ok bool) {
	change, ok := onlyField(fr, responseChangeField)
	if !ok {
		return "", nil, false
	}
	// The encoding is kept as long as the change is in the tail: exactly
	// its size.
	data, err := appendWireJSON(nil, changeDesc, change)
	if err != nil {
		return "", nil, false
	}
	// The cursor is the Change's last cursor field, as the decode reads it;
	// appendWireJSON has checked the encoding.
	for b := change; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		if num == changeCursorField && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			cursor = string(v)
			n = m
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		b = b[n:]
	}
	return cursor, data, true
}

// onlyField returns the bytes of field num of the message encoded as msg
// when that field is its only one and occurs once.
func onlyField(msg []byte, num protowire.Number) ([]byte, bool) {
	n, typ, l := protowire.ConsumeTag(msg)
	if l < 0 || n != num || typ != protowire.BytesType {
		return nil, false
	}
	v, m := protowire.ConsumeBytes(msg[l:])
	if m < 0 || l+m != len(msg) {
		return nil, false
	}
	return v, true
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

package main

import (
	"encoding/json"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// checkedCodec decodes watch responses into only the fields the checker
// reads: a change's cursor and its event's provider, provider event id and
// title, or a bookmark's cursor. Decoding every field of every event is
// what a subscriber pays for what it uses; this tool uses four, and on a
// small machine a full decode would make the client, not calsync, the
// limit of a catch-up. The response, its change or bookmark and the event
// are still walked field by field, so a malformed one fails the stream.
// Other messages use the proto codec.
type checkedCodec struct{ proto encoding.CodecV2 }

// watchCallOption makes a WatchEvents call decode with [checkedCodec].
func watchCallOption() grpc.CallOption {
	return grpc.ForceCodecV2(checkedCodec{proto: encoding.GetCodecV2("proto")})
}

func (c checkedCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c checkedCodec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*calsyncv1.WatchEventsResponse)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		b = buf.ReadOnlyData()
	}
	// The strings kept are copied out of b: grpc reuses its buffers.
	return decodeWatchResponse(b, resp)
}

func (checkedCodec) Name() string { return "proto" }

// Field numbers, read from the generated descriptors so that a renumbered
// proto cannot silently break the decoder.
var (
	respChange       = fieldNum((*calsyncv1.WatchEventsResponse)(nil), "change")
	respBookmark     = fieldNum((*calsyncv1.WatchEventsResponse)(nil), "bookmark")
	changeCursor     = fieldNum((*calsyncv1.Change)(nil), "cursor")
	changeEvent      = fieldNum((*calsyncv1.Change)(nil), "event")
	bookmarkCursor   = fieldNum((*calsyncv1.Bookmark)(nil), "cursor")
	eventProvider    = fieldNum((*calsyncv1.CalendarEvent)(nil), "provider")
	eventProviderID  = fieldNum((*calsyncv1.CalendarEvent)(nil), "provider_event_id")
	eventTitle       = fieldNum((*calsyncv1.CalendarEvent)(nil), "title")
	errMalformedWire = errors.New("malformed watch response")
)

func fieldNum(m interface{ ProtoReflect() protoreflect.Message }, name protoreflect.Name) protowire.Number {
	f := m.ProtoReflect().Descriptor().Fields().ByName(name)
	if f == nil {
		panic("calsync-bench: no field " + string(name))
	}
	return f.Number()
}

// decodeWatchResponse fills resp with the checked fields of b. A change,
// event or bookmark resp already holds is reset and reused: a watcher
// decodes every response into one message, so that tens of thousands of
// messages a second do not each cost the client two allocations of a
// large struct (the checker keeps strings, never the messages).
func decodeWatchResponse(b []byte, resp *calsyncv1.WatchEventsResponse) error {
	spare := takeSpare(resp)
	return walkFields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case respChange:
			c, kind := spare.change()
			resp.Kind = kind
			return walkFields(v, func(num protowire.Number, v []byte) error {
				switch num {
				case changeCursor:
					c.Cursor = string(v)
				case changeEvent:
					ev := spare.event()
					c.Event = ev
					return walkFields(v, func(num protowire.Number, v []byte) error {
						switch num {
						case eventProvider:
							ev.Provider = string(v)
						case eventProviderID:
							ev.ProviderEventId = string(v)
						case eventTitle:
							ev.Title = string(v)
						}
						return nil
					})
				}
				return nil
			})
		case respBookmark:
			bm, kind := spare.bookmark()
			resp.Kind = kind
			return walkFields(v, func(num protowire.Number, v []byte) error {
				if num == bookmarkCursor {
					bm.Cursor = string(v)
				}
				return nil
			})
		}
		return nil
	})
}

// spareMessages are the messages a response held before it was reset, to
// be reset and filled again; a missing one is allocated when needed.
type spareMessages struct {
	changeKind   *calsyncv1.WatchEventsResponse_Change
	ev           *calsyncv1.CalendarEvent
	bookmarkKind *calsyncv1.WatchEventsResponse_Bookmark
}

// takeSpare resets resp and returns what it held.
func takeSpare(resp *calsyncv1.WatchEventsResponse) spareMessages {
	var s spareMessages
	switch k := resp.GetKind().(type) {
	case *calsyncv1.WatchEventsResponse_Change:
		s.changeKind = k
		s.ev = k.Change.GetEvent()
	case *calsyncv1.WatchEventsResponse_Bookmark:
		s.bookmarkKind = k
	}
	resp.Reset()
	return s
}

func (s *spareMessages) change() (*calsyncv1.Change, *calsyncv1.WatchEventsResponse_Change) {
	if s.changeKind == nil {
		s.changeKind = &calsyncv1.WatchEventsResponse_Change{}
	}
	s.changeKind.Change = resetOrNew(s.changeKind.Change)
	return s.changeKind.Change, s.changeKind
}

func (s *spareMessages) event() *calsyncv1.CalendarEvent {
	s.ev = resetOrNew(s.ev)
	return s.ev
}

func (s *spareMessages) bookmark() (*calsyncv1.Bookmark, *calsyncv1.WatchEventsResponse_Bookmark) {
	if s.bookmarkKind == nil {
		s.bookmarkKind = &calsyncv1.WatchEventsResponse_Bookmark{}
	}
	s.bookmarkKind.Bookmark = resetOrNew(s.bookmarkKind.Bookmark)
	return s.bookmarkKind.Bookmark, s.bookmarkKind
}

// resetOrNew returns m reset, or a new message if m is nil.
func resetOrNew[M any, P interface {
	*M
	Reset()
}](m P) P {
	if m == nil {
		return P(new(M))
	}
	m.Reset()
	return m
}

// walkFields calls fn with the number and contents of every length-delimited
// field of the message b, and checks that the other fields parse.
func walkFields(b []byte, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformedWire
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return errMalformedWire
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return errMalformedWire
		}
		if err := fn(num, v); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// watchLine is what the checker reads of one line of a REST watch stream,
// {"result": response} in the proto field names calsync sends; the rest of
// the line is skipped, but parsed: a malformed line fails the stream.
type watchLine struct {
	Result *struct {
		Change *struct {
			Cursor string `json:"cursor"`
			Event  *struct {
				Provider        string `json:"provider"`
				ProviderEventID string `json:"provider_event_id"`
				Title           string `json:"title"`
			} `json:"event"`
		} `json:"change"`
		Bookmark *struct {
			Cursor string `json:"cursor"`
		} `json:"bookmark"`
	} `json:"result"`
}

var errNoResult = errors.New("watch line without a result")

// decodeWatchLine fills resp with the checked fields of a REST watch
// stream's line, as [checkedCodec] does for a gRPC one: a full protojson
// decode of every event would make the client, not calsync, the limit.
func decodeWatchLine(b []byte, resp *calsyncv1.WatchEventsResponse) error {
	spare := takeSpare(resp)
	var line watchLine
	if err := json.Unmarshal(b, &line); err != nil {
		return err
	}
	r := line.Result
	switch {
	case r == nil:
		return errNoResult
	case r.Change != nil:
		c, kind := spare.change()
		c.Cursor = r.Change.Cursor
		if e := r.Change.Event; e != nil {
			ev := spare.event()
			ev.Provider, ev.ProviderEventId, ev.Title = e.Provider, e.ProviderEventID, e.Title
			c.Event = ev
		}
		resp.Kind = kind
	case r.Bookmark != nil:
		bm, kind := spare.bookmark()
		bm.Cursor = r.Bookmark.Cursor
		resp.Kind = kind
	}
	return nil
}

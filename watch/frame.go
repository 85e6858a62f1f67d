package watch

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// Frame is one calsyncv1.WatchEventsResponse in protobuf wire format. A
// change's frame is built once and the same bytes go to every stream that
// receives it; never modify one.
type Frame []byte

// Field numbers the frames are assembled from; they must match
// calsync/v1/calsync.proto and change.proto (frame_test.go checks).
const (
	responseChangeField   protowire.Number = 1 // WatchEventsResponse.change
	responseBookmarkField protowire.Number = 2 // WatchEventsResponse.bookmark
	changeCursorField     protowire.Number = 1 // Change.cursor
	changePrevEventField  protowire.Number = 5 // Change.previous_event
	changePrevCalField    protowire.Number = 6 // Change.previous_calendar
	bookmarkCursorField   protowire.Number = 1 // Bookmark.cursor
	bookmarkCompleteField protowire.Number = 2 // Bookmark.snapshot_complete
)

// entry is one committed change ready to send: what the filters look at and
// both encodings of its response, with and without the previous state.
type entry struct {
	cursor     store.Cursor
	typ        calsyncv1.ChangeType
	calendarID string
	provider   string
	// full carries previous_event / previous_calendar; lean does not. They
	// are the same slice when the change has no previous state.
	full, lean Frame
	// shared is set on an entry the tail holds (or held), and nil on one
	// of a change log page read for one stream, which needs none of it.
	shared *sharedJSON
}

// sharedJSON is what an entry of the tail keeps for REST streams.
type sharedJSON struct {
	// json is the change's JSON, without and with the previous state,
	// encoded when a stream first sends it (json.go).
	json [2]lazyJSON
	// bytes is what of json the tail's byte count holds; guarded by the
	// hub's lock.
	bytes int64
}

// sharedEntry is a tail entry and its JSON state, allocated together.
type sharedEntry struct {
	entry
	json sharedJSON
}

// entryOverhead approximates what an entry takes beyond its frames: the
// struct, its strings and the ring slot pointing at it.
const entryOverhead = 240

// memSize is the memory an entry holds, for the tail's byte bound.
func (e *entry) memSize() int64 {
	n := int64(len(e.full)+len(e.calendarID)+len(e.provider)) + entryOverhead
	if len(e.lean) > 0 && len(e.full) > 0 && &e.lean[0] != &e.full[0] {
		n += int64(len(e.lean)) // the lean frame is a second encoding
	}
	if e.shared != nil {
		n += e.shared.bytes
	}
	return n
}

// frame returns the encoding a stream with or without include_previous gets.
func (e *entry) frame(includePrevious bool) Frame {
	if includePrevious {
		return e.full
	}
	return e.lean
}

// newEntry encodes a change log record once for every stream: the full
// frame and, when the change carries previous state, the lean one, both in
// one allocation.
//
// A record whose bytes cannot be parsed still goes out, previous state
// included: a gap in the stream would be worse, and the client's decoder
// reports the damage.
func newEntry(rec store.ChangeRecord, codec CursorCodec) *entry {
	se := &sharedEntry{entry: entry{cursor: rec.Cursor, typ: rec.Type, calendarID: rec.CalendarID, provider: rec.Provider}}
	e := &se.entry
	e.shared = &se.json
	prev := previousSize(rec.Change)
	size := changeFrameSize(len(rec.Change))
	if prev > 0 {
		size += changeFrameSize(len(rec.Change) - prev)
	}
	b := appendChangeFrame(make([]byte, 0, size), rec.Change, 0, rec.Cursor, codec)
	e.full = b[:len(b):len(b)]
	e.lean = e.full
	if prev > 0 {
		b = appendChangeFrame(b, rec.Change, prev, rec.Cursor, codec)
		e.lean = b[len(e.full):len(b):len(b)]
	}
	return e
}

// cursorFieldSize is the encoded size of a Change's cursor field.
var cursorFieldSize = protowire.SizeTag(changeCursorField) + protowire.SizeBytes(cursorTextLen)

// changeFrameSize is the size of the frame of an encoded Change of n bytes
// without cursor.
func changeFrameSize(n int) int {
	return protowire.SizeTag(responseChangeField) + protowire.SizeBytes(n+cursorFieldSize)
}

// appendChangeFrame appends to b the WatchEventsResponse of a change log
// record: change is a Change with an empty cursor, so appending the cursor
// field gives the complete Change, as protobuf lets fields come in any
// order. prev is 0 to keep the previous state, or [previousSize] of change
// to leave it out.
func appendChangeFrame(b, change []byte, prev int, cursor store.Cursor, codec CursorCodec) []byte {
	b = protowire.AppendTag(b, responseChangeField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(change)-prev+cursorFieldSize))
	if prev == 0 {
		b = append(b, change...)
	} else {
		b = appendWithoutPrevious(b, change)
	}
	b = protowire.AppendTag(b, changeCursorField, protowire.BytesType)
	b = protowire.AppendVarint(b, cursorTextLen)
	return codec.AppendEncode(b, cursor)
}

// previousSize returns how many bytes of an encoded Change its
// previous_event and previous_calendar fields take: 0 when it has none, or
// when the bytes do not parse.
func previousSize(change []byte) int {
	n := 0
	for rest := change; len(rest) > 0; {
		size, prev := nextField(rest)
		if size < 0 {
			return 0
		}
		if prev {
			n += size
		}
		rest = rest[size:]
	}
	return n
}

// appendWithoutPrevious appends the fields of an encoded Change other than
// previous_event and previous_calendar; the bytes must parse.
func appendWithoutPrevious(b, change []byte) []byte {
	for rest := change; len(rest) > 0; {
		size, prev := nextField(rest)
		if !prev {
			b = append(b, rest[:size]...)
		}
		rest = rest[size:]
	}
	return b
}

// nextField returns the size of the first field of an encoded Change, tag
// included, and whether it is previous state; size is negative when b does
// not parse. Only a length-delimited field is a previous_event or
// previous_calendar message: with another wire type, a decoder keeps it as
// an unknown field, and so do lean frames.
func nextField(b []byte) (size int, prev bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return n, false
	}
	m := protowire.ConsumeFieldValue(num, typ, b[n:])
	if m < 0 {
		return m, false
	}
	return n + m, typ == protowire.BytesType && (num == changePrevEventField || num == changePrevCalField)
}

// bookmarkFrame encodes a Bookmark response.
func bookmarkFrame(cursor string, snapshotComplete bool) Frame {
	inner := protowire.SizeTag(bookmarkCursorField) + protowire.SizeBytes(len(cursor))
	if snapshotComplete {
		inner += protowire.SizeTag(bookmarkCompleteField) + protowire.SizeVarint(1)
	}
	b := make([]byte, 0, protowire.SizeTag(responseBookmarkField)+protowire.SizeBytes(inner))
	b = protowire.AppendTag(b, responseBookmarkField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	b = protowire.AppendTag(b, bookmarkCursorField, protowire.BytesType)
	b = protowire.AppendString(b, cursor)
	if snapshotComplete {
		b = protowire.AppendTag(b, bookmarkCompleteField, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

// snapshotFrame encodes one event of an initial snapshot as a CREATED change.
// It has no cursor: a snapshot cannot be resumed part way, only from the
// bookmark that completes it.
func snapshotFrame(ev *calsyncv1.CalendarEvent) (Frame, error) {
	return proto.Marshal(&calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Change{
		Change: &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: ev},
	}})
}

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
}

// frame returns the encoding a stream with or without include_previous gets.
func (e *entry) frame(includePrevious bool) Frame {
	if includePrevious {
		return e.full
	}
	return e.lean
}

// newEntry encodes a change log record once for every stream. The record's
// bytes are a Change with an empty cursor, so appending the cursor field
// gives the complete Change: protobuf lets fields come in any order.
//
// A record whose bytes cannot be parsed still goes out, previous state
// included: a gap in the stream would be worse, and the client's decoder
// reports the damage.
func newEntry(rec store.ChangeRecord, codec CursorCodec) *entry {
	cursor := codec.Encode(rec.Cursor)
	e := &entry{cursor: rec.Cursor, typ: rec.Type, calendarID: rec.CalendarID, provider: rec.Provider}
	e.full = changeFrame(rec.Change, cursor)
	e.lean = e.full
	if lean, stripped := stripPrevious(rec.Change); stripped {
		e.lean = changeFrame(lean, cursor)
	}
	return e
}

// changeFrame wraps an encoded Change without cursor into a
// WatchEventsResponse carrying that cursor.
func changeFrame(change []byte, cursor string) Frame {
	inner := protowire.SizeTag(changeCursorField) + protowire.SizeBytes(len(cursor))
	n := len(change) + inner
	b := make([]byte, 0, protowire.SizeTag(responseChangeField)+protowire.SizeBytes(n))
	b = protowire.AppendTag(b, responseChangeField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = append(b, change...)
	b = protowire.AppendTag(b, changeCursorField, protowire.BytesType)
	b = protowire.AppendString(b, cursor)
	return b
}

// stripPrevious returns change without its previous_event and
// previous_calendar fields, and whether it removed any. Bytes that do not
// parse are returned unchanged.
func stripPrevious(change []byte) ([]byte, bool) {
	var out []byte
	rest := change
	for len(rest) > 0 {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return change, false
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return change, false
		}
		field := rest[:n+m]
		rest = rest[n+m:]
		if num == changePrevEventField || num == changePrevCalField {
			if out == nil {
				out = make([]byte, 0, len(change))
				out = append(out, change[:len(change)-len(rest)-len(field)]...)
			}
			continue
		}
		if out != nil {
			out = append(out, field...)
		}
	}
	if out == nil {
		return change, false
	}
	return out, true
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

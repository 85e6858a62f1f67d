package watch

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/google/go-cmp/cmp"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

func TestFrames(t *testing.T) {
	codec := NewCursorCodec("store-a")
	prev := &calsyncv1.CalendarEvent{Id: "evt_a", Title: "old"}
	next := &calsyncv1.CalendarEvent{Id: "evt_a", Title: "new"}
	change := &calsyncv1.Change{
		Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: next, PreviousEvent: prev,
		ChangedFields: []string{"title"}, CommitTime: timestamppb.Now(),
	}
	data, err := proto.Marshal(change)
	if err != nil {
		t.Fatal(err)
	}
	e := newEntry(store.ChangeRecord{Cursor: 9, Type: change.Type, Change: data}, codec)

	decode := func(t *testing.T, f Frame) *calsyncv1.WatchEventsResponse {
		t.Helper()
		var resp calsyncv1.WatchEventsResponse
		if err := proto.Unmarshal(f, &resp); err != nil {
			t.Fatalf("frame does not parse: %v", err)
		}
		return &resp
	}
	t.Run("WithPrevious", func(t *testing.T) {
		want := proto.Clone(change).(*calsyncv1.Change)
		want.Cursor = codec.Encode(9)
		if diff := cmp.Diff(want, decode(t, e.frame(true)).GetChange(), protocmp.Transform()); diff != "" {
			t.Errorf("change (-want +got):\n%s", diff)
		}
	})
	t.Run("WithoutPrevious", func(t *testing.T) {
		want := proto.Clone(change).(*calsyncv1.Change)
		want.Cursor = codec.Encode(9)
		want.PreviousEvent = nil
		if diff := cmp.Diff(want, decode(t, e.frame(false)).GetChange(), protocmp.Transform()); diff != "" {
			t.Errorf("change (-want +got):\n%s", diff)
		}
	})
	t.Run("SharedWhenNoPrevious", func(t *testing.T) {
		data, _ := proto.Marshal(&calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: next})
		e := newEntry(store.ChangeRecord{Cursor: 10, Change: data}, codec)
		if &e.full[0] != &e.lean[0] {
			t.Error("a change without previous state was encoded twice")
		}
	})
	t.Run("UnparseableSentAsIs", func(t *testing.T) {
		// A field 5 (previous_event) whose length runs past the end.
		damaged := []byte{0x2a, 0x10, 0x01}
		e := newEntry(store.ChangeRecord{Cursor: 11, Change: damaged}, codec)
		if &e.full[0] != &e.lean[0] || !bytes.Contains(e.full, damaged) {
			t.Errorf("damaged change not sent whole to every stream: full % x, lean % x", e.full, e.lean)
		}
	})
	t.Run("Bookmark", func(t *testing.T) {
		want := &calsyncv1.Bookmark{Cursor: codec.Encode(3), SnapshotComplete: true}
		if diff := cmp.Diff(want, decode(t, bookmarkFrame(want.Cursor, true)).GetBookmark(), protocmp.Transform()); diff != "" {
			t.Errorf("bookmark (-want +got):\n%s", diff)
		}
	})
}

// FuzzNewEntry feeds arbitrary change bytes to newEntry: it must never
// panic, and when the bytes are a Change, both frames must decode to it,
// the lean one without the previous state.
func FuzzNewEntry(f *testing.F) {
	seed, _ := proto.Marshal(&calsyncv1.Change{
		Type:          calsyncv1.ChangeType_CHANGE_TYPE_UPDATED,
		Event:         &calsyncv1.CalendarEvent{Id: "evt_a", Title: "new"},
		PreviousEvent: &calsyncv1.CalendarEvent{Id: "evt_a", Title: "old"},
	})
	f.Add(seed)
	f.Add([]byte{0x2a, 0x10, 0x01})
	codec := NewCursorCodec("store-a")
	f.Fuzz(func(t *testing.T, data []byte) {
		e := newEntry(store.ChangeRecord{Cursor: 5, Change: data}, codec)
		var want calsyncv1.Change
		if proto.Unmarshal(data, &want) != nil {
			return
		}
		want.Cursor = codec.Encode(5)
		var full, lean calsyncv1.WatchEventsResponse
		if err := proto.Unmarshal(e.full, &full); err != nil {
			t.Fatalf("full frame: %v", err)
		}
		if err := proto.Unmarshal(e.lean, &lean); err != nil {
			t.Fatalf("lean frame: %v", err)
		}
		if !proto.Equal(full.GetChange(), &want) {
			t.Fatalf("full frame holds %v, want %v", full.GetChange(), &want)
		}
		want.PreviousEvent, want.PreviousCalendar = nil, nil
		if !proto.Equal(lean.GetChange(), &want) {
			t.Fatalf("lean frame holds %v, want %v", lean.GetChange(), &want)
		}
	})
}

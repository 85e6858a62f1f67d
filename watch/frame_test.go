package watch

import (
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
	t.Run("Bookmark", func(t *testing.T) {
		want := &calsyncv1.Bookmark{Cursor: codec.Encode(3), SnapshotComplete: true}
		if diff := cmp.Diff(want, decode(t, bookmarkFrame(want.Cursor, true)).GetBookmark(), protocmp.Transform()); diff != "" {
			t.Errorf("bookmark (-want +got):\n%s", diff)
		}
	})
}

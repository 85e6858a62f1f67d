package watch

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
)

// TestPageFrames builds a change log page the way a catching-up stream
// does, record by record from a reused buffer as the store hands them over,
// and checks each entry's frame against its change, and that a stream
// without include_previous allocates for the frames it sends, not for the
// full changes.
func TestPageFrames(t *testing.T) {
	codec := NewCursorCodec("store-a")
	const n = 300
	var recs []store.ChangeRecord
	var changes []*calsyncv1.Change
	fullBytes, leanBytes := 0, 0
	for i := range n {
		cal := "cal_a"
		if i%3 == 2 {
			cal = "cal_b"
		}
		prev := &calsyncv1.CalendarEvent{Id: fmt.Sprint("evt_", i), CalendarId: cal, Description: strings.Repeat("p", 1000)}
		next := &calsyncv1.CalendarEvent{Id: fmt.Sprint("evt_", i), CalendarId: cal, Description: strings.Repeat("n", 1000)}
		c := &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: next, PreviousEvent: prev}
		data, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, store.ChangeRecord{Cursor: store.Cursor(i + 1), Type: c.Type, CalendarID: cal, Provider: "postpress", Change: data})
		changes = append(changes, c)
		if cal == "cal_a" {
			fullBytes += changeFrameSize(len(data))
			leanBytes += changeFrameSize(len(data) - previousSize(data))
		}
	}
	for _, includePrevious := range []bool{false, true} {
		t.Run(fmt.Sprint("include_previous=", includePrevious), func(t *testing.T) {
			s := &stream{hub: &Hub{codec: codec}, includePrevious: includePrevious,
				filter: filter{calendars: map[string]struct{}{"cal_a": {}}}}
			p := pageFrames{s: s}
			buf := make([]byte, 0, 4096) // the store's buffer, reused row after row
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for i := range recs {
				r := recs[i]
				buf = append(buf[:0], r.Change...)
				r.Change = buf
				if err := p.add(&r); err != nil {
					t.Fatal(err)
				}
			}
			runtime.ReadMemStats(&after)
			clear(buf) // nothing may point into the store's buffer

			if len(p.out) != n {
				t.Fatalf("page of %d records has %d entries", n, len(p.out))
			}
			for i, e := range p.out {
				if e.cursor != recs[i].Cursor || e.calendarID != recs[i].CalendarID {
					t.Fatalf("entry %d is cursor %d of %s, want %d of %s", i, e.cursor, e.calendarID, recs[i].Cursor, recs[i].CalendarID)
				}
				if recs[i].CalendarID != "cal_a" {
					if e.full != nil {
						t.Fatalf("entry %d, of a calendar the stream leaves out, has a frame", i)
					}
					continue
				}
				var resp calsyncv1.WatchEventsResponse
				if err := proto.Unmarshal(e.frame(includePrevious), &resp); err != nil {
					t.Fatalf("frame %d does not parse: %v", i, err)
				}
				want := proto.Clone(changes[i]).(*calsyncv1.Change)
				want.Cursor = codec.Encode(recs[i].Cursor)
				if !includePrevious {
					want.PreviousEvent = nil
				}
				if diff := cmp.Diff(want, resp.GetChange(), protocmp.Transform()); diff != "" {
					t.Fatalf("frame %d (-want +got):\n%s", i, diff)
				}
			}
			// Frames share chunks of at most frameChunk bytes, so a page
			// wastes less than a chunk beyond the frames it holds; entry
			// blocks grow with the page, so their room is at most twice
			// the entries, and the entries' pointers twice theirs.
			allocated := int(after.TotalAlloc - before.TotalAlloc)
			frames := leanBytes
			if includePrevious {
				frames = fullBytes
			}
			entries := 2 * n * (int(unsafe.Sizeof(entry{})) + 8)
			if limit := frames + frameChunk + entries; allocated > limit {
				t.Errorf("building the page allocated %d bytes, more than its frames (%d), a chunk and its entries (%d)",
					allocated, frames, frameChunk+entries)
			}
			if lean := allocated - n*int(unsafe.Sizeof(entry{})); !includePrevious && lean >= fullBytes {
				t.Errorf("a page of lean frames allocated %d bytes beside its entries, as much as full frames take (%d)", lean, fullBytes)
			}
		})
	}
}

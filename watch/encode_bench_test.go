package watch

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/internal/cputime"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
)

// BenchmarkEncode measures what a committed change costs to encode once for
// every stream, per change: the protobuf frames gRPC streams share, and the
// JSON REST streams share (encoded only while a REST stream is open). Both
// encode an UPDATED change, which carries previous state, so each encodes a
// full and a lean form. Run with -benchmem for allocations per change.
func BenchmarkEncode(b *testing.B) {
	cal := model.CalendarID(model.ProviderPostpress, "acct", "cal-1")
	start := time.Date(2030, 1, 1, 9, 0, 0, 0, time.UTC)
	prev := &calsyncv1.CalendarEvent{
		Id: model.EventID(model.ProviderPostpress, cal, "evt-1"), CalendarId: cal, Provider: model.ProviderPostpress,
		ProviderEventId: "evt-1", Title: "before", StartTime: timestamppb.New(start), EndTime: timestamppb.New(start.Add(time.Hour)),
	}
	next := proto.Clone(prev).(*calsyncv1.CalendarEvent)
	next.Title = "after"
	data, err := proto.Marshal(&calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: next, PreviousEvent: prev,
		ChangedFields: model.ChangedFields(prev, next)})
	if err != nil {
		b.Fatal(err)
	}
	rec := store.ChangeRecord{Cursor: 42, Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, CalendarID: cal, Provider: model.ProviderPostpress, Change: data}
	codec := NewCursorCodec("bench")
	e := newEntry(rec, codec)
	opts := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}
	for _, bc := range []struct {
		name   string
		encode func()
	}{
		{"frame", func() { newEntry(rec, codec) }},
		{"json", func() {
			encodeChangeJSON(e.full, opts)
			encodeChangeJSON(e.lean, opts)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := cputime.Process()
			for b.Loop() {
				bc.encode()
			}
			if cpu := cputime.Process(); cpu > 0 {
				b.ReportMetric(float64((cpu-cpu0).Nanoseconds())/1000/float64(b.N), "cpu-µs/change")
			}
		})
	}
}

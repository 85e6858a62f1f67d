package server

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/testdb"
	"github.com/calsync/calsync/watch"
)

// FuzzStoredEventEncodes feeds arbitrary normalized events through the
// write path's check (model.CheckEncodable, which the store applies) into
// a real store, reads them back as listings and as the change log, and
// encodes them with every encoding the API offers: binary protobuf, the
// REST gateway's JSON, the NDJSON stream envelope and Server-Sent Events.
// Whatever the check accepts must encode everywhere, so no stored event can
// end a reader; whatever it refuses, the store must refuse too.
func FuzzStoredEventEncodes(f *testing.F) {
	day := time.Date(2026, 1, 20, 0, 0, 0, 0, time.UTC)
	f.Add("Design review", "a@example.com", "note", day.Unix(), int32(0), day.Unix()+3600, int32(0), day.Unix(), 1.5, false)
	f.Add("last day", "", "", int64(253402214400), int32(0), int64(253402300800), int32(0), int64(0), 0.0, false) // 9999-12-31 .. 10000-01-01
	f.Add("tokyo", "", "", int64(-62135630339), int32(0), int64(-62135543939), int32(0), int64(0), 0.0, true)     // 0001-01-01 in Tokyo, in UTC
	f.Add("earliest", "", "", int64(-62135596800), int32(0), int64(253402300799), int32(999_999_999), int64(-1), 0.0, false)
	f.Add("caf\xe9", "\xff", "k\xc3", int64(0), int32(-1), int64(0), int32(1_000_000_000), int64(0), math.NaN(), false)
	f.Add("inf", "", "", int64(0), int32(0), int64(0), int32(0), int64(math.MaxInt64), math.Inf(-1), true)

	st := testdb.MustOpen(f)
	marshaler := jsonMarshaler()
	ndjson := rawBodyMarshaler{jsonMarshaler()}
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, title, email, rawKey string, startSec int64, startNanos int32, endSec int64, endNanos int32,
		updateSec int64, number float64, deleted bool) {
		ctx := context.Background()
		raw, err := structpb.NewStruct(map[string]any{"summary": title})
		if err != nil {
			// structpb refuses invalid UTF-8 itself; build the Struct by hand
			// so the store sees it anyway.
			raw = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		}
		raw.Fields[rawKey] = structpb.NewNumberValue(number)
		ev := &calsyncv1.CalendarEvent{
			Id:                 "evt_fuzz" + strconv.FormatInt(n.Add(1), 10),
			CalendarId:         "cal_fuzz",
			Provider:           model.ProviderPostpress,
			Title:              title,
			StartTime:          &timestamppb.Timestamp{Seconds: startSec, Nanos: startNanos},
			EndTime:            &timestamppb.Timestamp{Seconds: endSec, Nanos: endNanos},
			ProviderUpdateTime: &timestamppb.Timestamp{Seconds: updateSec},
			Attendees:          []*calsyncv1.Attendee{{Email: email}},
			Deleted:            deleted,
			Raw:                raw,
		}
		checkErr := model.CheckEncodable(ev)
		var cursor store.Cursor
		err = st.Update(ctx, func(tx store.Tx) error {
			if err := tx.PutEvent(ctx, ev); err != nil {
				return err
			}
			var err error
			cursor, err = tx.AppendChange(ctx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: ev})
			return err
		})
		if checkErr != nil {
			if !errors.Is(err, store.ErrInvalidArgument) {
				t.Fatalf("the check refused %v (%v) but the store answered %v", ev, checkErr, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("the check accepted %v but the store refused it: %v", ev, err)
		}

		got, err := st.GetEvent(ctx, ev.GetId(), true)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := st.ReadChanges(ctx, cursor-1, 1)
		if err != nil || len(recs) != 1 {
			t.Fatalf("ReadChanges: %v, %v", recs, err)
		}
		change := &calsyncv1.Change{}
		if err := proto.Unmarshal(recs[0].Change, change); err != nil {
			t.Fatal(err)
		}
		change.Cursor = "c"
		list := &calsyncv1.ListEventsResponse{Events: []*calsyncv1.CalendarEvent{got}}
		stream := &calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Change{Change: change}}
		if _, err := proto.Marshal(list); err != nil {
			t.Fatalf("binary encoding of an accepted event: %v", err)
		}
		if _, err := proto.Marshal(stream); err != nil {
			t.Fatalf("binary encoding of an accepted change: %v", err)
		}
		if _, err := marshaler.Marshal(list); err != nil {
			t.Fatalf("REST encoding of an accepted event: %v", err)
		}
		if _, err := marshaler.Marshal(&calsyncv1.GetEventResponse{Event: got}); err != nil {
			t.Fatalf("REST encoding of an accepted event: %v", err)
		}
		line, err := ndjson.Marshal(map[string]any{streamEnvelope: stream})
		if err != nil {
			t.Fatalf("NDJSON encoding of an accepted change: %v", err)
		}
		if !utf8.Valid(line) {
			t.Fatalf("NDJSON line is not UTF-8: %q", line)
		}
		data, err := marshaler.MarshalOptions.Marshal(change)
		if err != nil {
			t.Fatalf("REST stream encoding of an accepted change: %v", err)
		}
		for _, sse := range []bool{false, true} {
			msg := appendMessage(nil, sse, watch.Message{Cursor: "c", JSON: data})
			if !utf8.Valid(msg) || (!sse && bytes.Count(msg, []byte("\n")) != 1) || (sse && !bytes.HasSuffix(msg, []byte("\n\n"))) {
				t.Fatalf("REST stream message (SSE %v) is not one UTF-8 message: %q", sse, msg)
			}
		}
	})
}

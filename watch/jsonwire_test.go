package watch

import (
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// checkWireJSON checks the change JSON read from frame fr in place
// against the decode's: where changeJSONFromWire answers, the decode must
// succeed with the same cursor and the same JSON value. It reports whether
// the wire path answered.
func checkWireJSON(t *testing.T, fr []byte) bool {
	t.Helper()
	cursor, got, ok := changeJSONFromWire(fr)
	if !ok {
		return false
	}
	var resp calsyncv1.WatchEventsResponse
	if err := proto.Unmarshal(fr, &resp); err != nil {
		t.Fatalf("frame %x: read in place as %s, but the decode fails: %v", fr, got, err)
	}
	want, err := restJSON.Marshal(resp.GetChange())
	if err != nil {
		t.Fatalf("frame %x: read in place as %s, but protojson fails: %v", fr, got, err)
	}
	if !sameJSON(t, got, want) {
		t.Fatalf("frame %x:\n got %s\nwant %s", fr, got, want)
	}
	if cursor != resp.GetChange().GetCursor() {
		t.Fatalf("frame %x: cursor %q, the decode's %q", fr, cursor, resp.GetChange().GetCursor())
	}
	return true
}

func changeFrame(change []byte) []byte {
	fr := protowire.AppendTag(nil, responseChangeField, protowire.BytesType)
	return protowire.AppendBytes(fr, change)
}

// TestWireJSONAsDecoded reads random changes' frames in place, then the
// same frames damaged: concatenated (which the decode merges), cut short,
// with a byte changed, with unknown fields: wherever the in-place reading
// answers, it answers what the decode and protojson answer.
func TestWireJSONAsDecoded(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var frames [][]byte
	fast := 0
	for range 12000 {
		c := &calsyncv1.Change{}
		fillRandom(r, c.ProtoReflect(), 0)
		b, err := proto.Marshal(c)
		if err != nil {
			continue // invalid UTF-8: no store writes it; hand-made frames below
		}
		fr := changeFrame(b)
		frames = append(frames, fr)
		if checkWireJSON(t, fr) {
			fast++
		}
	}
	t.Logf("%d of %d random changes read in place", fast, len(frames))
	if fast < len(frames)/5 {
		t.Errorf("only %d of %d random changes read in place", fast, len(frames))
	}
	for i := range 3000 {
		a := frames[r.IntN(len(frames))]
		_, n := protowire.ConsumeVarint(a[1:])
		inner := a[1+n:] // the frame's change
		var fr []byte
		switch i % 4 {
		case 0:
			other := frames[r.IntN(len(frames))]
			_, m := protowire.ConsumeVarint(other[1:])
			fr = changeFrame(append(append([]byte(nil), inner...), other[1+m:]...))
		case 1:
			fr = a[:r.IntN(len(a))]
		case 2:
			fr = append([]byte(nil), a...)
			fr[r.IntN(len(fr))] ^= byte(1 + r.IntN(255))
		default:
			extra := protowire.AppendTag(nil, 99, protowire.VarintType)
			extra = protowire.AppendVarint(extra, r.Uint64())
			extra = protowire.AppendTag(extra, 100, protowire.BytesType)
			extra = protowire.AppendBytes(extra, []byte("unknown"))
			extra = protowire.AppendTag(extra, 101, protowire.Fixed32Type)
			extra = protowire.AppendFixed32(extra, 7)
			fr = changeFrame(append(append([]byte(nil), inner...), extra...))
			if !checkWireJSON(t, fr) && checkWireJSON(t, a) {
				t.Fatalf("unknown fields sent a change to the decode")
			}
			continue
		}
		checkWireJSON(t, fr)
	}
}

// TestWireJSONLeavesToTheDecode checks frames the in-place reading must not
// answer, because the decode treats them in a way of its own.
func TestWireJSONLeavesToTheDecode(t *testing.T) {
	str := func(b []byte, num protowire.Number, s string) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, []byte(s))
	}
	ts, err := proto.Marshal(timestamppb.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)))
	if err != nil {
		t.Fatal(err)
	}
	event := func(fields ...[]byte) []byte {
		var b []byte
		for _, f := range fields {
			b = append(b, f...)
		}
		return protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), b)
	}
	for name, change := range map[string][]byte{
		"invalid UTF-8":                        str(nil, 1, "bad \xff"),
		"invalid UTF-8, then replaced":         str(str(nil, 1, "bad \xff"), 1, "fine"),
		"an event twice (merged)":              append(event(str(nil, 7, "a")), event(str(nil, 8, "b"))...),
		"a string as a varint":                 protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5),
		"a timestamp's seconds as bytes":       event(protowire.AppendBytes(protowire.AppendTag(nil, 10, protowire.BytesType), str(nil, 1, "x"))),
		"a timestamp out of range":             event(protowire.AppendBytes(protowire.AppendTag(nil, 10, protowire.BytesType), protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(maxTimestampSeconds+1)))),
		"a struct (the calendar's metadata)":   protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), protowire.AppendBytes(protowire.AppendTag(nil, 9, protowire.BytesType), nil)),
		"a type as bytes (a packed enum list)": protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte{1, 2}),
	} {
		fr := changeFrame(change)
		if _, got, ok := changeJSONFromWire(fr); ok {
			t.Errorf("%s: read in place as %s", name, got)
		}
		// What the caller then gives is the decode's and protojson's answer.
		var resp calsyncv1.WatchEventsResponse
		wantErr := proto.Unmarshal(fr, &resp)
		if wantErr == nil {
			_, wantErr = restJSON.Marshal(resp.GetChange())
		}
		if _, _, err := encodeChangeJSON(fr, restJSON); (wantErr != nil) != (err != nil) {
			t.Errorf("%s: encodeChangeJSON error %v, the decode's and protojson's %v", name, err, wantErr)
		}
	}
	// A timestamp exactly as protojson writes it, from its encoding.
	fr := changeFrame(event(protowire.AppendBytes(protowire.AppendTag(nil, 10, protowire.BytesType), ts)))
	if !checkWireJSON(t, fr) {
		t.Error("a change with a timestamp went to the decode")
	}
}

// TestAppendDateTime compares the date arithmetic with time's over the
// years a Timestamp may hold.
func TestAppendDateTime(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	check := func(secs int64) {
		got := string(appendDateTime(nil, secs))
		if want := time.Unix(secs, 0).UTC().Format("2006-01-02T15:04:05"); got != want {
			t.Fatalf("appendDateTime(%d) = %s, want %s", secs, got, want)
		}
	}
	for _, secs := range []int64{minTimestampSeconds, maxTimestampSeconds, 0, -1, 86399, 86400, -86400, -86401, 951782400, 951868800, 4107542400} {
		check(secs)
	}
	for range 200_000 {
		check(minTimestampSeconds + r.Int64N(maxTimestampSeconds-minTimestampSeconds+1))
	}
}

// TestChangesReadInPlace guards the point of the wire path: a change as the
// store writes it, with previous state, is read without a decode.
func TestChangesReadInPlace(t *testing.T) {
	ts := timestamppb.New(time.Date(2030, 5, 6, 7, 8, 9, 120_000_000, time.UTC))
	ev := &calsyncv1.CalendarEvent{
		Id: "evt_1", CalendarId: "cal_1", Provider: "postpress", Title: "Sync \"weekly\" 日本", StartTime: ts, EndTime: ts,
		Status: calsyncv1.EventStatus_EVENT_STATUS_CONFIRMED, Organizer: &calsyncv1.Person{Email: "o@x"},
		Attendees:  []*calsyncv1.Attendee{{Email: "a@x", ResponseStatus: calsyncv1.ResponseStatus_RESPONSE_STATUS_ACCEPTED}, {Email: "b@x"}},
		Recurrence: []string{"RRULE:FREQ=WEEKLY"}, CreateTime: ts, UpdateTime: ts,
	}
	b, err := proto.Marshal(&calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: ev, PreviousEvent: ev,
		ChangedFields: []string{"title", "attendees"}, CommitTime: ts})
	if err != nil {
		t.Fatal(err)
	}
	fr := appendChangeFrame(nil, b, 0, 42, NewCursorCodec("test"))
	if !checkWireJSON(t, fr) {
		t.Fatal("a stored change went to the decode")
	}
}

package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// watchCase is a watch response as calsync sends it and what the checker's
// decoders keep of it.
type watchCase struct {
	name     string
	in, want *calsyncv1.WatchEventsResponse
}

// watchCases returns a change with every kind of field, a bookmark and a
// change without an event, and the full change on its own.
func watchCases() ([]watchCase, *calsyncv1.WatchEventsResponse) {
	ev := &calsyncv1.CalendarEvent{
		Id: "evt_1", CalendarId: "cal_1", Provider: "postpress", ProviderEventId: "e7",
		Title: "bench 3 1767225600000000000", Description: "notes", StartTime: timestamppb.Now(),
		Attendees: []*calsyncv1.Attendee{{Email: "a@example.com"}},
	}
	full := &calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Change{Change: &calsyncv1.Change{
		Cursor: "AQID", Type: calsyncv1.ChangeType_CHANGE_TYPE_UPDATED, Event: ev,
		PreviousEvent: &calsyncv1.CalendarEvent{Id: "evt_1", Title: "bench 2 1"}, ChangedFields: []string{"title"},
	}}}
	return []watchCase{
		{"Change", full, &calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Change{Change: &calsyncv1.Change{
			Cursor: "AQID", Event: &calsyncv1.CalendarEvent{Provider: "postpress", ProviderEventId: "e7", Title: "bench 3 1767225600000000000"},
		}}}},
		{"Bookmark", &calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Bookmark{Bookmark: &calsyncv1.Bookmark{Cursor: "AQIE", SnapshotComplete: true}}},
			&calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Bookmark{Bookmark: &calsyncv1.Bookmark{Cursor: "AQIE"}}}},
		{"ChangeWithoutEvent", &calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Change{Change: &calsyncv1.Change{Cursor: "AQIF"}}},
			&calsyncv1.WatchEventsResponse{Kind: &calsyncv1.WatchEventsResponse_Change{Change: &calsyncv1.Change{Cursor: "AQIF"}}}},
	}, full
}

func TestCheckedCodec(t *testing.T) {
	cases, full := watchCases()
	codec := checkedCodec{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := proto.Marshal(c.in)
			if err != nil {
				t.Fatal(err)
			}
			// Split in two buffers, as grpc may hand a message over.
			data := mem.BufferSlice{mem.SliceBuffer(b[:len(b)/2]), mem.SliceBuffer(b[len(b)/2:])}
			got := &calsyncv1.WatchEventsResponse{}
			if err := codec.Unmarshal(data, got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("ErrMalformed", func(t *testing.T) {
		b, _ := proto.Marshal(full)
		for _, bad := range [][]byte{b[:len(b)-1], {0x0a, 0x05, 0x0a}, {0xff}} {
			if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &calsyncv1.WatchEventsResponse{}); err == nil {
				t.Errorf("% x decoded without error", bad)
			}
		}
	})
}

func TestDecodeWatchLine(t *testing.T) {
	cases, full := watchCases()
	// calsync's REST streams: proto field names, default values emitted,
	// each response wrapped as {"result": response}.
	enc := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}
	line := func(t *testing.T, m *calsyncv1.WatchEventsResponse) []byte {
		b, err := enc.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(`{"result":` + string(b) + "}")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := &calsyncv1.WatchEventsResponse{}
			if err := decodeWatchLine(line(t, c.in), got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("ErrMalformed", func(t *testing.T) {
		b := line(t, full)
		for _, bad := range []string{string(b[:len(b)-1]), `{"error":{"code":14,"message":"unavailable"}}`, `{"result":{"change":{"cursor":7}}}`, `not json`} {
			if err := decodeWatchLine([]byte(bad), &calsyncv1.WatchEventsResponse{}); err == nil {
				t.Errorf("%s decoded without error", bad)
			}
		}
	})
}

// TestDecodersReuseOneMessage decodes every case after every other into
// one message, as a watcher does: nothing of the response before may be
// left in the one after, and what is reused is reset.
func TestDecodersReuseOneMessage(t *testing.T) {
	cases, _ := watchCases()
	enc := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}
	decoders := map[string]func(t *testing.T, m *calsyncv1.WatchEventsResponse, into *calsyncv1.WatchEventsResponse) error{
		"gRPC": func(t *testing.T, m, into *calsyncv1.WatchEventsResponse) error {
			b, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			return checkedCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, into)
		},
		"REST": func(t *testing.T, m, into *calsyncv1.WatchEventsResponse) error {
			b, err := enc.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			return decodeWatchLine([]byte(`{"result":`+string(b)+"}"), into)
		},
	}
	for name, decode := range decoders {
		for _, first := range cases {
			for _, second := range cases {
				t.Run(name+"/"+first.name+"Then"+second.name, func(t *testing.T) {
					got := &calsyncv1.WatchEventsResponse{}
					if err := decode(t, first.in, got); err != nil {
						t.Fatal(err)
					}
					if err := decode(t, second.in, got); err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(second.want, got, protocmp.Transform()); diff != "" {
						t.Errorf("decoded (-want +got):\n%s", diff)
					}
				})
			}
		}
	}
}

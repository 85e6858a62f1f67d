package postgres

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
)

// marshal encodes deterministically, so equal messages store equal bytes.
var marshal = proto.MarshalOptions{Deterministic: true}.Marshal

// nanos returns t as unix nanoseconds, clamped to what an int64 holds.
func nanos(t time.Time) int64 {
	const maxSec, minSec = math.MaxInt64 / int64(time.Second), math.MinInt64 / int64(time.Second)
	switch s := t.Unix(); {
	case s >= maxSec:
		return math.MaxInt64
	case s <= minSec:
		return math.MinInt64
	}
	return t.UnixNano()
}

// nullNanos is nanos, with the zero time as NULL.
func nullNanos(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := nanos(t)
	return &n
}

func fromNanos(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return time.Unix(0, *n).UTC()
}

// without returns a shallow copy of m with the named fields cleared.
func without(m proto.Message, names ...protoreflect.Name) proto.Message {
	src := m.ProtoReflect()
	dst := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dst.Set(fd, v)
		return true
	})
	for _, n := range names {
		dst.Clear(src.Descriptor().Fields().ByName(n))
	}
	return dst.Interface()
}

// instant is a time as unix seconds and nanoseconds within the second,
// which holds every time the model does and sorts like it.
type instant struct {
	sec  int64
	nsec int32
}

func timeInstant(t time.Time) instant { return instant{t.Unix(), int32(t.Nanosecond())} }

func tsInstant(ts *timestamppb.Timestamp) instant {
	if ts == nil {
		return instant{}
	}
	return instant{ts.GetSeconds(), ts.GetNanos()}
}

// eventRow is an event as stored.
type eventRow struct {
	id, calendarID, provider string
	start, end               instant
	updateNs                 int64
	deleted                  bool
	data, raw                []byte
}

func encodeEvent(e *calsyncv1.CalendarEvent) (eventRow, error) {
	if e.GetId() == "" || e.GetCalendarId() == "" || e.GetProvider() == "" {
		return eventRow{}, fmt.Errorf("postgres: event needs id, calendar_id and provider: %w", store.ErrInvalidArgument)
	}
	if err := model.CheckEncodable(e); err != nil {
		return eventRow{}, fmt.Errorf("postgres: event %s: %w: %w", e.GetId(), err, store.ErrInvalidArgument)
	}
	r := eventRow{
		id:         e.GetId(),
		calendarID: e.GetCalendarId(),
		provider:   e.GetProvider(),
		start:      tsInstant(e.GetStartTime()),
		deleted:    e.GetDeleted(),
	}
	if u := e.GetUpdateTime(); u != nil {
		r.updateNs = nanos(u.AsTime())
	}
	// An event without an end is an instant at its start.
	r.end = r.start
	if e.GetEndTime() != nil {
		r.end = tsInstant(e.GetEndTime())
	}
	var err error
	if r.data, err = marshal(without(e, "raw")); err != nil {
		return eventRow{}, fmt.Errorf("postgres: marshal event %s: %w", e.GetId(), err)
	}
	if e.GetRaw() != nil {
		if r.raw, err = marshal(e.GetRaw()); err != nil {
			return eventRow{}, fmt.Errorf("postgres: marshal raw of event %s: %w", e.GetId(), err)
		}
	}
	return r, nil
}

func decodeEvent(data, raw []byte) (*calsyncv1.CalendarEvent, error) {
	e := &calsyncv1.CalendarEvent{}
	if err := proto.Unmarshal(data, e); err != nil {
		return nil, fmt.Errorf("postgres: corrupt event: %w", err)
	}
	if raw != nil {
		e.Raw = &structpb.Struct{}
		if err := proto.Unmarshal(raw, e.Raw); err != nil {
			return nil, fmt.Errorf("postgres: corrupt raw payload of event %s: %w", e.GetId(), err)
		}
	}
	return e, nil
}

func decodeCalendar(data []byte) (*calsyncv1.Calendar, error) {
	c := &calsyncv1.Calendar{}
	if err := proto.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("postgres: corrupt calendar: %w", err)
	}
	return c, nil
}

// encodeChange marshals c as the log keeps it: no cursor, the commit time
// set, no raw payloads.
func encodeChange(c *calsyncv1.Change, commit time.Time) ([]byte, error) {
	m := without(c, "cursor", "commit_time").(*calsyncv1.Change)
	m.CommitTime = timestamppb.New(commit)
	if m.GetEvent().GetRaw() != nil {
		m.Event = without(m.Event, "raw").(*calsyncv1.CalendarEvent)
	}
	if m.GetPreviousEvent().GetRaw() != nil {
		m.PreviousEvent = without(m.PreviousEvent, "raw").(*calsyncv1.CalendarEvent)
	}
	if err := model.CheckEncodable(m); err != nil {
		return nil, fmt.Errorf("%w: %w", err, store.ErrInvalidArgument)
	}
	return marshal(m)
}

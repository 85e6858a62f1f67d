// Package rowcodec turns the model's messages into what a SQL backend
// stores, and back: the events table's columns, the change log's entries.
// Every backend stores the same bytes, so what readers may rely on is
// decided here once: the change log carries no raw payloads, and nothing
// an API encoding could not carry is ever stored.
package rowcodec

import (
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
)

// Marshal encodes deterministically, so equal messages are equal bytes.
var Marshal = proto.MarshalOptions{Deterministic: true}.Marshal

// marshalEvent encodes an event without its raw payload for the events
// table, which is only ever decoded: nothing needs its bytes to be
// deterministic.
var marshalEvent = proto.MarshalOptions{}.Marshal

// Nanos returns t as unix nanoseconds, clamped to what an int64 holds so a
// far-away date (an all-day event in year 9999) still sorts correctly.
func Nanos(t time.Time) int64 {
	const maxSec, minSec = math.MaxInt64 / int64(time.Second), math.MinInt64 / int64(time.Second)
	switch s := t.Unix(); {
	case s >= maxSec:
		return math.MaxInt64
	case s <= minSec:
		return math.MinInt64
	}
	return t.UnixNano()
}

// TsNanos is Nanos for a protobuf timestamp; an unset one is the epoch, as
// the API reads it.
func TsNanos(ts *timestamppb.Timestamp) int64 {
	if ts == nil {
		return 0
	}
	return Nanos(ts.AsTime())
}

// WithoutRaw returns a shallow copy of e without its raw payload, or e
// itself when it has none. The copy shares every other field with e, so it
// must only be read: it exists to encode e minus its payload without
// cloning all of it. The fields are copied one by one, not by reflection,
// which cost a dozen allocations per event; TestWithoutRawCopiesEveryField
// fails when a field is added to CalendarEvent and not here.
func WithoutRaw(e *calsyncv1.CalendarEvent) *calsyncv1.CalendarEvent {
	if e.GetRaw() == nil {
		return e
	}
	return &calsyncv1.CalendarEvent{
		Id:                        e.Id,
		CalendarId:                e.CalendarId,
		Provider:                  e.Provider,
		ProviderEventId:           e.ProviderEventId,
		ProviderCalendarId:        e.ProviderCalendarId,
		PlatformEventId:           e.PlatformEventId,
		Title:                     e.Title,
		Description:               e.Description,
		Location:                  e.Location,
		StartTime:                 e.StartTime,
		EndTime:                   e.EndTime,
		TimeZone:                  e.TimeZone,
		AllDay:                    e.AllDay,
		StartDate:                 e.StartDate,
		EndDate:                   e.EndDate,
		Status:                    e.Status,
		Organizer:                 e.Organizer,
		Attendees:                 e.Attendees,
		AttendeesHidden:           e.AttendeesHidden,
		Recurrence:                e.Recurrence,
		RecurringMasterId:         e.RecurringMasterId,
		ProviderRecurringMasterId: e.ProviderRecurringMasterId,
		IcalUid:                   e.IcalUid,
		MeetingUrl:                e.MeetingUrl,
		MeetingPlatform:           e.MeetingPlatform,
		Visibility:                e.Visibility,
		Transparency:              e.Transparency,
		ProviderCreateTime:        e.ProviderCreateTime,
		ProviderUpdateTime:        e.ProviderUpdateTime,
		Deleted:                   e.Deleted,
		CreateTime:                e.CreateTime,
		UpdateTime:                e.UpdateTime,
	}
}

// SplitRaw encodes e as the events table keeps it: the event without its
// raw payload (data), and the raw payload's own encoding (raw, nil when e
// has none). The payload, the largest part of an event, is encoded by
// walking its Go values (see rawEncoder), not through reflection.
func SplitRaw(e *calsyncv1.CalendarEvent) (data, raw []byte, err error) {
	data, raw, bad, err := splitRaw(e, WithoutRaw(e))
	if err == nil && bad.badUTF8 {
		err = errRawNotUTF8
	}
	if err != nil {
		return nil, nil, err
	}
	return data, raw, nil
}

// errRawNotUTF8 is what SplitRaw returns for a raw payload that holds a
// string or key that is not valid UTF-8, which protobuf refuses to encode.
var errRawNotUTF8 = errors.New("raw payload contains invalid UTF-8")

// splitRaw is SplitRaw, given noRaw = WithoutRaw(e), reporting what the
// raw payload holds that some encoding cannot carry instead of refusing it.
func splitRaw(e, noRaw *calsyncv1.CalendarEvent) (data, raw []byte, bad rawEncoder, err error) {
	if data, err = marshalEvent(noRaw); err != nil {
		return nil, nil, bad, err
	}
	if e.GetRaw() == nil {
		return data, nil, bad, nil
	}
	if len(e.GetRaw().GetFields()) == 0 {
		// An empty payload is still a payload. Its protobuf encoding is
		// empty, which a driver may hand back as no payload at all; as
		// JSON (see DecodeEvent) it is two bytes.
		return data, []byte("{}"), bad, nil
	}
	raw = bad.appendStruct(make([]byte, 0, rawBufferSize), e.GetRaw())
	return data, raw, bad, nil
}

// Instant is a point in time as the events table keeps it: unix seconds
// and nanoseconds within the second (0 to 999,999,999). Compared as a pair
// it orders every Instant a google.protobuf.Timestamp holds (years 1 to
// 9999), which a count of nanoseconds in 64 bits (1677 to 2262) cannot.
type Instant struct {
	Sec  int64
	Nsec int64
}

// TimeInstant is t as an Instant.
func TimeInstant(t time.Time) Instant {
	return Instant{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// TsInstant is a protobuf timestamp as an Instant; an unset one is the
// epoch, as the API reads it.
func TsInstant(ts *timestamppb.Timestamp) Instant {
	if ts == nil {
		return Instant{}
	}
	return Instant{Sec: ts.GetSeconds(), Nsec: int64(ts.GetNanos())}
}

// EventRow is an event as a backend's events table keeps it: the columns
// queries filter and sort on, the event without its raw payload (Data), and
// the raw payload's own encoding (Raw, nil when it has none).
type EventRow struct {
	ID, CalendarID, Provider string
	Start, End               Instant
	UpdateNs                 int64
	Deleted                  bool
	Data, Raw                []byte
}

// EncodeEvent validates e and splits it into its columns. It needs Id,
// CalendarId and Provider. An event some API
// encoding could not carry is refused with [store.ErrInvalidArgument], so
// no stored event can break the readers that list or watch it.
func EncodeEvent(e *calsyncv1.CalendarEvent) (EventRow, error) {
	// The raw payload, the largest part of the event, is checked while it
	// is encoded: one walk instead of two. Everything else is checked
	// first, as CheckEncodable checks the payload last.
	noRaw := WithoutRaw(e)
	r, err := eventColumns(e, noRaw)
	if err != nil {
		return EventRow{}, err
	}
	var bad rawEncoder
	r.Data, r.Raw, bad, err = splitRaw(e, noRaw)
	if bad.badUTF8 || bad.nonFinite {
		// CheckEncodable names the field; it refuses what the encoder saw.
		if cerr := model.CheckEncodable(e); cerr != nil {
			return EventRow{}, fmt.Errorf("store: event %s: %w: %w", e.GetId(), cerr, store.ErrInvalidArgument)
		}
		if bad.badUTF8 && err == nil {
			err = errRawNotUTF8
		}
	}
	if err != nil {
		return EventRow{}, fmt.Errorf("store: marshal event %s: %w", e.GetId(), err)
	}
	return r, nil
}

// EncodeEventRawJSON is EncodeEvent for an event whose raw payload is
// raw (e.Raw is not read), as [store.Tx.PutEventRawJSON] describes: the
// raw column keeps the JSON object itself, which costs no encoding now
// and decodes in a third of the time a protobuf Struct takes. The payload
// needs no check: a RawJSON holds only what StructFromJSON decodes into a
// payload every API encoding carries. The zero RawJSON is no payload.
func EncodeEventRawJSON(e *calsyncv1.CalendarEvent, raw model.RawJSON) (EventRow, error) {
	noRaw := WithoutRaw(e)
	r, err := eventColumns(e, noRaw)
	if err != nil {
		return EventRow{}, err
	}
	if r.Data, err = marshalEvent(noRaw); err != nil {
		return EventRow{}, fmt.Errorf("store: marshal event %s: %w", e.GetId(), err)
	}
	r.Raw = raw.Bytes()
	return r, nil
}

// eventColumns checks e but for its raw payload (noRaw is WithoutRaw(e))
// and returns its indexed columns.
func eventColumns(e, noRaw *calsyncv1.CalendarEvent) (EventRow, error) {
	if e.GetId() == "" || e.GetCalendarId() == "" || e.GetProvider() == "" {
		return EventRow{}, fmt.Errorf("store: event needs id, calendar_id and provider: %w", store.ErrInvalidArgument)
	}
	if err := model.CheckEncodable(noRaw); err != nil {
		return EventRow{}, fmt.Errorf("store: event %s: %w: %w", e.GetId(), err, store.ErrInvalidArgument)
	}
	r := EventRow{
		ID:         e.GetId(),
		CalendarID: e.GetCalendarId(),
		Provider:   e.GetProvider(),
		Start:      TsInstant(e.GetStartTime()),
		// update_time is calsync's own clock, always within what a count
		// of nanoseconds holds.
		UpdateNs: TsNanos(e.GetUpdateTime()),
		Deleted:  e.GetDeleted(),
	}
	// An event without an end is an Instant at its start.
	r.End = r.Start
	if e.GetEndTime() != nil {
		r.End = TsInstant(e.GetEndTime())
	}
	return r, nil
}

// DecodeEvent rebuilds an event from its data and, if wanted, raw columns.
func DecodeEvent(data, raw []byte) (*calsyncv1.CalendarEvent, error) {
	e := &calsyncv1.CalendarEvent{}
	if err := proto.Unmarshal(data, e); err != nil {
		return nil, fmt.Errorf("store: corrupt event: %w", err)
	}
	if len(raw) == 0 {
		// NULL, or a zero-length blob (which no encoding writes, and which
		// drivers may read as an empty slice rather than nil): no payload.
		return e, nil
	}
	var err error
	if raw[0] == '{' {
		// Kept as the JSON it was decoded from (EncodeEventRawJSON). No
		// protobuf encoding of a Struct starts with '{': read as a tag,
		// it is field 15, which Struct does not have.
		e.Raw, err = model.StructFromJSON(raw)
	} else {
		e.Raw = &structpb.Struct{}
		err = proto.Unmarshal(raw, e.Raw)
	}
	if err != nil {
		return nil, fmt.Errorf("store: corrupt raw payload of event %s: %w", e.GetId(), err)
	}
	return e, nil
}

// DecodeCalendar rebuilds a calendar from its stored encoding.
func DecodeCalendar(data []byte) (*calsyncv1.Calendar, error) {
	c := &calsyncv1.Calendar{}
	if err := proto.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("store: corrupt calendar: %w", err)
	}
	return c, nil
}

// EncodeChange prepares c for the change log: without cursor, with the
// transaction's commit time, and with no raw payload in its events.
// It refuses, wrapping [store.ErrInvalidArgument], a change that some API
// encoding could not carry: every reader from its cursor on would fail.
func EncodeChange(c *calsyncv1.Change, commit time.Time) ([]byte, error) {
	return EncodeChangeWith(c, commit, nil, nil)
}

// EncodeChangeWith is EncodeChange for a change whose event or previous
// event is already encoded: event and previous, when not nil, are the
// encodings of c.Event and c.PreviousEvent as the events table's data
// column holds them (EncodeEvent's Data), already checked, and go into the
// change as they are. The result is EncodeChange's, byte for byte, when
// they are those events' encodings.
func EncodeChangeWith(c *calsyncv1.Change, commit time.Time, event, previous []byte) ([]byte, error) {
	// Every field of c but its cursor, copied one by one as WithoutRaw
	// does (TestEncodeChangeKeepsEveryField guards the list); an event
	// given encoded is left out of the check and of the marshalling.
	m := &calsyncv1.Change{
		Type:             c.Type,
		Calendar:         c.Calendar,
		PreviousCalendar: c.PreviousCalendar,
		ChangedFields:    c.ChangedFields,
		CommitTime:       timestamppb.New(commit),
	}
	if event == nil || c.Event == nil {
		m.Event, event = WithoutRaw(c.Event), nil
	}
	if previous == nil || c.PreviousEvent == nil {
		m.PreviousEvent, previous = WithoutRaw(c.PreviousEvent), nil
	}
	if err := model.CheckEncodable(m); err != nil {
		return nil, fmt.Errorf("%w: %w", err, store.ErrInvalidArgument)
	}
	if event == nil && previous == nil {
		return Marshal(m)
	}
	// Field by field in field number order, as Marshal writes them: type,
	// event, calendar, previous event, then the rest (every later field),
	// into one buffer.
	opts := proto.MarshalOptions{Deterministic: true}
	b := make([]byte, 0, len(event)+len(previous)+changeOverhead)
	if m.Type != 0 {
		b = protowire.AppendTag(b, changeTypeField, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.Type))
	}
	var err error
	if b, err = appendEventField(b, opts, changeEventField, event, m.Event); err != nil {
		return nil, err
	}
	if b, err = appendMessageField(b, opts, changeCalendarField, m.Calendar); err != nil {
		return nil, err
	}
	if b, err = appendEventField(b, opts, changePreviousEventField, previous, m.PreviousEvent); err != nil {
		return nil, err
	}
	m.Type, m.Event, m.Calendar, m.PreviousEvent = 0, nil, nil, nil
	return opts.MarshalAppend(b, m)
}

// changeOverhead is room for a change's fields other than its events:
// type, changed fields, commit time.
const changeOverhead = 128

// appendEventField appends an event as field num of a change: its
// encoding as it is when given, else msg marshalled.
func appendEventField(b []byte, opts proto.MarshalOptions, num protowire.Number, encoded []byte, msg *calsyncv1.CalendarEvent) ([]byte, error) {
	if encoded == nil {
		return appendMessageField(b, opts, num, msg)
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, encoded), nil
}

// appendMessageField appends msg as field num of a message, as Marshal
// would; a nil message appends nothing.
func appendMessageField(b []byte, opts proto.MarshalOptions, num protowire.Number, msg proto.Message) ([]byte, error) {
	if !msg.ProtoReflect().IsValid() {
		return b, nil
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(opts.Size(msg)))
	return opts.MarshalAppend(b, msg)
}

// The field numbers of Change that EncodeChangeWith writes itself.
var (
	changeTypeField          = fieldNumber(&calsyncv1.Change{}, "type")
	changeEventField         = fieldNumber(&calsyncv1.Change{}, "event")
	changeCalendarField      = fieldNumber(&calsyncv1.Change{}, "calendar")
	changePreviousEventField = fieldNumber(&calsyncv1.Change{}, "previous_event")
)

package server

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/watch"
)

// allCalendars is the calendar id that lists the events of every calendar.
const allCalendars = "-"

// calendarService serves the read side of the API.
type calendarService struct {
	calsyncv1.UnimplementedCalendarServiceServer
	store store.Store
	// resync queues a full resync of a calendar and returns its delivery id.
	resync func(ctx context.Context, calendarID string) (int64, error)
	// watch serves WatchEvents; stopping is canceled when the server shuts
	// down, which ends every stream.
	watch    *watch.Hub
	stopping context.Context
	log      *slog.Logger
}

func (s *calendarService) ResyncCalendar(ctx context.Context, req *calsyncv1.ResyncCalendarRequest) (*calsyncv1.ResyncCalendarResponse, error) {
	if err := checkID("calendar_id", "cal_", req.GetCalendarId()); err != nil {
		return nil, err
	}
	id, err := s.resync(ctx, req.GetCalendarId())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &calsyncv1.ResyncCalendarResponse{DeliveryId: strconv.FormatInt(id, 10)}, nil
}

func (s *calendarService) GetCalendar(ctx context.Context, req *calsyncv1.GetCalendarRequest) (*calsyncv1.GetCalendarResponse, error) {
	if err := checkID("calendar_id", "cal_", req.GetCalendarId()); err != nil {
		return nil, err
	}
	c, err := s.store.GetCalendar(ctx, req.GetCalendarId())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &calsyncv1.GetCalendarResponse{Calendar: c}, nil
}

func (s *calendarService) ListCalendars(ctx context.Context, req *calsyncv1.ListCalendarsRequest) (*calsyncv1.ListCalendarsResponse, error) {
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	if p := req.GetProvider(); p != "" && p != model.ProviderRecall && p != model.ProviderPostpress {
		return nil, invalidArgument(`provider must be "recall" or "postpress"`)
	}
	filter := filterHash("calendars", req.GetProvider(), req.GetProviderCalendarId())
	tok, err := decodePageToken(req.GetPageToken(), filter)
	if err != nil {
		return nil, err
	}
	// One more than the page tells whether another page exists.
	cals, err := s.store.ListCalendars(ctx, store.CalendarQuery{
		Provider:           req.GetProvider(),
		ProviderCalendarID: req.GetProviderCalendarId(),
		AfterID:            tok.AfterID,
		Limit:              limit + 1,
	})
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &calsyncv1.ListCalendarsResponse{Calendars: cals}
	if len(cals) > limit {
		resp.Calendars = cals[:limit]
		resp.NextPageToken = encodePageToken(pageToken{Filter: filter, AfterID: cals[limit-1].GetId()})
	}
	return resp, nil
}

func (s *calendarService) GetEvent(ctx context.Context, req *calsyncv1.GetEventRequest) (*calsyncv1.GetEventResponse, error) {
	if err := checkID("calendar_id", "cal_", req.GetCalendarId()); err != nil {
		return nil, err
	}
	if err := checkID("event_id", "evt_", req.GetEventId()); err != nil {
		return nil, err
	}
	ev, err := s.store.GetEvent(ctx, req.GetEventId(), req.GetIncludeRaw())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	// An event is addressed through its calendar; another calendar's event
	// does not exist here.
	if ev.GetCalendarId() != req.GetCalendarId() {
		return nil, toStatus(ctx, s.log, store.ErrNotFound)
	}
	return &calsyncv1.GetEventResponse{Event: ev}, nil
}

func (s *calendarService) ListEvents(ctx context.Context, req *calsyncv1.ListEventsRequest) (*calsyncv1.ListEventsResponse, error) {
	calendarID := req.GetCalendarId()
	if calendarID != allCalendars {
		if err := checkID("calendar_id", "cal_", calendarID); err != nil {
			return nil, err
		}
	}
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	start, err := optionalTime("start_time", req.GetStartTime())
	if err != nil {
		return nil, err
	}
	end, err := optionalTime("end_time", req.GetEndTime())
	if err != nil {
		return nil, err
	}
	updatedSince, err := optionalTime("updated_since", req.GetUpdatedSince())
	if err != nil {
		return nil, err
	}
	if !start.IsZero() && !end.IsZero() && !end.After(start) {
		return nil, invalidArgument("end_time must be after start_time")
	}
	if req.GetEndTime() != nil && end.IsZero() {
		// The earliest instant (0001-01-01T00:00:00Z) is also Go's zero
		// time, which the store reads as "no bound": nothing starts before
		// it, so the answer is empty.
		return &calsyncv1.ListEventsResponse{}, nil
	}
	filter := filterHash("events", calendarID, timeKey(start), timeKey(end), timeKey(updatedSince),
		strconv.FormatBool(req.GetIncludeDeleted()), strconv.FormatBool(req.GetIncludeRaw()))
	tok, err := decodePageToken(req.GetPageToken(), filter)
	if err != nil {
		return nil, err
	}
	q := store.EventQuery{
		Start:          start,
		End:            end,
		UpdatedSince:   updatedSince,
		IncludeDeleted: req.GetIncludeDeleted(),
		IncludeRaw:     req.GetIncludeRaw(),
		Limit:          limit + 1,
	}
	if calendarID != allCalendars {
		q.CalendarID = calendarID
	}
	if tok.AfterID != "" {
		q.After = &store.EventKey{StartTime: tok.afterStart(), ID: tok.AfterID}
	}
	events, err := s.store.ListEvents(ctx, q)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &calsyncv1.ListEventsResponse{Events: events}
	if len(events) > limit {
		last := events[limit-1]
		resp.Events = events[:limit]
		// An event without a start sorts at the epoch, as the store orders it.
		resp.NextPageToken = encodePageToken(pageToken{
			Filter:            filter,
			AfterID:           last.GetId(),
			AfterStartSeconds: last.GetStartTime().GetSeconds(),
			AfterStartNanos:   last.GetStartTime().GetNanos(),
		})
	}
	return resp, nil
}

// checkID rejects ids that cannot be calsync ids before they reach the
// store, so a typo is INVALID_ARGUMENT rather than NOT_FOUND.
func checkID(field, prefix, id string) error {
	if id == "" {
		return invalidArgument(field + " is required")
	}
	if !model.ValidID(prefix, id) {
		return invalidArgument(field + " is not a calsync id (" + prefix + "...)")
	}
	return nil
}

// optionalTime validates an optional timestamp field; unset is the zero time.
func optionalTime(field string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, invalidArgument(field + " is not a valid timestamp")
	}
	return ts.AsTime(), nil
}

// timeKey is a filter time as it enters a page token's filter hash: exact
// for every instant a Timestamp holds, and empty when unset.
func timeKey(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

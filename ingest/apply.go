package ingest

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/store"
)

// applyEvent decides, from what the store already holds, whether next is a
// create, an update, a delete or nothing, writes it and appends the change.
// It reports whether a change was appended.
//
// The rules (design.md): an update of an unknown event is a CREATED; a
// version older than the one held (by provider update time) is dropped; a
// delete leaves a tombstone that only a strictly newer version can replace;
// a version that changes no normalized field emits nothing.
//
// The event held is read without its raw payload, whose decoding would be
// most of the read: only the two rare paths that keep it read it.
//
// raw, when set, is next's raw payload, kept as the JSON object it arrived
// as (next.Raw is then unset, or that payload decoded): every version
// written for next, a tombstone included, carries it, and the store keeps
// the JSON (store.Tx.PutEventRawJSON). It is decoded only where payloads
// are compared.
func applyEvent(ctx context.Context, tx store.Tx, next *calsyncv1.CalendarEvent, raw model.RawJSON, now time.Time) (bool, error) {
	ts := timestamppb.New(now)
	put := func(e *calsyncv1.CalendarEvent) error {
		if !raw.IsZero() {
			return tx.PutEventRawJSON(ctx, e, raw)
		}
		return tx.PutEvent(ctx, e)
	}
	prev, err := tx.GetEvent(ctx, next.GetId(), false)
	switch {
	case errors.Is(err, store.ErrNotFound):
		next.CreateTime, next.UpdateTime = ts, ts
		if err := put(next); err != nil {
			return false, err
		}
		if next.GetDeleted() {
			// A delete of an event never seen: keep the tombstone so a late
			// create cannot resurrect it, but there is nothing to announce.
			return false, nil
		}
		return true, appendChange(ctx, tx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CREATED, Event: next})
	case err != nil:
		return false, err
	}

	if prev.GetDeleted() && !strictlyNewer(prev, next) {
		return false, nil // a tombstone yields only to a strictly newer version
	}
	if !model.EventIsNewer(prev, next) {
		return false, nil // stale: a newer version is already held
	}
	if next.GetStartTime() == nil && next.GetRaw() == nil && raw.IsZero() {
		// A bare delete (ids only) keeps the held event's fields, raw
		// payload included.
		if prev, err = tx.GetEvent(ctx, next.GetId(), true); err != nil {
			return false, err
		}
	}
	if prev.GetDeleted() && next.GetDeleted() {
		// A newer description of a deleted event: keep it, announce nothing.
		tomb := tombstone(prev, next)
		tomb.CreateTime, tomb.UpdateTime = prev.GetCreateTime(), prev.GetUpdateTime()
		return false, put(tomb)
	}
	if next.GetDeleted() && !prev.GetDeleted() {
		tomb := tombstone(prev, next)
		tomb.CreateTime, tomb.UpdateTime = prev.GetCreateTime(), ts
		if err := put(tomb); err != nil {
			return false, err
		}
		return true, appendChange(ctx, tx, &calsyncv1.Change{
			Type: calsyncv1.ChangeType_CHANGE_TYPE_DELETED, Event: tomb, PreviousEvent: prev,
			ChangedFields: model.ChangedFields(prev, tomb),
		})
	}

	next.CreateTime = prev.GetCreateTime()
	changed := model.ChangedFields(prev, next)
	if len(changed) == 0 {
		// Nothing a subscriber can see changed; keep the newer provider
		// bookkeeping (update time, raw) without announcing anything.
		if prev, err = tx.GetEvent(ctx, next.GetId(), true); err != nil {
			return false, err
		}
		if next.GetRaw() == nil && !raw.IsZero() {
			if next.Raw, err = model.StructFromJSON(raw.Bytes()); err != nil {
				return false, err
			}
		}
		if !proto.Equal(prev, next) {
			next.UpdateTime = prev.GetUpdateTime()
			return false, put(next)
		}
		return false, nil
	}
	next.UpdateTime = ts
	if err := put(next); err != nil {
		return false, err
	}
	typ := calsyncv1.ChangeType_CHANGE_TYPE_UPDATED
	if prev.GetDeleted() && !next.GetDeleted() {
		typ = calsyncv1.ChangeType_CHANGE_TYPE_CREATED // brought back by a newer version
	}
	return true, appendChange(ctx, tx, &calsyncv1.Change{Type: typ, Event: next, PreviousEvent: prev, ChangedFields: changed})
}

// tombstone is what calsync keeps of a deleted event. A provider that
// describes the deleted event (Recall keeps every field) is taken at its
// word; one that sends only the ids (postpress) leaves the last known
// fields, so watchers can still tell which meeting went away.
func tombstone(prev, next *calsyncv1.CalendarEvent) *calsyncv1.CalendarEvent {
	if next.GetStartTime() != nil {
		return proto.Clone(next).(*calsyncv1.CalendarEvent)
	}
	tomb := proto.Clone(prev).(*calsyncv1.CalendarEvent)
	tomb.Deleted = true
	if next.GetProviderUpdateTime() != nil {
		tomb.ProviderUpdateTime = next.GetProviderUpdateTime()
	}
	if next.GetRaw() != nil {
		tomb.Raw = next.GetRaw()
	}
	return tomb
}

// strictlyNewer reports whether next's provider version is after prev's.
func strictlyNewer(prev, next *calsyncv1.CalendarEvent) bool {
	pt, nt := prev.GetProviderUpdateTime(), next.GetProviderUpdateTime()
	return pt != nil && nt != nil && nt.AsTime().After(pt.AsTime())
}

// applyCalendar stores a calendar's provider state and appends a
// CALENDAR_UPDATED change when something a subscriber can see changed (or
// the calendar is new). It reports whether a change was appended.
func applyCalendar(ctx context.Context, tx store.Tx, next *calsyncv1.Calendar, now time.Time) (bool, error) {
	ts := timestamppb.New(now)
	prev, err := tx.GetCalendar(ctx, next.GetId())
	switch {
	case errors.Is(err, store.ErrNotFound):
		next.CreateTime, next.UpdateTime = ts, ts
		if err := tx.PutCalendar(ctx, next); err != nil {
			return false, err
		}
		return true, appendChange(ctx, tx, &calsyncv1.Change{Type: calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED, Calendar: next})
	case err != nil:
		return false, err
	}
	next.CreateTime = prev.GetCreateTime()
	changed := model.ChangedFields(prev, next)
	if len(changed) == 0 {
		return false, nil
	}
	next.UpdateTime = ts
	if err := tx.PutCalendar(ctx, next); err != nil {
		return false, err
	}
	return true, appendChange(ctx, tx, &calsyncv1.Change{
		Type: calsyncv1.ChangeType_CHANGE_TYPE_CALENDAR_UPDATED, Calendar: next, PreviousCalendar: prev, ChangedFields: changed,
	})
}

// appendChange appends c to the change log, which leaves the events' raw
// payloads out.
func appendChange(ctx context.Context, tx store.Tx, c *calsyncv1.Change) error {
	_, err := tx.AppendChange(ctx, c)
	return err
}

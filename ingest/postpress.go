package ingest

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/store"
)

// processPostpress applies one postpress delivery. postpress sends the
// whole event, so nothing is fetched.
func (p *Processor) processPostpress(ctx context.Context, d store.Delivery) error {
	w, err := postpress.Parse(d.Body)
	if errors.Is(err, postpress.ErrIgnored) {
		return p.finish(ctx, calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED, err.Error(), d)
	}
	if err != nil {
		return permanent(err)
	}
	ev, err := postpress.Normalize(w, d.Body)
	if err != nil {
		return permanent(err)
	}
	if ev.GetDeleted() && ev.GetProviderUpdateTime() == nil {
		// postpress deletes carry no timestamp; the delete happened before
		// calsync received it, which is what a later update must beat.
		ev.ProviderUpdateTime = timestamppb.New(d.ReceiveTime)
	}
	now := p.cfg.Now()
	if err := admitEvent(ev, now, p.cfg.MaxClockSkew); err != nil {
		return permanent(err)
	}
	cal := postpress.CalendarFor(w)
	known := p.calendars.has(cal.GetId())
	err = p.store.Update(ctx, func(tx store.Tx) error {
		if !known {
			if err := ensureCalendar(ctx, tx, cal, now); err != nil {
				return err
			}
		}
		if _, err := applyEvent(ctx, tx, ev, now); err != nil {
			return err
		}
		return tx.FinishDelivery(ctx, d.ID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "")
	})
	if err == nil {
		// Committed, so the calendar is stored, and calendars are never
		// removed: its next events need not look it up.
		p.calendars.add(cal.GetId())
	}
	return err
}

// knownIDs is a set of ids safe for concurrent use, emptied when it grows
// past maxKnownIDs so that it never holds more than a working set.
type knownIDs struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

const maxKnownIDs = 100_000

func (k *knownIDs) has(id string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.ids[id]
	return ok
}

func (k *knownIDs) add(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ids == nil || len(k.ids) >= maxKnownIDs {
		k.ids = make(map[string]struct{})
	}
	k.ids[id] = struct{}{}
}

// ensureCalendar stores a calendar the first time one of its events
// arrives (announcing it), and leaves a known one alone: postpress webhooks
// say nothing new about calendars.
func ensureCalendar(ctx context.Context, tx store.Tx, c *calsyncv1.Calendar, now time.Time) error {
	_, err := tx.GetCalendar(ctx, c.GetId())
	if errors.Is(err, store.ErrNotFound) {
		_, err = applyCalendar(ctx, tx, c, now)
	}
	return err
}

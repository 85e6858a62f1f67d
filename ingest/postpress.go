package ingest

import (
	"context"
	"errors"
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
	return p.store.Update(ctx, func(tx store.Tx) error {
		if err := ensureCalendar(ctx, tx, postpress.CalendarFor(w), now); err != nil {
			return err
		}
		if _, err := applyEvent(ctx, tx, ev, now); err != nil {
			return err
		}
		return tx.FinishDelivery(ctx, d.ID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "")
	})
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

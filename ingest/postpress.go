package ingest

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/store"
)

// processPostpress applies one postpress delivery the asynchronous way:
// one the inbox held PENDING because an earlier delivery of its calendar
// was waiting, or an operator retried. postpress sends the whole event, so
// nothing is fetched.
func (p *Processor) processPostpress(ctx context.Context, d store.Delivery) error {
	w, err := postpress.Parse(d.Body)
	plan := p.planPostpress(w, err, d.Body, d.ReceiveTime)
	switch plan.state {
	case calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED:
		return p.finish(ctx, plan.state, plan.note, d)
	case calsyncv1.DeliveryState_DELIVERY_STATE_DEAD:
		return permanent(plan.err)
	}
	err = p.src.update(ctx, func(tx store.Tx) error {
		if err := p.applyPostpress(ctx, tx, plan); err != nil {
			return err
		}
		return tx.FinishDelivery(ctx, d.ID, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "")
	})
	if err == nil {
		p.committedPostpress(plan)
	}
	return err
}

// postpressPlan is what a postpress delivery will do, decided before any
// write: apply ev (and announce cal if it is new), or finish the delivery
// IGNORED or DEAD with note. Deciding first is what lets a delivery be
// applied inside a shared transaction: everything that can refuse it has
// refused it already.
type postpressPlan struct {
	state calsyncv1.DeliveryState
	note  string
	err   error // the reason of a DEAD plan
	ev    *calsyncv1.CalendarEvent
	// raw is ev's raw payload, the body (see postpress.NormalizeJSON).
	raw model.RawJSON
	// w is the webhook ev was normalized from, and calID its calendar's
	// id: the calendar is built from w only when it is not known yet.
	w     *postpress.Webhook
	calID string
	// now is the time the plan was made, which stamps what it writes.
	now time.Time
}

// planPostpress decides what the postpress webhook w (parsed from body
// with parseErr) does. received is when calsync received it.
func (p *Processor) planPostpress(w *postpress.Webhook, parseErr error, body []byte, received time.Time) postpressPlan {
	dead := func(err error) postpressPlan {
		return postpressPlan{state: calsyncv1.DeliveryState_DELIVERY_STATE_DEAD, note: err.Error(), err: err}
	}
	if errors.Is(parseErr, postpress.ErrIgnored) {
		return postpressPlan{state: calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED, note: parseErr.Error()}
	}
	if parseErr != nil {
		return dead(parseErr)
	}
	ev, raw, err := postpress.NormalizeJSON(w, body)
	if err != nil {
		return dead(err)
	}
	if ev.GetDeleted() && ev.GetProviderUpdateTime() == nil {
		// postpress deletes carry no timestamp; the delete happened before
		// calsync received it, which is what a later update must beat.
		ev.ProviderUpdateTime = timestamppb.New(received)
	}
	now := p.cfg.Now()
	if err := admitEvent(ev, now, p.cfg.MaxClockSkew); err != nil {
		return dead(err)
	}
	return postpressPlan{state: calsyncv1.DeliveryState_DELIVERY_STATE_DONE, ev: ev, raw: raw, w: w,
		calID: ev.GetCalendarId(), now: now}
}

// applyPostpress writes a DONE plan in tx: the calendar if it is new, then
// the event. It may run more than once for one plan (a shared transaction
// that is run again), each time as if for the first.
func (p *Processor) applyPostpress(ctx context.Context, tx store.Tx, plan postpressPlan) error {
	if !p.calendars.has(plan.calID) {
		// Built afresh each time: storing a calendar stamps its times.
		if err := ensureCalendar(ctx, tx, postpress.CalendarFor(plan.w), plan.now); err != nil {
			return err
		}
	}
	// applyEvent stamps calsync's own times on the event it is given;
	// normalization leaves them unset, so clearing them starts afresh.
	plan.ev.CreateTime, plan.ev.UpdateTime = nil, nil
	_, err := applyEvent(ctx, tx, plan.ev, plan.raw, plan.now)
	return err
}

// committedPostpress notes what a committed plan stored: the calendar, and
// calendars are never removed, so its next events need not look it up.
func (p *Processor) committedPostpress(plan postpressPlan) {
	if plan.calID != "" {
		p.calendars.add(plan.calID)
	}
}

// applyAtIntake returns how to apply a verified postpress webhook inside
// the transaction that commits it to the inbox (see
// [store.ApplyingInbox]), decided now, a function to call once that
// transaction has committed, with its outcome, and the id of the event
// the apply reads first (empty when it applies none). w and parseErr are
// [postpress.Parse]'s results for body.
func (p *Processor) applyAtIntake(w *postpress.Webhook, parseErr error, body []byte, received time.Time) (store.ApplyFunc, func(store.Enqueued), string) {
	began := time.Now()
	plan := p.planPostpress(w, parseErr, body, received)
	apply := func(ctx context.Context, tx store.Tx) (calsyncv1.DeliveryState, string, error) {
		if plan.state == calsyncv1.DeliveryState_DELIVERY_STATE_DONE {
			if err := p.applyPostpress(ctx, tx, plan); err != nil {
				return 0, "", err
			}
		}
		return plan.state, plan.note, nil
	}
	// committed reports the outcome as the workers report theirs, so
	// the processing metrics count deliveries applied at intake too.
	committed := func(res store.Enqueued) {
		switch res.State {
		case calsyncv1.DeliveryState_DELIVERY_STATE_DONE, calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED:
			if res.State == calsyncv1.DeliveryState_DELIVERY_STATE_DONE {
				p.committedPostpress(plan)
			}
			p.cfg.OnProcessed(model.ProviderPostpress, "done", 1, time.Since(began))
		case calsyncv1.DeliveryState_DELIVERY_STATE_DEAD:
			p.log.Warn("delivery dead-lettered", "delivery_id", res.ID, "provider", model.ProviderPostpress,
				"reason", store.TruncateNote(plan.note))
			p.cfg.OnProcessed(model.ProviderPostpress, "dead", 1, time.Since(began))
		}
	}
	return apply, committed, plan.ev.GetId()
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

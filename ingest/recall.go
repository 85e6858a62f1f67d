package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/store"
)

// RecallAPI is what the processor reads from Recall's REST API;
// *recall.Client implements it.
type RecallAPI interface {
	GetCalendar(ctx context.Context, id string) (*recall.Calendar, error)
	ListEvents(ctx context.Context, calendarID string, updatedAtGTE time.Time, fn func([]recall.Event) error, opts ...recall.ListOption) error
}

// Recall webhook event names calsync acts on, and the inbox entry calsync
// writes itself to ask for a full resync of one calendar.
const (
	recallCalendarUpdate = "calendar.update"
	recallSyncEvents     = "calendar.sync_events"
	resyncEvent          = "calsync.resync"
)

// watermarkOverlap re-reads a little before the stored watermark: an event
// Recall committed just before the last sync finished may carry an
// updated_at slightly older than the newest one that sync saw. Re-reading
// is free, since an unchanged event emits nothing.
const watermarkOverlap = 2 * time.Minute

// errNoRecallAPI is retried: the deliveries wait until an API key is set.
var errNoRecallAPI = errors.New("recall API key is not configured (set --recall-api-key)")

// coalesces reports whether d can ride along with head in one batch: both
// ask to re-read the same Recall calendar's events, so one fetch that starts
// after both arrived answers both.
func coalesces(head, d store.Delivery) bool {
	return head.Provider == model.ProviderRecall && d.Provider == model.ProviderRecall &&
		isSyncHint(head) && isSyncHint(d)
}

func isSyncHint(d store.Delivery) bool {
	return d.EventType == recallSyncEvents || d.EventType == resyncEvent
}

// resyncBody is the body of a resync request in the inbox.
type resyncBody struct {
	Event string `json:"event"`
	Data  struct {
		CalendarID string `json:"calendar_id"`
	} `json:"data"`
}

// processRecall handles Recall deliveries. Recall's webhooks are hints:
// the state comes from its REST API.
func (p *Processor) processRecall(ctx context.Context, batch []store.Delivery, grow growFunc) error {
	head := batch[0]
	var recallCalendarID, event string
	if head.EventType == resyncEvent {
		var b resyncBody
		if err := json.Unmarshal(head.Body, &b); err != nil || b.Data.CalendarID == "" {
			return permanent(fmt.Errorf("malformed resync request: %v", err))
		}
		recallCalendarID, event = b.Data.CalendarID, resyncEvent
	} else {
		w, err := recall.Parse(head.Body)
		if errors.Is(err, recall.ErrIgnored) {
			return p.finish(ctx, calsyncv1.DeliveryState_DELIVERY_STATE_IGNORED, err.Error(), head)
		}
		if err != nil {
			return permanent(err)
		}
		recallCalendarID, event = w.CalendarID, w.Event
	}
	if p.cfg.Recall == nil {
		return errNoRecallAPI
	}
	switch event {
	case recallCalendarUpdate:
		return p.refreshCalendar(ctx, recallCalendarID, batch)
	default:
		full := false
		for _, d := range batch {
			full = full || d.EventType == resyncEvent
		}
		return p.syncEvents(ctx, recallCalendarID, full, batch, grow)
	}
}

// fetchCalendar reads a calendar from Recall, mapping "gone" to a permanent
// failure.
func (p *Processor) fetchCalendar(ctx context.Context, id string) (*calsyncv1.Calendar, error) {
	c, err := p.cfg.Recall.GetCalendar(ctx, id)
	if err != nil {
		if recall.IsPermanent(err) {
			return nil, permanent(fmt.Errorf("fetch recall calendar %s: %w", id, err))
		}
		return nil, fmt.Errorf("fetch recall calendar %s: %w", id, err)
	}
	return recall.NormalizeCalendar(c), nil
}

// refreshCalendar answers calendar.update: re-read the calendar and
// announce what changed.
func (p *Processor) refreshCalendar(ctx context.Context, recallCalendarID string, batch []store.Delivery) error {
	cal, err := p.fetchCalendar(ctx, recallCalendarID)
	if err != nil {
		return err
	}
	now := p.cfg.Now()
	return p.src.update(ctx, func(tx store.Tx) error {
		if _, err := applyCalendar(ctx, tx, cal, now); err != nil {
			return err
		}
		return finishAll(ctx, tx, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", batch)
	})
}

// syncEvents answers calendar.sync_events (and resync requests): list the
// calendar's events changed since the stored watermark — all of them when
// full — and apply them.
//
// The listing is applied a page at a time, each page in its own
// transaction, so that neither memory nor a transaction grows with the
// calendar: a full resync of a large calendar holds at most two pages and
// never keeps the writer longer than one page takes. The last page is
// applied together with the new sync state (watermark, last full sync) and
// the deliveries' completion, so the sync state only ever advances once
// every page is in. A sync that fails or crashes midway leaves its
// deliveries pending and the watermark where it was: the retry lists the
// same events again, and the pages already applied change nothing (an
// unchanged event emits nothing; an older version never overwrites a newer
// one). Recall never removes events (a deleted event is listed with
// is_deleted), so what the listing returns is the whole calendar and no
// sweep for vanished events is needed.
func (p *Processor) syncEvents(ctx context.Context, recallCalendarID string, full bool, batch []store.Delivery, grow growFunc) error {
	calID := model.CalendarID(model.ProviderRecall, "", recallCalendarID)
	var newCalendar *calsyncv1.Calendar
	if _, err := p.store.GetCalendar(ctx, calID); errors.Is(err, store.ErrNotFound) {
		// First word of this calendar: learn what it is, too.
		if newCalendar, err = p.fetchCalendar(ctx, recallCalendarID); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	state, err := p.store.GetSyncState(ctx, calID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	state.CalendarID = calID
	var since time.Time
	if !full && !state.Watermark.IsZero() {
		since = state.Watermark.Add(-watermarkOverlap)
	}

	// held is the page fetched last: it is applied when the next one
	// arrives, or with the sync state once the listing ends.
	var held []normalizedEvent
	var applyErr error // a failure to apply a page, as opposed to list it
	watermark := state.Watermark
	// The hints for this calendar that arrived before the listing's first
	// request is sent are answered by it too: it sees every change they
	// report. An incremental listing takes on only incremental hints; a
	// full one, resync requests too.
	joinHints := recall.BeforeFirstRequest(func() {
		batch = grow(func(head, d store.Delivery) bool {
			return coalesces(head, d) && (full || d.EventType == recallSyncEvents)
		})
	})
	err = p.cfg.Recall.ListEvents(ctx, recallCalendarID, since, func(page []recall.Event) error {
		if held != nil {
			if applyErr = p.applyEvents(ctx, newCalendar, held, nil); applyErr != nil {
				return applyErr
			}
			newCalendar = nil // stored with the first page
		}
		held = make([]normalizedEvent, 0, len(page))
		for i := range page {
			ev, raw, err := recall.NormalizeEventJSON(&page[i])
			if err != nil {
				// One event Recall cannot describe must not block the rest.
				p.log.Warn("skipping recall event that cannot be normalized",
					"recall_event_id", store.TruncateNote(page[i].ID), "calendar_id", calID, "err", store.TruncateNote(err.Error()))
				continue
			}
			// Nor must one event calsync cannot keep, which would come back
			// at every sync: it is skipped, and taken as soon as Recall
			// describes it sanely. Its updated_at never moves the watermark.
			if err := admitEvent(ev, p.cfg.Now(), p.cfg.MaxClockSkew); err != nil {
				p.log.Warn("skipping recall event calsync cannot keep",
					"recall_event_id", store.TruncateNote(page[i].ID), "calendar_id", calID, "err", store.TruncateNote(err.Error()))
				continue
			}
			held = append(held, normalizedEvent{ev: ev, raw: raw})
			if t := ev.GetProviderUpdateTime(); t != nil && t.AsTime().After(watermark) {
				watermark = t.AsTime()
			}
		}
		return nil
	}, joinHints)
	if applyErr != nil {
		return applyErr
	}
	if err != nil {
		if recall.IsPermanent(err) {
			return permanent(fmt.Errorf("list recall events of %s: %w", recallCalendarID, err))
		}
		return fmt.Errorf("list recall events of %s: %w", recallCalendarID, err)
	}

	state.Watermark = watermark
	if full {
		state.LastFullSync = p.cfg.Now()
	}
	return p.applyEvents(ctx, newCalendar, held, func(tx store.Tx) error {
		if err := tx.PutSyncState(ctx, state); err != nil {
			return err
		}
		return finishAll(ctx, tx, calsyncv1.DeliveryState_DELIVERY_STATE_DONE, "", batch)
	})
}

// normalizedEvent is an event to apply and its raw payload (see
// recall.NormalizeEventJSON).
type normalizedEvent struct {
	ev  *calsyncv1.CalendarEvent
	raw model.RawJSON
}

// applyEvents applies, in one transaction, a calendar first seen (if not
// nil), then events in order, then whatever then adds (if not nil).
func (p *Processor) applyEvents(ctx context.Context, cal *calsyncv1.Calendar, events []normalizedEvent, then func(store.Tx) error) error {
	now := p.cfg.Now()
	return p.src.update(ctx, func(tx store.Tx) error {
		if cal != nil {
			if _, err := applyCalendar(ctx, tx, cal, now); err != nil {
				return err
			}
		}
		for _, n := range events {
			if _, err := applyEvent(ctx, tx, n.ev, n.raw, now); err != nil {
				return err
			}
		}
		if then != nil {
			return then(tx)
		}
		return nil
	})
}

// ErrNotResyncable means the calendar's provider offers no way to re-read
// it.
var ErrNotResyncable = errors.New("only recall calendars can be resynced")

// RequestResync queues a full resync of a calendar and returns the inbox
// entry that carries it out. The resync runs in order with the calendar's
// webhooks. ErrNotFound (from the store) if the calendar is unknown.
func (p *Processor) RequestResync(ctx context.Context, calendarID string) (int64, error) {
	c, err := p.store.GetCalendar(ctx, calendarID)
	if err != nil {
		return 0, err
	}
	if c.GetProvider() != model.ProviderRecall {
		return 0, ErrNotResyncable
	}
	now := p.cfg.Now().UTC()
	return p.enqueueResync(ctx, c, "request:"+strconv.FormatInt(now.UnixNano(), 10), now)
}

func (p *Processor) enqueueResync(ctx context.Context, c *calsyncv1.Calendar, tag string, now time.Time) (int64, error) {
	var b resyncBody
	b.Event, b.Data.CalendarID = resyncEvent, c.GetProviderCalendarId()
	body, _ := json.Marshal(b) // a struct of strings always marshals
	id, _, err := p.store.Enqueue(ctx, store.NewDelivery{
		Provider:    model.ProviderRecall,
		DedupKey:    "resync:" + c.GetId() + ":" + tag,
		EventType:   resyncEvent,
		OrderingKey: c.GetId(),
		Body:        body,
		ReceiveTime: now,
	})
	if err != nil {
		return 0, err
	}
	p.Notify()
	return id, nil
}

// reconcile fully resyncs every connected Recall calendar once per
// ResyncInterval, catching changes whose webhooks never arrived. The dedup
// key names the interval, so restarts do not queue the same round twice.
func (p *Processor) reconcile(ctx context.Context) {
	t := time.NewTicker(p.cfg.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := p.cfg.Now().UTC()
		round := strconv.FormatInt(now.Truncate(p.cfg.ResyncInterval).Unix(), 10)
		n, err := p.reconcileRound(ctx, "reconcile:"+round, now)
		if err != nil && ctx.Err() == nil {
			p.log.Error("reconcile recall calendars", "err", err)
		}
		p.log.Info("queued recall reconciliation", "calendars", n)
	}
}

func (p *Processor) reconcileRound(ctx context.Context, tag string, now time.Time) (int, error) {
	n, after := 0, ""
	for {
		cals, err := p.store.ListCalendars(ctx, store.CalendarQuery{Provider: model.ProviderRecall, AfterID: after, Limit: 500})
		if err != nil {
			return n, err
		}
		for _, c := range cals {
			if c.GetStatus() != calsyncv1.CalendarStatus_CALENDAR_STATUS_CONNECTED {
				continue
			}
			if _, err := p.enqueueResync(ctx, c, tag, now); err != nil {
				return n, err
			}
			n++
		}
		if len(cals) < 500 {
			return n, nil
		}
		after = cals[len(cals)-1].GetId()
	}
}

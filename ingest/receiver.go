// Package ingest turns provider webhooks into normalized changes.
//
// The Receiver verifies a delivery and commits it to the inbox on the
// request path. A webhook that carries its whole event (postpress) is
// parsed, normalized and checked once, before any write, and then applied
// in the very group commit that makes it durable: its inbox record (kept
// for dedupe, audit and dead letters) is stored already DONE, IGNORED or
// DEAD, next to the event and its change, and the 200 waits for that one
// commit only. Deciding before writing is what keeps one delivery from
// failing the others of its batch.
//
// The Processor works through what the inbox still holds PENDING: Recall
// hints, which need a fetch from the provider; deliveries of a calendar
// that already had one waiting (a retry pending, say), which keep their
// order by waiting behind it; and dead letters an operator put back. It
// applies each delivery's changes in one transaction with its completion.
// An inbox several processes share ([store.ClaimingInbox]) is worked
// through by claiming calendars: each calendar's deliveries are processed
// by one process at a time, and every write checks the claim, so a process
// that stalled past its claim cannot commit work another took over.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/model"
	"github.com/calsync/calsync/provider/postpress"
	"github.com/calsync/calsync/provider/recall"
	"github.com/calsync/calsync/store"
)

// Errors of Receive. Each is a different answer to the provider.
var (
	// ErrUnknownProvider means no provider of that name exists.
	ErrUnknownProvider = errors.New("unknown provider")
	// ErrNotConfigured means the provider exists but calsync has no
	// credentials for it, so it cannot verify the delivery; the provider
	// should retry later.
	ErrNotConfigured = errors.New("provider is not configured")
	// ErrUnauthorized means the delivery's credentials are missing or wrong.
	ErrUnauthorized = errors.New("webhook authentication failed")
)

// Receiver verifies webhook deliveries and commits them to the inbox. It
// never calls a provider: answering fast is what keeps providers from
// retrying.
type Receiver struct {
	inbox     store.Inbox
	recall    *recall.Verifier
	postpress *postpress.Authenticator
	now       func() time.Time
	// notify is poked after each new delivery so workers pick it up at once.
	notify func()
	intake *Intake
	// proc and applying, when both set, apply postpress deliveries in the
	// transaction that commits them.
	proc     *Processor
	applying store.ApplyingInbox
}

// ReceiverConfig configures a Receiver. A nil verifier means that provider
// is not configured.
type ReceiverConfig struct {
	Recall    *recall.Verifier
	Postpress *postpress.Authenticator
	// Notify, if set, is called after a new (non-duplicate) delivery commits.
	Notify func()
	// Intake, if set, counts the webhooks being received, for the
	// Processor sharing it.
	Intake *Intake
	// Processor, if set and the inbox can apply deliveries as it commits
	// them ([store.ApplyingInbox]), applies each postpress delivery in the
	// transaction that commits it, by the Processor's rules; only
	// deliveries that must wait behind an earlier one of their calendar
	// are left PENDING for it. Nil leaves every delivery to processing.
	Processor *Processor
	Now       func() time.Time
}

// NewReceiver returns a Receiver committing to inbox.
func NewReceiver(inbox store.Inbox, cfg ReceiverConfig) *Receiver {
	r := &Receiver{inbox: inbox, recall: cfg.Recall, postpress: cfg.Postpress, now: cfg.Now, notify: cfg.Notify, intake: cfg.Intake}
	if a, ok := inbox.(store.ApplyingInbox); ok && cfg.Processor != nil {
		r.proc, r.applying = cfg.Processor, a
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.notify == nil {
		r.notify = func() {}
	}
	return r
}

// Receipt is the outcome of a committed delivery.
type Receipt struct {
	DeliveryID int64
	Duplicate  bool
}

// Receive authenticates one delivery and returns once it is durably in the
// inbox. Nothing is stored unless authentication succeeds. A body that
// authenticates but cannot be parsed is stored all the same (the processor
// dead-letters it with the reason), so nothing verified is ever lost.
func (r *Receiver) Receive(ctx context.Context, provider string, body []byte, h http.Header) (Receipt, error) {
	r.intake.begin()
	defer r.intake.end()
	d := store.NewDelivery{Provider: provider, Body: body, ReceiveTime: r.now().UTC()}
	switch provider {
	case model.ProviderRecall:
		if r.recall == nil {
			return Receipt{}, fmt.Errorf("%w: %s (set --recall-webhook-secrets)", ErrNotConfigured, provider)
		}
		msgID, err := r.recall.Verify(body, h)
		if err != nil {
			return Receipt{}, fmt.Errorf("%w: %v", ErrUnauthorized, err)
		}
		// Svix keeps the message id across retries: it is the identity.
		d.DedupKey, d.MessageID = msgID, msgID
		if w, err := recall.Parse(body); err == nil {
			d.EventType, d.OrderingKey = w.Event, w.CalsyncCalendarID()
		} else {
			d.EventType = eventName(body)
		}
	case model.ProviderPostpress:
		if r.postpress == nil {
			return Receipt{}, fmt.Errorf("%w: %s (set --postpress-auth-secrets)", ErrNotConfigured, provider)
		}
		if err := r.postpress.Verify(h); err != nil {
			return Receipt{}, fmt.Errorf("%w: %v", ErrUnauthorized, err)
		}
		// postpress sends no message id; retries carry the same body.
		d.DedupKey = postpress.DedupKey(body)
		w, err := postpress.Parse(body)
		if err == nil {
			d.EventType, d.OrderingKey = w.Event, w.CalendarID()
		} else {
			d.EventType = eventName(body)
		}
		if r.applying != nil {
			return r.receiveApplying(ctx, d, w, err)
		}
	default:
		return Receipt{}, fmt.Errorf("%w: %q", ErrUnknownProvider, provider)
	}
	id, dup, err := r.inbox.Enqueue(ctx, d)
	if err != nil {
		return Receipt{}, fmt.Errorf("commit delivery: %w", err)
	}
	if !dup {
		r.notify()
	}
	return Receipt{DeliveryID: id, Duplicate: dup}, nil
}

// receiveApplying commits a postpress delivery and applies it in the same
// transaction, from the webhook already parsed (w, parseErr): the body is
// decoded once, and the delivery costs one commit.
func (r *Receiver) receiveApplying(ctx context.Context, d store.NewDelivery, w *postpress.Webhook, parseErr error) (Receipt, error) {
	apply, committed, eventID := r.proc.applyAtIntake(w, parseErr, d.Body, d.ReceiveTime)
	d.ApplyEventID = eventID
	res, err := r.applying.EnqueueApply(ctx, d, apply)
	if err != nil {
		return Receipt{}, fmt.Errorf("commit delivery: %w", err)
	}
	if !res.Duplicate {
		committed(res)
		if res.State == calsyncv1.DeliveryState_DELIVERY_STATE_PENDING {
			r.notify()
		}
	}
	return Receipt{DeliveryID: res.ID, Duplicate: res.Duplicate}, nil
}

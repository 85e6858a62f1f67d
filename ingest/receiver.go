// Package ingest turns provider webhooks into normalized changes: the
// Receiver verifies a delivery and commits it to the inbox on the request
// path; the Processor works through the inbox afterwards, fetching from
// providers where a webhook is only a hint, and applies each delivery's
// changes in one transaction with its completion.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

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
	Now    func() time.Time
}

// NewReceiver returns a Receiver committing to inbox.
func NewReceiver(inbox store.Inbox, cfg ReceiverConfig) *Receiver {
	r := &Receiver{inbox: inbox, recall: cfg.Recall, postpress: cfg.Postpress, now: cfg.Now, notify: cfg.Notify, intake: cfg.Intake}
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
		if w, err := postpress.Parse(body); err == nil {
			d.EventType, d.OrderingKey = w.Event, w.CalendarID()
		} else {
			d.EventType = eventName(body)
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

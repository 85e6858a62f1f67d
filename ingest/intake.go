package ingest

import (
	"context"
	"sync/atomic"
	"time"
)

// Intake counts the webhooks being received at this moment, so that
// processing can give way to them. When webhooks arrive faster than two
// cores can both answer and process them, answering wins: a provider whose
// webhook is not answered in time retries only a few times before dropping
// it (postpress five times, Svix over a day), while a delivery committed
// to the inbox waits safely on disk for processing to catch up (its age is
// calsync_inbox_oldest_pending_age_seconds). Share one Intake between the
// Receiver and the Processor; nil means processing never gives way.
type Intake struct {
	receiving atomic.Int64
}

// intakeBusyAbove is how many webhooks may be in flight at once before
// intake counts as busy. A steady 2,000 webhooks/s answered in under 10 ms
// keeps fewer than 20 in flight; a burst from many connections keeps its
// whole width waiting on commits.
const intakeBusyAbove = 32

// yieldPoll is how often a worker that gave way looks again. It bounds how
// late processing resumes after a burst, not how late a change reaches a
// watcher while intake is quiet.
const yieldPoll = 10 * time.Millisecond

// begin records one more webhook being received, until its end.
func (in *Intake) begin() {
	if in != nil {
		in.receiving.Add(1)
	}
}

// end records that a webhook's answer is decided.
func (in *Intake) end() {
	if in != nil {
		in.receiving.Add(-1)
	}
}

// busy reports whether more webhooks are waiting than intake handles
// without queueing.
func (in *Intake) busy() bool {
	return in != nil && in.receiving.Load() > intakeBusyAbove
}

// waitQuiet returns once intake is not busy, or false when ctx ends first.
func (in *Intake) waitQuiet(ctx context.Context) bool {
	if !in.busy() {
		return true
	}
	t := time.NewTicker(yieldPoll)
	defer t.Stop()
	for in.busy() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

package handoff

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// TestTakeOrAbandonNeverBoth races a committer's Take against a caller's
// Abandon: exactly one of them wins, every time.
func TestTakeOrAbandonNeverBoth(t *testing.T) {
	for range 1000 {
		var s State
		var took, left bool
		var wg sync.WaitGroup
		wg.Go(func() { took = s.Take() })
		wg.Go(func() { left = s.Abandon() })
		wg.Wait()
		if took == left {
			t.Fatalf("Take %v, Abandon %v: want exactly one", took, left)
		}
		if s.Take() || s.Abandon() {
			t.Fatal("a settled request changed hands again")
		}
	}
}

type request struct {
	st   State
	done chan int
}

func newRequest() *request { return &request{done: make(chan int, 1)} }

type outcome struct {
	got int
	err error
}

// submitting submits a new request on queue from another goroutine, under
// a context the returned cancel ends, and delivers Submit's answer.
func submitting(queue chan *request) (context.CancelFunc, <-chan outcome) {
	ctx, cancel := context.WithCancel(context.Background())
	answer := make(chan outcome, 1)
	req := newRequest()
	go func() {
		got, err := Submit(ctx, queue, req, &req.st, req.done)
		answer <- outcome{got, err}
	}()
	return cancel, answer
}

// TestSubmitReturnsTheOutcome: a committer that takes the request answers it.
func TestSubmitReturnsTheOutcome(t *testing.T) {
	queue := make(chan *request)
	go func() {
		r := <-queue
		if r.st.Take() {
			r.done <- 42
		}
	}()
	req := newRequest()
	got, err := Submit(context.Background(), queue, req, &req.st, req.done)
	if err != nil || got != 42 {
		t.Fatalf("Submit = %d, %v; want 42, nil", got, err)
	}
}

// TestSubmitGivesUpWhileQueued: a request still in the queue when its ctx
// ends is abandoned there, and a committer that reaches it later cannot
// take it.
func TestSubmitGivesUpWhileQueued(t *testing.T) {
	queue := make(chan *request, 1)
	cancel, answer := submitting(queue)
	queued := <-queue // the request got in; nobody takes it yet
	cancel()
	if a := <-answer; !errors.Is(a.err, context.Canceled) {
		t.Fatalf("Submit = %v; want context.Canceled", a.err)
	}
	if queued.st.Take() {
		t.Fatal("the committer took a request its caller abandoned")
	}
}

// TestSubmitWaitsForATakenRequest: once a transaction took the request,
// the end of the caller's ctx does not cut its answer short.
func TestSubmitWaitsForATakenRequest(t *testing.T) {
	queue := make(chan *request, 1)
	cancel, answer := submitting(queue)
	taken := <-queue
	if !taken.st.Take() {
		t.Fatal("a queued request could not be taken")
	}
	cancel()
	taken.done <- 7
	if a := <-answer; a.err != nil || a.got != 7 {
		t.Fatalf("Submit answered %d, %v; want the transaction's outcome, 7", a.got, a.err)
	}
}

// TestSubmitGivesUpBeforeTheQueue: with the queue full, a caller whose ctx
// has ended gets its error at once.
func TestSubmitGivesUpBeforeTheQueue(t *testing.T) {
	queue := make(chan *request) // nobody receives
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := newRequest()
	if _, err := Submit(ctx, queue, req, &req.st, req.done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit = %v; want context.Canceled", err)
	}
}

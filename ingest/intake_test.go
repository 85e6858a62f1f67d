package ingest

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/calsync/calsync/model"
)

// busyIntake returns an Intake with more webhooks waiting than it takes
// to be busy, and the func that ends one of them.
func busyIntake() (*Intake, func()) {
	in := &Intake{}
	for range intakeBusyAbove + 1 {
		in.begin()
	}
	return in, in.end
}

func TestIntakeWaitQuiet(t *testing.T) {
	in, endOne := busyIntake()
	returned := make(chan bool, 1)
	go func() { returned <- in.waitQuiet(context.Background()) }()
	select {
	case <-returned:
		t.Fatal("waitQuiet returned while intake was busy")
	case <-time.After(5 * yieldPoll):
	}
	endOne()
	select {
	case ok := <-returned:
		if !ok {
			t.Fatal("waitQuiet = false once intake was quiet")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitQuiet did not return once intake was quiet")
	}

	busy, _ := busyIntake()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if busy.waitQuiet(ctx) {
		t.Error("waitQuiet = true for an ended context while intake was busy")
	}
	var none *Intake
	if !none.waitQuiet(context.Background()) {
		t.Error("a nil Intake made processing wait")
	}
}

// Under intake that stays busy, the workers that never give way still
// process every delivery; and a Receive is counted only while it runs.
func TestProcessingGoesOnWhileIntakeIsBusy(t *testing.T) {
	in, _ := busyIntake()
	p := newPipeline(t, nil, func(c *ProcessorConfig) { c.Workers = 8; c.Intake = in })
	recv := NewReceiver(p.st, ReceiverConfig{Postpress: p.recv.postpress, Notify: p.proc.Notify, Intake: in})
	h := http.Header{"Postpress-Auth": {testPostpressSecret}}
	before := in.receiving.Load()
	for i := range 40 {
		body := ppVersion(fmt.Sprintf("evt%d", i), 0, false)
		if _, err := recv.Receive(context.Background(), model.ProviderPostpress, body, h); err != nil {
			t.Fatal(err)
		}
	}
	if got := in.receiving.Load(); got != before {
		t.Fatalf("webhooks being received = %d after every Receive returned, want %d", got, before)
	}
	p.start(t)
	p.drain(t)
}

package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// TestChildKillThenStop checks that a child killed as a crash would be (the
// failover scenario's kill -9) can still be stopped by the scenario's
// clean-up without hanging, and Kill again too.
func TestChildKillThenStop(t *testing.T) {
	health := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer health.Close()
	c, err := startChild(context.Background(), "sleeper", []string{"sleep", "60"}, nil, t.TempDir(), health.URL)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		c.Kill()
		c.Stop(time.Second)
		c.Kill()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Stop or Kill after Kill hung")
	}
	if err := c.cmd.Process.Signal(syscall.Signal(0)); err == nil {
		t.Error("the child is still running")
	}
}

// The machine's I/O stall is the total of the "full" line, in
// microseconds; a file without one is an error, not a zero.
func TestParseFullStall(t *testing.T) {
	got, err := parseFullStall([]byte("some avg10=33.19 avg60=14.52 avg300=9.56 total=569813507\nfull avg10=30.65 avg60=12.63 avg300=8.14 total=460987043\n"))
	if err != nil || got != 460987043*time.Microsecond {
		t.Errorf("parseFullStall = %v, %v; want 460.987043s", got, err)
	}
	if _, err := parseFullStall([]byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n")); err == nil {
		t.Error("a file without a full line parsed")
	}
	if _, err := ioStallTotal(); err != nil {
		t.Logf("this machine has no pressure stall information: %v", err)
	}
}

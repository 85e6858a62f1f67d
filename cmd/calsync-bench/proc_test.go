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

// Command bot-scheduler shows what calsync is for: it keeps, through an
// informer, the list of upcoming meetings that have a meeting link, and
// prints when one is scheduled, moved, cancelled or deleted, as a meeting
// bot that must join every meeting would act on it. It rides through calsync
// restarts by itself: the informer reconnects, resumes, and resynchronizes
// if it was away longer than calsync keeps changes.
//
//	go run ./examples/bot-scheduler [--server 127.0.0.1:9090]
//
// The token, if calsync requires one, comes from CALSYNC_TOKEN.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/status"

	"github.com/calsync/calsync/client"
	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

func main() {
	server := flag.String("server", envOr("CALSYNC_SERVER", "127.0.0.1:9090"), "calsync gRPC address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var opts []client.Option
	if token := os.Getenv("CALSYNC_TOKEN"); token != "" {
		opts = append(opts, client.WithToken(token))
	}
	if err := run(ctx, *server, os.Stdout, log.Default(), opts...); err != nil {
		log.Fatal(err)
	}
}

// run prints the upcoming meetings' news to out until ctx ends.
func run(ctx context.Context, server string, out io.Writer, logs *log.Logger, opts ...client.Option) error {
	c, err := client.New(ctx, server, opts...)
	if err != nil {
		return err
	}
	defer c.Close()

	meetings := client.NewInformer(c, client.InformerOptions{
		Start: time.Now(), // upcoming and ongoing meetings only
		Match: func(ev *calsyncv1.CalendarEvent) bool { return ev.GetMeetingUrl() != "" },
		OnRetry: func(err error, wait time.Duration) {
			logs.Printf("calsync unreachable (%v); retrying in %v", status.Convert(err).Message(), wait.Round(time.Millisecond))
		},
	})
	say := func(what string, ev *calsyncv1.CalendarEvent, extra ...string) {
		fmt.Fprintln(out, strings.Join(append([]string{fmt.Sprintf("%-10s %s %q %s", what, when(ev), ev.GetTitle(), ev.GetMeetingUrl())}, extra...), " "))
	}
	meetings.AddEventHandler(client.EventHandler{
		OnAdd: func(ev *calsyncv1.CalendarEvent) { say("scheduled", ev) },
		OnUpdate: func(old, ev *calsyncv1.CalendarEvent) {
			cancelled := ev.GetStatus() == calsyncv1.EventStatus_EVENT_STATUS_CANCELLED
			switch {
			case cancelled && old.GetStatus() != ev.GetStatus():
				say("cancelled", ev)
			case !cancelled && old.GetStatus() == calsyncv1.EventStatus_EVENT_STATUS_CANCELLED:
				say("scheduled", ev)
			case !old.GetStartTime().AsTime().Equal(ev.GetStartTime().AsTime()):
				say("moved", ev, "(was "+when(old)+")")
			case old.GetMeetingUrl() != ev.GetMeetingUrl():
				say("new link", ev)
			}
		},
		OnDelete: func(ev *calsyncv1.CalendarEvent) { say("deleted", ev) },
	})

	go func() {
		if meetings.WaitForSync(ctx) == nil {
			logs.Printf("in sync with calsync: %d upcoming meetings with a link", len(meetings.List(time.Now(), time.Time{})))
		}
	}()
	return meetings.Run(ctx)
}

// when is a meeting's start, in UTC so every machine prints the same.
func when(ev *calsyncv1.CalendarEvent) string {
	return ev.GetStartTime().AsTime().UTC().Format("Mon Jan 2 15:04 UTC")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

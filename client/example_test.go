package client_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/calsync/calsync/client"
	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// Connect to calsync and list events; the list call follows page tokens by
// itself.
func ExampleNew() {
	calsync := startExampleServer() // calsync on a free port
	defer calsync.Stop()
	calsync.post(meeting("standup", "Daily standup", 9, 1), meeting("review", "Design review", 14, 1))

	ctx := context.Background()
	// In production: client.New(ctx, "calsync.internal:9090",
	//	client.WithToken(os.Getenv("CALSYNC_TOKEN")), client.WithCAFile("ca.pem"))
	c, err := client.New(ctx, calsync.grpcAddr)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	for ev, err := range c.ListEvents(ctx, &calsyncv1.ListEventsRequest{CalendarId: "-"}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(ev.GetStartTime().AsTime().Format(time.Kitchen), ev.GetTitle(), ev.GetMeetingPlatform())
	}
	// Output:
	// 9:00AM Daily standup google_meet
	// 2:00PM Design review google_meet
}

// Watch every change, keeping the position in a file so that the next run
// resumes where this one stopped.
func ExampleClient_Watch() {
	calsync := startExampleServer()
	defer calsync.Stop()
	dir, _ := os.MkdirTemp("", "watch")
	defer os.RemoveAll(dir)

	c, err := client.New(context.Background(), calsync.grpcAddr)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	ctx, stop := context.WithCancel(context.Background())
	watching := make(chan struct{})
	go func() {
		<-watching // then send two webhooks: one meeting, created then moved
		calsync.post(meeting("standup", "Daily standup", 9, 1), meeting("standup", "Daily standup", 10, 2))
	}()
	handled := 0
	var once sync.Once
	err = c.Watch(ctx, client.WatchOptions{
		ChangeTypes: []calsyncv1.ChangeType{calsyncv1.ChangeType_CHANGE_TYPE_CREATED, calsyncv1.ChangeType_CHANGE_TYPE_UPDATED},
		Cursors:     client.NewFileCursorStore(filepath.Join(dir, "watch.cursor")),
	}, client.Handler{
		OnChange: func(ctx context.Context, ch *calsyncv1.Change) error {
			ev := ch.GetEvent()
			fmt.Println(strings.TrimPrefix(ch.GetType().String(), "CHANGE_TYPE_"), ev.GetTitle(),
				ev.GetStartTime().AsTime().Format(time.Kitchen), ch.GetChangedFields())
			if handled++; handled == 2 {
				stop() // Watch returns nil once ctx ends
			}
			return nil
		},
		OnBookmark: func(ctx context.Context, b *calsyncv1.Bookmark) error {
			// Every stream starts with a bookmark: from here on, no change
			// is missed.
			once.Do(func() { close(watching) })
			return nil
		},
	})
	fmt.Println("Watch returned", err)
	// Output:
	// CREATED Daily standup 9:00AM []
	// UPDATED Daily standup 10:00AM [start_time end_time]
	// Watch returned <nil>
}

// An informer keeps the upcoming meetings that have a meeting link, and says
// what changes.
func ExampleInformer() {
	calsync := startExampleServer()
	defer calsync.Stop()
	calsync.post(meeting("standup", "Daily standup", 9, 1))

	c, err := client.New(context.Background(), calsync.grpcAddr)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	meetings := client.NewInformer(c, client.InformerOptions{
		Start: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), // in practice: time.Now()
		Match: func(ev *calsyncv1.CalendarEvent) bool { return ev.GetMeetingUrl() != "" },
	})
	changed := make(chan struct{}, 10)
	meetings.AddEventHandler(client.EventHandler{
		OnAdd: func(ev *calsyncv1.CalendarEvent) {
			fmt.Println("scheduled:", ev.GetTitle(), ev.GetStartTime().AsTime().Format(time.Kitchen))
			changed <- struct{}{}
		},
		OnUpdate: func(old, ev *calsyncv1.CalendarEvent) {
			fmt.Println("moved:", ev.GetTitle(), old.GetStartTime().AsTime().Format(time.Kitchen), "->", ev.GetStartTime().AsTime().Format(time.Kitchen))
			changed <- struct{}{}
		},
		OnDelete: func(ev *calsyncv1.CalendarEvent) {
			fmt.Println("gone:", ev.GetTitle())
			changed <- struct{}{}
		},
	})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go meetings.Run(ctx)
	if err := meetings.WaitForSync(ctx); err != nil {
		fmt.Println(err)
		return
	}
	<-changed

	calsync.post(meeting("standup", "Daily standup", 11, 2), meeting("review", "Design review", 14, 1))
	<-changed
	<-changed
	for _, ev := range meetings.List(time.Time{}, time.Time{}) {
		fmt.Println("upcoming:", ev.GetTitle(), ev.GetMeetingUrl())
	}
	// Output:
	// scheduled: Daily standup 9:00AM
	// moved: Daily standup 9:00AM -> 11:00AM
	// scheduled: Design review 2:00PM
	// upcoming: Daily standup https://meet.google.com/sta-defg-hij
	// upcoming: Design review https://meet.google.com/rev-defg-hij
}

// Command calsync-fakerecall serves a fake Recall.ai Calendar V2 API with
// one connected calendar and a few events, so calsync's Recall ingestion can
// be tried on a machine that cannot reach Recall. It behaves as the fake
// the tests use (provider/recall/recalltest).
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/calsync/calsync/provider/recall/recalltest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8091", "listen address")
	calendarID := flag.String("calendar-id", "8a1d7c2e-3f4b-4c5d-9e6f-0a1b2c3d4e5f", "id of the calendar to serve")
	apiKey := flag.String("api-key", "test-key", "API key the fake accepts")
	flag.Parse()

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fake := recalltest.NewServer(recalltest.WithListener(lis), recalltest.WithAPIKey(*apiKey))
	defer fake.Close()
	fake.PutCalendar(recalltest.Calendar{ID: *calendarID, PlatformEmail: "owner@example.com"})
	tomorrow := time.Now().UTC().Truncate(time.Hour).Add(24 * time.Hour)
	fake.PutEvent(recalltest.Google("standup-1").Summary("Daily standup").
		Timed(tomorrow, tomorrow.Add(15*time.Minute), "Europe/Paris").
		Organizer("owner@example.com", "Owner").Attendee("dev@example.com", "Dev", "accepted").
		Meet("https://meet.google.com/abc-defg-hij").Event(*calendarID))
	fake.PutEvent(recalltest.Microsoft("review-1").Subject("Design review").
		Timed(tomorrow.Add(2*time.Hour), tomorrow.Add(3*time.Hour), "Pacific Standard Time").
		Teams("https://teams.microsoft.com/l/meetup-join/19%3ameeting_demo%40thread.v2/0").Event(*calendarID))

	fmt.Printf("fake Recall API on %s (API key %q), calendar %s with 2 events\n", fake.URL, *apiKey, *calendarID)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}

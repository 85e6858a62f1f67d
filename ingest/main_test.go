package ingest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/provider/recall/recalltest"
)

// fakeRecallEnv, when set to "<calendars>x<events>", makes the test binary
// a fake Recall API instead of running tests (see serveFakeRecall).
const fakeRecallEnv = "CALSYNC_TEST_FAKE_RECALL"

func TestMain(m *testing.M) {
	if spec := os.Getenv(fakeRecallEnv); spec != "" {
		serveFakeRecall(spec)
		return
	}
	os.Exit(pgtest.Main(m))
}

// fakeRecallInfo is what a fake Recall API in a child process announces on
// its first line of output.
type fakeRecallInfo struct {
	URL       string   `json:"url"`
	APIKey    string   `json:"api_key"`
	Calendars []string `json:"calendars"`
}

// serveFakeRecall runs a fake Recall API holding the calendars and events
// spec asks for, announces it on stdout, and serves until stdin closes. It
// runs in a child process so that benchmarks of processing count none of
// the fake's CPU: the parent's getrusage(RUSAGE_SELF) excludes children.
func serveFakeRecall(spec string) {
	var calendars, events int
	if _, err := fmt.Sscanf(spec, "%dx%d", &calendars, &events); err != nil {
		fmt.Fprintln(os.Stderr, "bad", fakeRecallEnv, spec, err)
		os.Exit(2)
	}
	fake := recalltest.NewServer()
	defer fake.Close()
	info := fakeRecallInfo{URL: fake.URL, APIKey: fake.APIKey()}
	start := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	for c := range calendars {
		cal := fake.PutCalendar(recalltest.Calendar{})
		info.Calendars = append(info.Calendars, cal.ID)
		for e := range events {
			at := start.Add(time.Duration(e) * time.Hour)
			fake.PutEvent(recalltest.Google(fmt.Sprintf("g%d-%d", c, e)).
				Summary(fmt.Sprintf("Planning %d", e)).Description("Agenda in the shared document.").
				Timed(at, at.Add(30*time.Minute), "Europe/Paris").
				Organizer("owner@example.com", "Owner").Attendee("dev@example.com", "Dev", "accepted").
				Meet("https://meet.google.com/abc-defg-hij").Event(cal.ID))
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(info); err != nil {
		os.Exit(2)
	}
	// Serve until the parent closes stdin (or exits).
	bufio.NewReader(os.Stdin).ReadString(0)
}

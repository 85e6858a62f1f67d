package ingest

import (
	"testing"
	"time"

	"github.com/calsync/calsync/provider/postpress"
)

// Planning a postpress webhook builds its calendar only to store it, when
// the calendar is new: the calendar of every other webhook is known
// already, and building it (its email address parsed) cost a tenth of a
// plan's allocations.
func TestPlanPostpressBuildsNoCalendar(t *testing.T) {
	p := newPipeline(t, nil, func(*ProcessorConfig) {})
	body := ppVersion("evt1", 1, false)
	w, err := postpress.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	received := time.Now()
	allocs := testing.AllocsPerRun(50, func() {
		if plan := p.proc.planPostpress(w, nil, body, received); plan.err != nil {
			t.Fatal(plan.err)
		}
	})
	// Normalizing the webhook allocates 58 times (most of it the raw
	// payload's values); building the calendar took 7 more.
	if allocs > 60 {
		t.Errorf("planning a postpress webhook: %.0f allocations, want at most 60", allocs)
	}
}

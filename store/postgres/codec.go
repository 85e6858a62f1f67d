package postgres

import (
	"time"

	"github.com/calsync/calsync/store/internal/rowcodec"
)

// nullNanos is nanos, with the zero time as NULL.
func nullNanos(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := rowcodec.Nanos(t)
	return &n
}

func fromNanos(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return time.Unix(0, *n).UTC()
}

package sqlite

import (
	"database/sql"
	"time"

	"github.com/calsync/calsync/store/internal/rowcodec"
)

// nullNanos stores the zero time as NULL, so it reads back as zero.
func nullNanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return rowcodec.Nanos(t)
}

// fromNanos reads back what nullNanos stored.
func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

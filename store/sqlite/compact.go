package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/calsync/calsync/store/internal/rowcodec"
)

// compactChunk is the most changes one compaction transaction removes, so
// that writers never wait long for the writer lock.
const compactChunk = 5000

// CompactChanges removes the changes committed before the given time, oldest
// first and never the newest change, in transactions of at most
// compactChunk rows. Each transaction advances the compaction point with the
// rows it removes. It stops at the first change committed at or after
// before, so the log never has holes even if the clock went backwards. It
// returns how many changes it removed, also when it fails part way.
func (db *DB) CompactChanges(ctx context.Context, before time.Time) (int64, error) {
	if err := db.enter(); err != nil {
		return 0, err
	}
	defer db.leave()
	beforeNs := rowcodec.Nanos(before)
	var total int64
	for {
		var removed int64
		var more bool
		err := db.write(ctx, func(q *connQuerier) error {
			var err error
			removed, more, err = compactChunkTx(ctx, q, beforeNs)
			return err
		})
		total += removed
		if err != nil {
			return total, fmt.Errorf("sqlite: compact changes: %w", err)
		}
		if !more {
			if total > 0 {
				db.log.Debug("change log compacted", "removed", total)
			}
			return total, nil
		}
	}
}

// compactChunkTx removes one chunk of changes and reports whether more may
// be due.
func compactChunkTx(ctx context.Context, q *connQuerier, beforeNs int64) (removed int64, more bool, err error) {
	compacted, err := compactedCursor(ctx, q)
	if err != nil {
		return 0, false, err
	}
	head, err := changeHead(ctx, q)
	if err != nil {
		return 0, false, err
	}
	// Find the end of the run of old changes in this chunk; the head is
	// excluded so the log always shows where it is.
	last, n, more, err := func() (last int64, n int, more bool, err error) {
		rows, err := q.QueryContext(ctx, `SELECT cursor, commit_ns FROM changes
			WHERE cursor > ? AND cursor < ? ORDER BY cursor LIMIT ?`, int64(compacted), int64(head), compactChunk)
		if err != nil {
			return 0, 0, false, err
		}
		defer rows.Close()
		for rows.Next() {
			var cursor, commitNs int64
			if err := rows.Scan(&cursor, &commitNs); err != nil {
				return 0, 0, false, err
			}
			if commitNs >= beforeNs {
				return last, n, false, nil
			}
			last, n = cursor, n+1
		}
		return last, n, n == compactChunk, rows.Err()
	}()
	if err != nil || n == 0 {
		return 0, false, err
	}
	res, err := q.ExecContext(ctx, `DELETE FROM changes WHERE cursor <= ?`, last)
	if err != nil {
		return 0, false, err
	}
	if removed, err = res.RowsAffected(); err != nil {
		return 0, false, err
	}
	if _, err := q.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = ?`, last, metaCompacted); err != nil {
		return 0, false, err
	}
	return removed, more, nil
}

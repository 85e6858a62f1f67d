package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/calsync/calsync/store/internal/rowcodec"
)

// compactChunk is the most changes one compaction transaction removes.
const compactChunk = 5000

// CompactChanges removes changes committed before the given time, oldest
// first, never the newest change, a chunk per transaction. It stops at the
// first change committed at or after before. Compactions from several
// processes take turns on the compaction point's row.
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
		err := db.write(ctx, func(tx pgx.Tx) error {
			var compacted, head int64
			if err := tx.QueryRow(ctx, `SELECT value::bigint FROM meta WHERE key = $1 FOR UPDATE`, metaCompacted).Scan(&compacted); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT head FROM change_log_head`).Scan(&head); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT cursor, commit_ns FROM changes
				WHERE cursor > $1 AND cursor < $2 ORDER BY cursor LIMIT $3`, compacted, head, compactChunk)
			if err != nil {
				return err
			}
			var last int64
			n := 0
			stopped := false
			for rows.Next() {
				var cursor, commitNs int64
				if err := rows.Scan(&cursor, &commitNs); err != nil {
					rows.Close()
					return err
				}
				if commitNs >= beforeNs {
					stopped = true
					break
				}
				last, n = cursor, n+1
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			more = !stopped && n == compactChunk
			tag, err := tx.Exec(ctx, `DELETE FROM changes WHERE cursor <= $1`, last)
			if err != nil {
				return err
			}
			removed = tag.RowsAffected()
			_, err = tx.Exec(ctx, `UPDATE meta SET value = $1 WHERE key = $2`, fmt.Sprint(last), metaCompacted)
			return err
		})
		total += removed
		if err != nil {
			return total, fmt.Errorf("postgres: compact changes: %w", err)
		}
		if !more {
			return total, nil
		}
	}
}

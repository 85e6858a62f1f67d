package postgres

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

// Snapshot reads every event matching f and the change log head in one
// REPEATABLE READ transaction, spools the events to a temporary file, ends
// the transaction, and only then calls fn for each: a slow fn holds no
// connection and no snapshot on the server.
func (db *DB) Snapshot(ctx context.Context, f store.SnapshotFilter, fn func(*calsyncv1.CalendarEvent) error) (store.Cursor, error) {
	var conds []string
	var args []any
	if len(f.CalendarIDs) > 0 {
		args = append(args, f.CalendarIDs)
		conds = append(conds, fmt.Sprintf("calendar_id = ANY($%d::text[])", len(args)))
	}
	if len(f.Providers) > 0 {
		args = append(args, f.Providers)
		conds = append(conds, fmt.Sprintf("provider = ANY($%d::text[])", len(args)))
	}
	if !f.IncludeDeleted {
		conds = append(conds, "NOT deleted")
	}
	query := `SELECT data FROM events`
	if len(conds) > 0 {
		query += ` WHERE ` + strings.Join(conds, " AND ")
	}
	query += ` ORDER BY calendar_id, start_sec, start_nsec, id`

	sp, err := os.CreateTemp(db.tempDir, "calsync-snapshot-*")
	if err != nil {
		return 0, fmt.Errorf("postgres: snapshot spool: %w", err)
	}
	// The file lives on only through its descriptor.
	os.Remove(sp.Name())
	defer sp.Close()
	w := bufio.NewWriterSize(sp, 64<<10)

	var head store.Cursor
	err = db.read(ctx, func(tx pgx.Tx) error {
		b, err := changeBounds(ctx, tx)
		if err != nil {
			return err
		}
		head = b.Head
		rows, err := tx.Query(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("postgres: snapshot: %w", err)
		}
		defer rows.Close()
		var n [binary.MaxVarintLen64]byte
		for rows.Next() {
			data := rows.RawValues()[0]
			if _, err := w.Write(n[:binary.PutUvarint(n[:], uint64(len(data)))]); err != nil {
				return fmt.Errorf("postgres: snapshot spool: %w", err)
			}
			if _, err := w.Write(data); err != nil {
				return fmt.Errorf("postgres: snapshot spool: %w", err)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return 0, err
	}
	if err := w.Flush(); err != nil {
		return 0, fmt.Errorf("postgres: snapshot spool: %w", err)
	}
	if _, err := sp.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("postgres: snapshot spool: %w", err)
	}
	r := bufio.NewReaderSize(sp, 64<<10)
	var buf []byte
	for {
		n, err := binary.ReadUvarint(r)
		if errors.Is(err, io.EOF) {
			return head, nil
		}
		if err != nil || n > 1<<30 {
			return 0, fmt.Errorf("postgres: snapshot spool damaged (record length %d): %v", n, err)
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return 0, fmt.Errorf("postgres: snapshot spool damaged: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		e, err := rowcodec.DecodeEvent(buf, nil)
		if err != nil {
			return 0, err
		}
		if err := fn(e); err != nil {
			return 0, err
		}
	}
}

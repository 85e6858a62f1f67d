package sqlite

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
	"github.com/calsync/calsync/store"
	"github.com/calsync/calsync/store/internal/rowcodec"
)

// Snapshot hands fn every event matching f, in (calendar_id, start_time, id)
// order, all read at one instant, and returns the change log head at that
// instant.
//
// The events are first copied, as stored, into a spool (memory up to
// spoolMemoryBytes, a temporary file beyond), and the read transaction ends
// before fn sees the first one. fn usually sends to a watcher, who may stop
// reading: it must never keep a pooled connection busy, nor a WAL snapshot
// that checkpoints cannot pass.
func (db *DB) Snapshot(ctx context.Context, f store.SnapshotFilter, fn func(*calsyncv1.CalendarEvent) error) (store.Cursor, error) {
	var w where
	w.in("calendar_id", f.CalendarIDs)
	w.in("provider", f.Providers)
	if !f.IncludeDeleted {
		w.add("deleted = 0")
	}
	query := `SELECT data FROM events` + w.String() + ` ORDER BY calendar_id, start_sec, start_nsec, id`
	sp := &spool{dir: db.tempDir}
	defer sp.close()
	var head store.Cursor
	err := db.read(ctx, func(tx *sql.Tx) error {
		// The first read fixes the transaction's view; the head comes first
		// so that it belongs to the same view as the events.
		var err error
		if head, err = changeHead(ctx, txQuerier{tx}); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, query, w.args...)
		if err != nil {
			return fmt.Errorf("sqlite: snapshot: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			// RawBytes points into the driver's row: it goes straight to
			// the spool without a copy of its own.
			var data sql.RawBytes
			if err := rows.Scan(&data); err != nil {
				return fmt.Errorf("sqlite: snapshot: %w", err)
			}
			if err := sp.add(data); err != nil {
				return err
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: snapshot: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	err = sp.each(func(data []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := rowcodec.DecodeEvent(data, nil)
		if err != nil {
			return err
		}
		return fn(e)
	})
	if err != nil {
		return 0, err
	}
	return head, nil
}

// spoolMemoryBytes is how much of a snapshot is kept in memory before the
// spool moves to a file: small snapshots, the common case, never touch
// the disk, and a large one costs this much memory at most.
const spoolMemoryBytes = 256 << 10

// maxSpoolRecord guards against reading a damaged spool: no stored event
// comes near it.
const maxSpoolRecord = 1 << 30

// spool holds a sequence of byte records, written once and then read once
// in order: in memory while small, in an unlinked temporary file beyond.
type spool struct {
	dir  string
	mem  []byte
	file *os.File
	w    *bufio.Writer
	// unlinked says the file's name is already gone (removed right after
	// creation where the system allows it, so a crash leaves nothing).
	unlinked bool
}

// add appends one record, copying it.
func (s *spool) add(rec []byte) error {
	if s.file == nil && len(s.mem)+binary.MaxVarintLen64+len(rec) <= spoolMemoryBytes {
		s.mem = binary.AppendUvarint(s.mem, uint64(len(rec)))
		s.mem = append(s.mem, rec...)
		return nil
	}
	if s.file == nil {
		if err := s.toFile(); err != nil {
			return err
		}
	}
	var n [binary.MaxVarintLen64]byte
	if _, err := s.w.Write(n[:binary.PutUvarint(n[:], uint64(len(rec)))]); err != nil {
		return fmt.Errorf("sqlite: snapshot spool: %w", err)
	}
	if _, err := s.w.Write(rec); err != nil {
		return fmt.Errorf("sqlite: snapshot spool: %w", err)
	}
	return nil
}

// toFile moves the spool from memory to a new temporary file.
func (s *spool) toFile() error {
	f, err := os.CreateTemp(s.dir, "calsync-snapshot-*")
	if err != nil {
		return fmt.Errorf("sqlite: snapshot spool: %w", err)
	}
	s.file = f
	s.unlinked = os.Remove(f.Name()) == nil
	s.w = bufio.NewWriterSize(f, 64<<10)
	if _, err := s.w.Write(s.mem); err != nil {
		return fmt.Errorf("sqlite: snapshot spool: %w", err)
	}
	s.mem = nil
	return nil
}

// each calls fn with every record in order. The slice fn gets is reused
// for the next record.
func (s *spool) each(fn func([]byte) error) error {
	var r *bufio.Reader
	if s.file == nil {
		r = bufio.NewReader(bytes.NewReader(s.mem))
	} else {
		if err := s.w.Flush(); err != nil {
			return fmt.Errorf("sqlite: snapshot spool: %w", err)
		}
		if _, err := s.file.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("sqlite: snapshot spool: %w", err)
		}
		r = bufio.NewReaderSize(s.file, 64<<10)
	}
	var buf []byte
	for {
		n, err := binary.ReadUvarint(r)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil || n > maxSpoolRecord {
			return fmt.Errorf("sqlite: snapshot spool damaged (record length %d): %v", n, err)
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("sqlite: snapshot spool damaged: %w", err)
		}
		if err := fn(buf); err != nil {
			return err
		}
	}
}

// close releases the spool's memory and file.
func (s *spool) close() {
	s.mem = nil
	if s.file == nil {
		return
	}
	s.file.Close()
	if !s.unlinked {
		os.Remove(s.file.Name())
	}
}

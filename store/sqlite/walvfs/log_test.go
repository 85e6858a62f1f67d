package walvfs_test

import (
	"database/sql"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/calsync/calsync/store/sqlite/walvfs"
)

// openPipe opens path through the pipelined VFS, as the store's writer does.
func openPipe(t *testing.T, path string) *sql.DB {
	t.Helper()
	if err := walvfs.Register(); err != nil {
		t.Fatal(err)
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "wal_autocheckpoint(0)")
	q.Set("vfs", walvfs.PipeName)
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// wantSyncs fails unless the VFS synced a log want times since from.
func wantSyncs(t *testing.T, from, want int64, when string) {
	t.Helper()
	if got := walvfs.Syncs() - from; got != want {
		t.Fatalf("%s: %d syncs of the log, want %d", when, got, want)
	}
}

// TestLogDefersOnlyTheCommitsSync: inside Defer a commit writes its frames
// (another connection reads them) without syncing the log, and Sync then
// syncs it once; a commit outside Defer, a checkpoint on another
// connection and the header of a log started over still sync as SQLite
// asks.
func TestLogDefersOnlyTheCommitsSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	w := openPipe(t, path)
	mustExec(t, w, `CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)`)
	log, err := walvfs.FindLog(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := walvfs.FindLog(path); err == nil {
		t.Fatal("FindLog found the database file as a log")
	}
	insert := func(i int) error {
		tx, err := w.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO t (id, body) VALUES (?, ?)`, i, row(i)); err != nil {
			tx.Rollback()
			return err
		}
		return log.Defer(tx.Commit)
	}

	s := walvfs.Syncs()
	if err := insert(0); err != nil {
		t.Fatal(err)
	}
	wantSyncs(t, s, 0, "a commit inside Defer")
	r := open(t, path, false)
	wantRows(t, r, 1, "before the sync")
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	wantSyncs(t, s, 1, "Sync after a deferred commit")
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	wantSyncs(t, s, 1, "Sync with nothing deferred")

	s = walvfs.Syncs()
	mustExec(t, w, `INSERT INTO t (id, body) VALUES (?, ?)`, 1, row(1))
	wantSyncs(t, s, 1, "a commit outside Defer")

	// A checkpoint syncs the log before copying it, even while a deferred
	// sync is outstanding; TRUNCATE then makes the writer start the log
	// over, and the new header's sync is not deferred either.
	if err := insert(2); err != nil {
		t.Fatal(err)
	}
	s = walvfs.Syncs()
	c := open(t, path, true)
	var busy, frames, copied int
	if err := c.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &copied); err != nil || busy != 0 {
		t.Fatalf("checkpoint: busy %d, %v", busy, err)
	}
	if walvfs.Syncs()-s < 1 {
		t.Fatal("the checkpoint did not sync the log")
	}
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	s = walvfs.Syncs()
	if err := insert(3); err != nil {
		t.Fatal(err)
	}
	wantSyncs(t, s, 1, "a deferred commit that starts the log over (its header)")
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	wantSyncs(t, s, 2, "Sync after it")
	wantRows(t, r, 4, "after the log started over")
	checkRows(t, path, 4)
}

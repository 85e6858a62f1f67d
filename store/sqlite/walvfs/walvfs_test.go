package walvfs_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/calsync/calsync/store/sqlite/walvfs"
)

// childEnv names the database a re-executed test binary writes to until it
// is killed (see TestKilledWriterLosesNoCommit).
const childEnv = "WALVFS_TEST_CHILD_DB"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(writeUntilKilled(path))
	}
	os.Exit(m.Run())
}

// open opens path through the VFS (viaVFS) or through SQLite's default one,
// with the settings the store uses for its writer.
func open(t testing.TB, path string, viaVFS bool, pragmas ...string) *sql.DB {
	t.Helper()
	if err := walvfs.Register(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dsn(path, viaVFS, pragmas...))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func dsn(path string, viaVFS bool, pragmas ...string) string {
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "wal_autocheckpoint(0)")
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	if viaVFS {
		q.Set("vfs", walvfs.Name)
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

func mustExec(t testing.TB, db interface {
	Exec(string, ...any) (sql.Result, error)
}, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// row is the content of row i: several pages, so a commit writes many frames.
func row(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8), 'x'}, 3000) }

// checkRows reads the table through SQLite's default VFS, on a connection
// of its own, and wants exactly rows 0..n-1 and an intact database.
func checkRows(t *testing.T, path string, n int) {
	t.Helper()
	db := open(t, path, false)
	var ok string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check = %q, %v", ok, err)
	}
	wantRows(t, db, n, "read back")
	db.Close()
}

// wantRows reads the table through q (a database or a transaction) and
// wants exactly rows 0..n-1.
func wantRows(t *testing.T, q interface {
	Query(string, ...any) (*sql.Rows, error)
}, n int, when string) {
	t.Helper()
	rows, err := q.Query(`SELECT id, body FROM t ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		var id int
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			t.Fatal(err)
		}
		if id != i || !bytes.Equal(body, row(i)) {
			t.Fatalf("%s: row %d reads as id %d with a body of %d bytes", when, i, id, len(body))
		}
		i++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if i != n {
		t.Fatalf("%s: read %d rows, want %d", when, i, n)
	}
}

// TestCommitsAreVisibleAndGathered: what a commit through the VFS wrote is
// on file when the commit returns (another connection, through the default
// VFS, reads it), and the commit's frames went out in few writes.
func TestCommitsAreVisibleAndGathered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	w := open(t, path, true)
	mustExec(t, w, `CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)`)
	r := open(t, path, false)
	const commits, perCommit = 20, 10
	n := 0
	for range commits {
		held0, flushed0 := walvfs.Counts()
		tx, err := w.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for range perCommit {
			mustExec(t, tx, `INSERT INTO t (id, body) VALUES (?, ?)`, n, row(n))
			n++
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		held, flushed := walvfs.Counts()
		// Each row fills more than two pages; each frame is two writes.
		if held-held0 < 2*2*perCommit {
			t.Fatalf("a commit of %d rows held %d writes, want at least %d", perCommit, held-held0, 2*2*perCommit)
		}
		if flushed-flushed0 > 2 {
			t.Fatalf("a commit wrote its frames out %d times, want at most 2", flushed-flushed0)
		}
		var got int
		if err := r.QueryRow(`SELECT count(*) FROM t`).Scan(&got); err != nil || got != n {
			t.Fatalf("reader sees %d rows (%v), want %d", got, err, n)
		}
	}
	w.Close()
	r.Close()
	checkRows(t, path, n)
}

// TestReadsComeFromTheView: the writer's reads of frames, a checkpoint's
// copies of them and reads of the database file are served by the files'
// views (see view.go), and give what was committed.
func TestReadsComeFromTheView(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	w := open(t, path, true, "cache_size(8)")
	mustExec(t, w, `CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)`)
	const n = 200
	for i := range n {
		mustExec(t, w, `INSERT INTO t (id, body) VALUES (?, ?)`, i, row(i))
	}
	before := walvfs.ViewReads()
	wantRows(t, w, n, "from the log")
	read := walvfs.ViewReads() - before
	// Each row fills three pages, nearly all of them out of 8 cached.
	if read < 2*n {
		t.Fatalf("reading %d rows back took %d reads from the view, want at least %d", n, read, 2*n)
	}

	ckpt := open(t, path, true)
	before = walvfs.ViewReads()
	var busy, logged, copied int
	if err := ckpt.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logged, &copied); err != nil || copied != logged {
		t.Fatalf("wal_checkpoint = busy %d, %d of %d frames copied, %v", busy, copied, logged, err)
	}
	// It copies every page of the rows once: two overflow pages a row.
	if read := walvfs.ViewReads() - before; read < 2*n {
		t.Fatalf("a checkpoint of %d frames took %d reads from the view, want at least %d", logged, read, 2*n)
	}

	// With the log emptied, every page comes from the database file.
	if err := ckpt.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logged, &copied); err != nil || busy != 0 || logged != 0 {
		t.Fatalf("wal_checkpoint(TRUNCATE) = busy %d, %d of %d frames copied, %v", busy, copied, logged, err)
	}
	before = walvfs.ViewReads()
	wantRows(t, w, n, "from the database file")
	if read := walvfs.ViewReads() - before; read < 2*n {
		t.Fatalf("reading %d rows from the database file took %d reads from the view, want at least %d", n, read, 2*n)
	}
	w.Close()
	ckpt.Close()
	checkRows(t, path, n)
}

// TestLargeTransactionReadsItsOwnSpilledPages: a transaction larger than
// the page cache writes frames before its commit and reads them back; it
// must read what it wrote, also after a rollback and while frames of more
// than the VFS holds are streamed out.
func TestLargeTransactionReadsItsOwnSpilledPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	w := open(t, path, true, "cache_size(8)")
	mustExec(t, w, `CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)`)
	mustExec(t, w, `CREATE INDEX t_by_body ON t (body)`)

	// Rolled back after spilling: its frames are written again, differently.
	tx, err := w.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		mustExec(t, tx, `INSERT INTO t (id, body) VALUES (?, ?)`, i, []byte("rolled back"))
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}

	const n = 600 // about 7 MB with the index: far more than 8 cached pages and than the VFS holds
	tx, err = w.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		mustExec(t, tx, `INSERT INTO t (id, body) VALUES (?, ?)`, i, row(i))
	}
	// Read back inside the transaction: pages come from spilled frames.
	wantRows(t, tx, n, "inside the transaction")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	checkRows(t, path, n)
}

// TestWritesAfterTheLogStartsOver: once a checkpoint has copied every frame,
// the next commit writes the log from its start again; what it writes there
// must reach the file before any frame after it.
func TestWritesAfterTheLogStartsOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	w := open(t, path, true)
	mustExec(t, w, `CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)`)
	ckpt := open(t, path, false)
	n := 0
	for round := range 5 {
		for range 20 {
			mustExec(t, w, `INSERT INTO t (id, body) VALUES (?, ?)`, n, row(n))
			n++
		}
		mode := []string{"PASSIVE", "RESTART", "TRUNCATE"}[round%3]
		var busy, logged, copied int
		if err := ckpt.QueryRow(`PRAGMA wal_checkpoint(`+mode+`)`).Scan(&busy, &logged, &copied); err != nil || busy != 0 || copied != logged {
			t.Fatalf("wal_checkpoint(%s) = busy %d, %d of %d frames copied, %v", mode, busy, copied, logged, err)
		}
	}
	w.Close()
	ckpt.Close()
	checkRows(t, path, n)
}

// TestKilledWriterLosesNoCommit kills a writer with SIGKILL at random
// moments: every commit it reported is in the database when it is opened
// again, which fails if a commit could return with frames still held in
// the writer's memory.
func TestKilledWriterLosesNoCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	acked := 0
	for cycle := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+path)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := acked + 20 + rand.IntN(200)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			k, err := strconv.Atoi(sc.Text())
			if err != nil {
				t.Fatalf("child wrote %q", sc.Text())
			}
			if k != acked {
				t.Fatalf("cycle %d: child committed row %d, want %d", cycle, k, acked)
			}
			acked++
			if acked == killAfter {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		cmd.Wait()
		// A commit the child made but did not get to report may be there too.
		db := open(t, path, false)
		var max sql.NullInt64
		if err := db.QueryRow(`SELECT max(id) FROM t`).Scan(&max); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if int(max.Int64)+1 < acked {
			t.Fatalf("cycle %d: %d commits reported, only %d in the database", cycle, acked, max.Int64+1)
		}
		acked = int(max.Int64) + 1
		checkRows(t, path, acked)
	}
}

// writeUntilKilled is the child of TestKilledWriterLosesNoCommit: it
// commits rows one transaction each and reports each on stdout after its
// commit returned, checkpointing now and then so the log starts over.
func writeUntilKilled(path string) int {
	if err := walvfs.Register(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	db, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)`); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var next sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT max(id) + 1 FROM t`).Scan(&next); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := int(next.Int64); ; i++ {
		if _, err := db.ExecContext(ctx, `INSERT INTO t (id, body) VALUES (?, ?)`, i, row(i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := fmt.Println(i); err != nil {
			return 1
		}
		if i%50 == 49 {
			if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(RESTART)`); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
	}
}

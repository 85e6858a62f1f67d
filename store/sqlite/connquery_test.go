package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calsync/calsync/store"
)

// writeTxLocked runs fn in writeTx under the writer lock.
func writeTxLocked(t *testing.T, db *DB, fn func(*connQuerier) error) error {
	t.Helper()
	if err := db.lockWriter(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer db.unlockWriter()
	return db.writeTx(context.Background(), fn)
}

// The writer's querier converts arguments and scans columns as
// database/sql does for the types the store uses, and refuses the others
// with an error rather than storing something else.
func TestConnQuerierArgumentsAndDestinations(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, Options{})
	err := writeTxLocked(t, db, func(q *connQuerier) error {
		if _, err := q.ExecContext(ctx, `CREATE TEMP TABLE kinds (i INTEGER, s TEXT, b BLOB, n INTEGER)`); err != nil {
			return err
		}
		res, err := q.ExecContext(ctx, `INSERT INTO kinds VALUES (?, ?, ?, ?), (?, ?, ?, ?)`,
			int32(7), "seven", []byte{7}, sql.NullInt64{Int64: 70, Valid: true},
			8, "eight", []byte{}, nil)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 2 {
			t.Errorf("RowsAffected = %d, %v; want 2", n, err)
		}
		if _, err := q.ExecContext(ctx, `INSERT INTO kinds VALUES (?, ?, ?, ?)`, 1, "x", struct{}{}, nil); err == nil ||
			!strings.Contains(err.Error(), "argument 3") {
			t.Errorf("a struct argument: err = %v, want one naming argument 3", err)
		}
		rows, err := q.QueryContext(ctx, `SELECT i, s, b, n, i > 7 FROM kinds ORDER BY i`)
		if err != nil {
			return err
		}
		defer rows.Close()
		type row struct {
			i      int
			s      string
			b      []byte
			n      sql.NullInt64
			more   bool
			asAny  any
			asText sql.RawBytes
		}
		var got []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.i, &r.s, &r.b, &r.n, &r.more); err != nil {
				return err
			}
			got = append(got, r)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(got) != 2 || got[0].i != 7 || got[0].s != "seven" || string(got[0].b) != "\x07" ||
			got[0].n != (sql.NullInt64{Int64: 70, Valid: true}) || got[0].more ||
			got[1].i != 8 || got[1].s != "eight" || len(got[1].b) != 0 || got[1].n.Valid || !got[1].more {
			t.Errorf("rows = %+v", got)
		}
		// The first row's blob was the driver's own copy: reading the
		// second row left it as it was.
		if string(got[0].b) != "\x07" {
			t.Errorf("first row's blob became %q", got[0].b)
		}
		var text sql.RawBytes
		var whole any
		if err := q.QueryRowContext(ctx, `SELECT s, i FROM kinds WHERE i = ?`, int64(7)).Scan(&text, &whole); err != nil {
			return err
		}
		if string(text) != "seven" || whole != int64(7) {
			t.Errorf("QueryRow = %q, %v", text, whole)
		}
		var s string
		if err := q.QueryRowContext(ctx, `SELECT s FROM kinds WHERE i = 99`).Scan(&s); !errors.Is(err, sql.ErrNoRows) {
			t.Errorf("no row: err = %v, want sql.ErrNoRows", err)
		}
		var i int64
		if err := q.QueryRowContext(ctx, `SELECT s FROM kinds WHERE i = 7`).Scan(&i); err == nil {
			t.Errorf("text scanned into an int64: got %d, want an error", i)
		}
		if err := q.QueryRowContext(ctx, `SELECT s, i FROM kinds WHERE i = 7`).Scan(&s); err == nil {
			t.Error("two columns scanned into one destination: want an error")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDriverValue(t *testing.T) {
	for _, c := range []struct {
		in   any
		want driver.Value
	}{
		{int(-3), int64(-3)},
		{int32(5), int64(5)},
		{uint32(1 << 31), int64(1 << 31)},
		{int64(9), int64(9)},
		{true, true},
		{"s", "s"},
		{nil, nil},
		{sql.NullInt64{}, nil},
		{sql.NullString{String: "v", Valid: true}, "v"},
	} {
		got, err := driverValue(c.in)
		if err != nil || got != c.want {
			t.Errorf("driverValue(%#v) = %#v, %v; want %#v", c.in, got, err, c.want)
		}
	}
	if _, err := driverValue(uint64(1)); err == nil {
		t.Error("driverValue(uint64) succeeded; want an error")
	}
}

// A statement is prepared once per connection and reused by later
// transactions.
func TestConnStatementsPreparedOnce(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, Options{})
	const query = `SELECT COUNT(*) FROM deliveries`
	var first driver.Stmt
	for range 3 {
		err := writeTxLocked(t, db, func(q *connQuerier) error {
			var n int64
			if err := q.QueryRowContext(ctx, query).Scan(&n); err != nil {
				return err
			}
			st := q.stmts.stmts[query]
			if st == nil {
				t.Fatal("the query's statement was not kept")
			}
			if first == nil {
				first = st
			} else if st != first {
				t.Error("a later transaction prepared the query again")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Statements belong to the connection they were prepared on: given
// another connection, the querier forgets them instead of using them.
func TestConnStatementsForgottenWithTheirConnection(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, Options{})
	other, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "other.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var s connStmts
	run := func(pool *sql.DB) driver.Stmt {
		conn, err := pool.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var st driver.Stmt
		err = conn.Raw(func(dc any) error {
			q, err := s.querier(dc)
			if err != nil {
				return err
			}
			var one int64
			if err := q.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
				return err
			}
			st = s.stmts[`SELECT 1`]
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	a := run(db.r)
	b := run(other)
	if a == b || len(s.stmts) != 1 {
		t.Errorf("after a second connection: same statement %v, %d kept; want a new one, alone", a == b, len(s.stmts))
	}
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Raw(s.close); err != nil || len(s.stmts) != 0 {
		t.Errorf("close: %v, %d statements left", err, len(s.stmts))
	}
}

// A COMMIT that fails leaves no transaction open: the writer's next
// transaction begins and commits. A deferred foreign key is one way to make
// COMMIT fail with the transaction still open.
func TestWriteTxAfterFailedCommit(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t, Options{})
	err := writeTxLocked(t, db, func(q *connQuerier) error {
		for _, s := range []string{
			`CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)`,
			`CREATE TEMP TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)`,
		} {
			if _, err := q.ExecContext(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = writeTxLocked(t, db, func(q *connQuerier) error {
		_, err := q.ExecContext(ctx, `INSERT INTO child VALUES (42)`)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "commit") {
		t.Fatalf("commit of a dangling child: err = %v, want a failed commit", err)
	}
	if err := writeTxLocked(t, db, func(q *connQuerier) error {
		_, err := q.ExecContext(ctx, `INSERT INTO parent VALUES (1)`)
		return err
	}); err != nil {
		t.Fatalf("the transaction after a failed commit: %v", err)
	}
	// And the store's own writes go on.
	if err := db.Update(ctx, func(tx store.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var children int64
	if err := writeTxLocked(t, db, func(q *connQuerier) error {
		return q.QueryRowContext(ctx, `SELECT COUNT(*) FROM child`).Scan(&children)
	}); err != nil || children != 0 {
		t.Errorf("children after the failed commit: %d, %v; want 0", children, err)
	}
}

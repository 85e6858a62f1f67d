package pgtest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/calsync/calsync/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestPostgresPrivateServer checks that a test gets its own empty database
// on a private, durable server reachable over TCP and the Unix socket.
func TestPostgresPrivateServer(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var fsync, syncCommit, dataDir string
	if err := conn.QueryRow(ctx, `SELECT current_setting('fsync'), current_setting('synchronous_commit'),
		current_setting('data_directory')`).Scan(&fsync, &syncCommit, &dataDir); err != nil {
		t.Fatal(err)
	}
	s := pgtest.Shared(t)
	if fsync != "on" || syncCommit != "on" {
		t.Errorf("fsync=%s synchronous_commit=%s, want both on", fsync, syncCommit)
	}
	if dataDir != filepath.Join(s.Dir, "data") {
		t.Errorf("data_directory = %s, want the private %s", dataDir, filepath.Join(s.Dir, "data"))
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE t (x int)`); err != nil {
		t.Fatal(err)
	}

	// A second database is empty: tests do not see each other's tables.
	other, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	var n int
	if err := other.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 't'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("a fresh database holds another test's table")
	}

	// The Unix socket reaches the same server.
	sock, err := pgx.Connect(ctx, s.SocketURL("postgres"))
	if err != nil {
		t.Fatalf("connect through the socket: %v", err)
	}
	defer sock.Close(ctx)
	var sockDir string
	if err := sock.QueryRow(ctx, `SELECT current_setting('data_directory')`).Scan(&sockDir); err != nil || sockDir != dataDir {
		t.Fatalf("socket reached %q (%v), want %q", sockDir, err, dataDir)
	}
}

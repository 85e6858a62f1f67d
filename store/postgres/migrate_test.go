package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/calsync/calsync/internal/pgtest"
	"github.com/calsync/calsync/store/postgres"
)

// TestPostgresConcurrentMigration starts several stores at once on one
// empty database, as replicas deployed together would: every one opens,
// the schema is applied once, and they all share one store id.
func TestPostgresConcurrentMigration(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	const replicas = 8
	ids := make([]string, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			db, err := postgres.Open(ctx, url, postgres.Options{MaxConns: 2})
			if err != nil {
				t.Errorf("replica %d: Open: %v", i, err)
				return
			}
			ids[i] = db.ID()
			db.Close()
		})
	}
	wg.Wait()
	for i := range ids {
		if ids[i] != ids[0] || ids[i] == "" {
			t.Fatalf("store ids %q: want one id for the database", ids)
		}
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows, versions int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT version) FROM schema_migrations`).Scan(&rows, &versions); err != nil {
		t.Fatal(err)
	}
	if rows != versions || rows == 0 {
		t.Fatalf("schema_migrations holds %d rows for %d versions: a migration ran twice", rows, versions)
	}
}

// TestPostgresRefusesNewerSchema: a program older than the database's
// schema refuses to run on it rather than misread it.
func TestPostgresRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	db, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_ns) VALUES (9999, 'future', 0)`); err != nil {
		t.Fatal(err)
	}
	if db, err := postgres.Open(ctx, url, postgres.Options{}); err == nil {
		db.Close()
		t.Fatal("Open on a newer schema succeeded")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open on a newer schema: %v, want an error saying it is newer", err)
	}
}

// TestPostgresRedact: passwords in database URLs never reach logs or
// errors.
func TestPostgresRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://calsync:s3cret@db:5432/calsync?sslmode=disable": "postgres://calsync:xxxxx@db:5432/calsync?sslmode=disable",
		"postgresql://u:p%40ss@h/db":                                "postgresql://u:xxxxx@h/db",
		"postgres://u@h/db?password=s3cret&sslmode=disable":         "postgres://u@h/db?password=xxxxx&sslmode=disable",
		"postgres://u:a@b@h/db":                                     "postgres://u:xxxxx@h/db",
		"postgres://u@h/db?sslmode=disable":                         "postgres://u@h/db?sslmode=disable",
	} {
		if got := postgres.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	_, err := postgres.Open(context.Background(), "postgres://u:s3cret@127.0.0.1:1/db?sslmode=disable&connect_timeout=1", postgres.Options{})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Open on an unreachable server: %v; want an error without the password", err)
	}
	_, err = postgres.Open(context.Background(), "postgres://u:s3cret@h:notaport/db", postgres.Options{})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Open on a malformed URL: %v; want an error without the password", err)
	}
}

package server_test

import (
	"os"
	"testing"

	"github.com/calsync/calsync/internal/pgtest"
)

// TestMain runs the tests through pgtest.Main: the watch tests run on both
// backends (testdb.OnBackends), PostgreSQL being the test binary's own.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

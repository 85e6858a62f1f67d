package walvfs_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/calsync/calsync/internal/cputime"
)

// BenchmarkCommit commits transactions the size of a group commit under
// load (32 rows of about 1 KB, each also in a random-key index) with
// synchronous=FULL on a real file, through this VFS and through SQLite's
// default one. It reports process CPU per row, fsync included.
func BenchmarkCommit(b *testing.B) {
	for _, viaVFS := range []bool{true, false} {
		name := "vfs=walvfs"
		if !viaVFS {
			name = "vfs=default"
		}
		b.Run(name, func(b *testing.B) {
			db := open(b, filepath.Join(b.TempDir(), "b.db"), viaVFS)
			mustExec(b, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, body BLOB)`)
			mustExec(b, db, `CREATE INDEX t_by_k ON t (k)`)
			body := make([]byte, 1000)
			const rows = 32
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cputime.Process()
			for i := range b.N {
				tx, err := db.Begin()
				if err != nil {
					b.Fatal(err)
				}
				for j := range rows {
					n := i*rows + j
					mustExec(b, tx, `INSERT INTO t (id, k, body) VALUES (?, ?, ?)`, n, fmt.Sprintf("%08x", uint32(n)*2654435761), body)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cputime.Process()-cpu0).Microseconds())/float64(b.N*rows), "cpu-µs/row")
		})
	}
}

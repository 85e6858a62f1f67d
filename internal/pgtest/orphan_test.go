package pgtest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestPostgresServerDiesWithTestBinary kills (SIGKILL) a test binary that
// started a server: the server stops by itself, and the next start removes
// the directory left behind.
func TestPostgresServerDiesWithTestBinary(t *testing.T) {
	if os.Getenv("PGTEST_CHILD") == "1" {
		s := Shared(t)
		fmt.Printf("%s %d\n", s.Dir, s.cmd.Process.Pid)
		select {} // Wait to be killed.
	}
	child := exec.Command(os.Args[0], "-test.run=^TestPostgresServerDiesWithTestBinary$")
	child.Env = append(os.Environ(), "PGTEST_CHILD=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var dir string
	var pid int
	if _, err := fmt.Fscan(bufio.NewReader(out), &dir, &pid); err != nil {
		child.Process.Kill()
		t.Fatalf("the child did not report its server: %v", err)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()

	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("postgres (pid %d) outlived its test binary by 30s", pid)
		}
		time.Sleep(20 * time.Millisecond) // Poll for the process to exit.
	}
	// Another test binary starting its own server (go test runs packages
	// in parallel) may have removed the directory already: that is the
	// same cleanup, done by a different start.
	removeOrphans()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		os.RemoveAll(dir)
		t.Fatalf("the next start left the killed binary's directory %s (%v)", dir, err)
	}
}

package nstest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// heavyWait bounds how long Heavy waits for another package's heavy test.
// The longest holder is the chaos package's fault tests, one at a time
// (about a minute each under -race); the crash test holds it about 4 min.
const heavyWait = 15 * time.Minute

// Heavy holds the machine's lock for heavy tests until the test ends.
// `go test ./...` runs packages side by side (one process each); a heavy
// test (a 500-PE fault scenario, the kill -9 crash test with its 20 000
// PE store) needs what the machine has, and two at once on a 2-core
// machine starve each other's name servers until registrations time out.
// The lock is an flock on a file in the temporary folder, so it is freed
// when the process dies, however it dies.
func Heavy(t testing.TB) {
	t.Helper()
	path := filepath.Join(os.TempDir(), "rsp-heavy-test.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("heavy-test lock %s: %v", path, err)
	}
	start := time.Now()
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			t.Fatalf("heavy-test lock %s: %v", path, err)
		}
		if time.Since(start) > heavyWait {
			f.Close()
			t.Fatalf("heavy-test lock %s: another test held it for more than %s", path, heavyWait)
		}
		if !logged {
			t.Logf("waiting for another package's heavy test to end (lock %s)", path)
			logged = true
		}
		time.Sleep(200 * time.Millisecond)
	}
	if logged {
		t.Logf("heavy-test lock taken after %s", time.Since(start).Round(time.Millisecond))
	}
	t.Cleanup(func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	})
}

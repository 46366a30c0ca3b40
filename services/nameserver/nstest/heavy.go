package nstest

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// heavyWait bounds how long Heavy waits for another package's heavy test.
// The longest holder is the crash test (about 4 min, 12 under load); the
// chaos package's fault tests hold it a minute or two each, one at a time,
// and let a waiting package in between (heavyTurn).
const heavyWait = 15 * time.Minute

// heavyTurn: after a heavy test of this process ends, the next one waits
// this long before it asks for the lock, so that a test of another
// package that polls for it (every heavyPoll) gets its turn rather than
// waiting out every heavy test of this package.
const (
	heavyTurn = 3 * heavyPoll
	heavyPoll = 200 * time.Millisecond
)

// heavyReleased is when this process last released the lock.
var heavyReleased atomic.Int64

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
	if wait := heavyTurn - time.Since(time.Unix(0, heavyReleased.Load())); wait > 0 {
		time.Sleep(wait)
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
		time.Sleep(heavyPoll)
	}
	if logged {
		t.Logf("heavy-test lock taken after %s", time.Since(start).Round(time.Millisecond))
	}
	t.Cleanup(func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
		heavyReleased.Store(time.Now().UnixNano())
	})
}

package rspclient

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

func TestNewOptions(t *testing.T) {
	nc := connect(t, startNATS(t))

	c := newClient(t, nc)
	if c.Scope() != "default" {
		t.Errorf("scope = %q, want default", c.Scope())
	}
	if !nkeys.IsValidPublicUserKey(c.PublicKey()) {
		t.Errorf("generated key %q is not a user nkey", c.PublicKey())
	}
	if c.timeout != DefaultTimeout {
		t.Errorf("timeout = %s, want %s", c.timeout, DefaultTimeout)
	}
	if other := newClient(t, nc); other.PublicKey() == c.PublicKey() {
		t.Error("two clients without WithKey share a key")
	}

	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	c = newClient(t, nc, WithScope("prod-1"), WithKey(kp), WithTimeout(time.Second))
	if c.Scope() != "prod-1" || c.PublicKey() != pub || c.timeout != time.Second {
		t.Errorf("options not applied: scope %q key %q timeout %s", c.Scope(), c.PublicKey(), c.timeout)
	}

	acct, _ := nkeys.CreateAccount()
	pubOnly, _ := nkeys.FromPublicKey(pub)
	for _, tc := range []struct {
		name  string
		opt   Option
		field string
	}{
		{"bad scope", WithScope("Bad.Scope"), "scope"},
		{"empty scope", WithScope(""), "scope"},
		{"zero timeout", WithTimeout(0), "timeout"},
		{"negative timeout", WithTimeout(-time.Second), "timeout"},
		{"nil key", WithKey(nil), "key"},
		{"account key", WithKey(acct), "key"},
		{"public key only", WithKey(pubOnly), "key"},
		{"nil logger", WithLogger(nil), "logger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(nc, tc.opt)
			wantField(t, err, tc.field)
		})
	}
	if _, err := New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "rsp")
	path := filepath.Join(dir, "user.nk")

	kp, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	if !nkeys.IsValidPublicUserKey(pub) {
		t.Fatalf("created key %q is not a user key", pub)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("key file mode = %o, want 600", m)
	}
	di, _ := os.Stat(dir)
	if m := di.Mode().Perm(); m != 0o700 {
		t.Errorf("key dir mode = %o, want 700", m)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "SU") {
		t.Errorf("key file holds %q, want a user seed", data)
	}

	again, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if p2, _ := again.PublicKey(); p2 != pub {
		t.Errorf("reloaded key %s, want %s", p2, pub)
	}

	// A decorated seed (as nsc writes .nk/.creds files) loads too.
	seed, _ := kp.Seed()
	deco := filepath.Join(t.TempDir(), "deco.nk")
	text := "-----BEGIN USER NKEY SEED-----\n" + string(seed) + "\n------END USER NKEY SEED------\n"
	if err := os.WriteFile(deco, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := LoadOrCreateKey(deco); err != nil {
		t.Errorf("decorated seed: %v", err)
	} else if p, _ := k.PublicKey(); p != pub {
		t.Errorf("decorated seed gave %s, want %s", p, pub)
	}

	bad := filepath.Join(t.TempDir(), "bad.nk")
	_ = os.WriteFile(bad, []byte("not a seed\n"), 0o600)
	if _, err := LoadOrCreateKey(bad); err == nil {
		t.Error("garbage key file accepted")
	}
	acct, _ := nkeys.CreateAccount()
	aseed, _ := acct.Seed()
	acctFile := filepath.Join(t.TempDir(), "acct.nk")
	_ = os.WriteFile(acctFile, aseed, 0o600)
	_, err = LoadOrCreateKey(acctFile)
	wantField(t, err, "key")
	_, err = LoadOrCreateKey("")
	wantField(t, err, "key")
}

func TestConcurrentKeyCreationAgrees(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k", "user.nk")
	var wg sync.WaitGroup
	pubs := make([]string, 8)
	for i := range pubs {
		wg.Go(func() {
			kp, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
				return
			}
			pubs[i], _ = kp.PublicKey()
		})
	}
	wg.Wait()
	for _, p := range pubs[1:] {
		if p != pubs[0] {
			t.Fatalf("concurrent creators disagree: %v", pubs)
		}
	}
}

func TestSeqMonotonic(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	micro := uint64(now.UnixMicro())
	if got := nextSeq(0, now); got != micro {
		t.Errorf("first seq = %d, want the clock %d", got, micro)
	}
	if got := nextSeq(micro, now); got != micro+1 {
		t.Errorf("same microsecond: seq = %d, want %d", got, micro+1)
	}
	// The clock stepped back: still higher than the last.
	if got := nextSeq(micro+10, now.Add(-time.Second)); got != micro+11 {
		t.Errorf("clock back: seq = %d, want %d", got, micro+11)
	}
	// A restarted process (last = 0) starts above what an earlier one sent.
	earlier := nextSeq(0, now)
	if later := nextSeq(0, now.Add(time.Microsecond)); later <= earlier {
		t.Errorf("after restart seq %d ≤ earlier %d", later, earlier)
	}

	nc := connect(t, startNATS(t))
	c := newClient(t, nc)
	before := uint64(time.Now().UnixMicro())
	var (
		mu   sync.Mutex
		seen = map[uint64]bool{}
		wg   sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			last := uint64(0)
			for range 1000 {
				s := c.nextSeq()
				if s <= last {
					t.Errorf("seq went from %d to %d", last, s)
				}
				last = s
				mu.Lock()
				if seen[s] {
					t.Errorf("seq %d given twice", s)
				}
				seen[s] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for s := range seen {
		if s < before {
			t.Fatalf("seq %d below the clock %d at start", s, before)
		}
	}
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// startGateway serves the default scope over a client of s with the given
// resolution timeout.
func startGateway(t *testing.T, s *natsserver.Server, timeout time.Duration) *httptest.Server {
	t.Helper()
	c, err := rspclient.New(nstest.Connect(t, s), rspclient.WithTimeout(timeout))
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{scopes: map[string]resolver{"default": c}, log: nstest.Logger()}
	hs := httptest.NewServer(g.handler())
	t.Cleanup(hs.Close)
	return hs
}

// register registers PEs ids in pool, each with a tcp transport.
func register(t *testing.T, s *natsserver.Server, pool string, ids ...string) {
	t.Helper()
	pe, err := rspclient.New(nstest.Connect(t, s), rspclient.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, id := range ids {
		tr := []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:" + string(rune('1'+i)) + "000"}}
		if _, err := pe.Register(ctx, pool, rspclient.PE{ID: id, Transports: tr, Lifetime: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
}

// get fetches path and decodes its JSON answer; it checks the content type.
func get(t *testing.T, base, path string) (int, events.ResolveAnswer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q, body %s", path, ct, body)
	}
	var ans events.ResolveAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
	return resp.StatusCode, ans
}

func ids(ans events.ResolveAnswer) []string {
	var out []string
	for _, e := range ans.Elements {
		out = append(out, e.PEID)
	}
	return out
}

// wantError fails unless the answer is status with code and a message
// containing want.
func wantError(t *testing.T, path string, status int, ans events.ResolveAnswer, wantStatus int, code, want string) {
	t.Helper()
	if status != wantStatus || ans.Error == nil || ans.Error.Code != code || !strings.Contains(ans.Error.Message, want) {
		t.Fatalf("GET %s = %d %+v, want %d %s mentioning %q", path, status, ans.Error, wantStatus, code, want)
	}
	if len(ans.Elements) != 0 {
		t.Fatalf("GET %s: error answer with elements %v", path, ids(ans))
	}
}

func TestResolve(t *testing.T) {
	s := nstest.StartNATS(t)
	nstest.StartNameServer(t, s, server.Config{})
	register(t, s, "echo", "a", "b", "c")
	hs := startGateway(t, s, 5*time.Second)

	t.Run("round robin", func(t *testing.T) {
		var firsts []string
		for range 6 {
			status, ans := get(t, hs.URL, "/v1/scopes/default/pools/echo?max=3")
			if status != http.StatusOK || ans.Error != nil {
				t.Fatalf("status %d, error %+v", status, ans.Error)
			}
			if ans.Scope != "default" || ans.Pool != "echo" || ans.Policy != "round_robin" || ans.Revision == 0 {
				t.Fatalf("answer %+v", ans)
			}
			if got := ids(ans); len(got) != 3 {
				t.Fatalf("elements %v, want 3", got)
			}
			if len(ans.Elements[0].Transports) != 1 || ans.Elements[0].Transports[0].Proto != "tcp" {
				t.Fatalf("transports %+v", ans.Elements[0].Transports)
			}
			firsts = append(firsts, ans.Elements[0].PEID)
		}
		seen := map[string]bool{}
		for i, id := range firsts {
			if i < 3 {
				seen[id] = true
			} else if id != firsts[i-3] {
				t.Fatalf("first elements %v: not cyclic", firsts)
			}
		}
		if len(seen) != 3 {
			t.Fatalf("first elements %v: want each PE in turn", firsts)
		}
	})
	t.Run("max", func(t *testing.T) {
		for _, n := range []int{1, 2} {
			path := "/v1/scopes/default/pools/echo?max=" + string(rune('0'+n))
			if status, ans := get(t, hs.URL, path); status != http.StatusOK || len(ans.Elements) != n {
				t.Fatalf("GET %s = %d %v, want %d elements", path, status, ids(ans), n)
			}
		}
	})
	t.Run("exclude", func(t *testing.T) {
		for range 3 {
			status, ans := get(t, hs.URL, "/v1/scopes/default/pools/echo?exclude=a,c&max=3")
			if got := ids(ans); status != http.StatusOK || len(got) != 1 || got[0] != "b" {
				t.Fatalf("exclude a,c = %d %v, want [b]", status, got)
			}
		}
	})
	t.Run("affinity", func(t *testing.T) {
		for range 4 {
			status, ans := get(t, hs.URL, "/v1/scopes/default/pools/echo?affinity=c&max=2&hint.zone=a")
			if got := ids(ans); status != http.StatusOK || len(got) != 2 || got[0] != "c" {
				t.Fatalf("affinity c = %d %v, want c first", status, got)
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			path   string
			status int
			code   string
			want   string
		}{
			{"/v1/scopes/default/pools/nosuch", 404, events.CodeNotFound, "nosuch"},
			{"/v1/scopes/other/pools/echo", 404, events.CodeNotFound, "scope other"},
			{"/v1/scopes/default/pools/echo?max=500", 400, events.CodeBadRequest, "max"},
			{"/v1/scopes/default/pools/echo?max=x", 400, events.CodeBadRequest, "max"},
			{"/v1/scopes/default/pools/echo?max=0", 400, events.CodeBadRequest, "max"},
			{"/v1/scopes/default/pools/_bad", 400, events.CodeBadRequest, "pool"},
			{"/v1/scopes/Bad/pools/echo", 400, events.CodeBadRequest, "scope"},
			{"/v1/scopes/default/pools/echo?exclude=ok,_bad", 400, events.CodeBadRequest, "exclude[1]"},
			{"/v1/scopes/default/pools/echo?affinity=-x", 400, events.CodeBadRequest, "affinity"},
			{"/v1/scopes/default/pools/echo?color=red", 400, events.CodeBadRequest, "color"},
		} {
			status, ans := get(t, hs.URL, tc.path)
			wantError(t, tc.path, status, ans, tc.status, tc.code, tc.want)
			if !strings.HasPrefix(ans.Error.Message, tc.want) && tc.status == 400 {
				t.Fatalf("GET %s: message %q does not name the field %q first", tc.path, ans.Error.Message, tc.want)
			}
		}
	})
	t.Run("healthz", func(t *testing.T) {
		resp, err := http.Get(hs.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz = %d", resp.StatusCode)
		}
	})
}

func TestNoNameServerIsUnavailable(t *testing.T) {
	s := nstest.StartNATS(t)
	ns := nstest.StartNameServer(t, s, server.Config{})
	register(t, s, "echo", "a")
	hs := startGateway(t, s, 2*time.Second)
	if status, _ := get(t, hs.URL, "/v1/scopes/default/pools/echo"); status != http.StatusOK {
		t.Fatalf("with a name server: %d", status)
	}
	ns.Stop()
	start := time.Now()
	path := "/v1/scopes/default/pools/echo"
	status, ans := get(t, hs.URL, path)
	wantError(t, path, status, ans, http.StatusServiceUnavailable, events.CodeUnavailable, "")
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("took %s, want within the client timeout", took)
	}
}

func TestStatusOf(t *testing.T) {
	for code, want := range map[string]int{
		events.CodeBadRequest: 400, events.CodeForbidden: 403, events.CodeNotFound: 404,
		events.CodeConflict: 409, events.CodeStale: 409, events.CodeUnavailable: 503,
	} {
		if got := statusOf(code); got != want {
			t.Errorf("statusOf(%s) = %d, want %d", code, got, want)
		}
	}
}

package main

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/services/nameserver/nstest"
)

// liveAddr is the address of a TCP listener that accepts and closes
// connections until the test ends: a tcp transport that passes a name
// server's check of a reported PE.
func liveAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return l.Addr().String()
}

// serveEcho serves PE id of pool echo in the test process: it echoes the
// data and counts the session's requests in its cookie.
func (e *env) serveEcho(id string) *rspclient.Server {
	e.t.Helper()
	c, err := rspclient.New(nstest.Connect(e.t, e.s))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := c.Serve(ctx, "echo", rspclient.PE{ID: id}, func(_ context.Context, req *rspclient.Request) (*rspclient.Response, error) {
		n, _ := strconv.Atoi(strings.TrimPrefix(req.Cookie, "n="))
		return &rspclient.Response{Data: req.Data, Cookie: "n=" + strconv.Itoa(n+1)}, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Close(ctx)
	})
	return srv
}

func TestCall(t *testing.T) {
	e := newEnv(t, true)
	e.serveEcho("echo-1")

	r := e.run("call", "echo", "hi")
	if r.code != 0 || r.stdout != "echo-1 hi cookie=n=1\n" {
		t.Fatalf("rsp call echo hi: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = e.run("call", "echo", "hello there", "--count", "3", "--interval", "10ms")
	want := "echo-1 hello there cookie=n=1\necho-1 hello there cookie=n=2\necho-1 hello there cookie=n=3\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("rsp call --count 3: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	wantFail(t, e.run("call", "echo"), 2, "POOL DATA")
	wantFail(t, e.run("call", "echo", "hi", "--count", "0"), 2, "--count")
	wantFail(t, e.run("--timeout", "300ms", "call", "nosuchpool", "hi"), 1, "no usable pool element")
	if r := e.run("call", "--help"); r.code != 0 || !strings.Contains(r.stdout, "rsp call echo hi") || !strings.Contains(r.stdout, "fails over") {
		t.Errorf("rsp call --help: exit %d, stdout %q", r.code, r.stdout)
	}
	if r := e.run("register", "--help"); !strings.Contains(r.stdout, "deregisters at once and exits") {
		t.Errorf("rsp register --help does not explain draining: %q", r.stdout)
	}
}

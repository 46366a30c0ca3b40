package main

// Fuzz targets of the gateway's readers of HTTP input: the query of a
// resolution (parseQuery) and the whole endpoint.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/rserpool/rsp/events"
)

// queryOf is the query that asks for req.
func queryOf(req events.ResolveRequest) url.Values {
	q := url.Values{}
	if req.Max != 0 {
		q.Set("max", strconv.Itoa(req.Max))
	}
	if len(req.Exclude) > 0 {
		q.Set("exclude", strings.Join(req.Exclude, ","))
	}
	if req.Affinity != "" {
		q.Set("affinity", req.Affinity)
	}
	for k, v := range req.Hint {
		q.Set("hint."+k, v)
	}
	return q
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "max=5&exclude=echo-3,echo-4&exclude=echo-5&affinity=echo-1&hint.zone=a", "max=0", "max=129", "max=1e2",
		"max=5&max=6", "exclude=%20a%20,,b", "exclude=a%2Cb", "hint.=x", "=1", "hint.zone=a&hint.zone=b", "foo=1", "affinity=bad%20id", "%zz", ";"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r := &http.Request{URL: &url.URL{RawQuery: raw}}
		req, err := parseQuery(r)
		if err != nil {
			// A refusal names the parameter, or the request field, at
			// fault ("query" for a parameter without a name, "=1").
			var fe *events.FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("query %q: error %v does not name a parameter", raw, err)
			}
			return
		}
		if check := req; check.Validate() != nil {
			t.Fatalf("query %q accepted as %+v, which does not validate", raw, req)
		}
		again, err := parseQuery(&http.Request{URL: &url.URL{RawQuery: queryOf(req).Encode()}})
		if err != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("query %q reads %+v; as a query again, %+v (err %v)", raw, req, again, err)
		}
	})
}

// echoResolver answers every request with one element named by the
// request's affinity.
type echoResolver struct{ got *events.ResolveRequest }

func (e echoResolver) Resolve(_ context.Context, pool string, req events.ResolveRequest) (*events.ResolveAnswer, error) {
	*e.got = req
	if pool == "none" {
		return nil, &events.Error{Code: events.CodeNotFound, Message: "no pool none"}
	}
	return &events.ResolveAnswer{Scope: "default", Pool: pool, Elements: []events.Element{{PEID: req.Affinity}}}, nil
}

func FuzzResolveHTTP(f *testing.F) {
	for _, s := range []string{"/v1/scopes/default/pools/echo?max=2", "/v1/scopes/default/pools/none", "/v1/scopes/other/pools/echo",
		"/v1/scopes/Default/pools/echo", "/v1/scopes/default/pools/ech%2Fo", "/v1/scopes/default/pools/echo/x", "/healthz", "/v1/scopes/default/pools/echo?hint.=1"} {
		f.Add(s)
	}
	var got events.ResolveRequest
	g := &gateway{scopes: map[string]resolver{"default": echoResolver{&got}}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	h := g.handler()
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || u.Host != "" || u.Scheme != "" {
			return
		}
		got = events.ResolveRequest{}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, &http.Request{Method: http.MethodGet, URL: u, RequestURI: target, Header: http.Header{}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1})
		if u.Path == "/healthz" || w.Header().Get("Content-Type") != "application/json" {
			return // the health check, or the mux's own answers (404, 405, redirects): no resolution
		}
		var ans events.ResolveAnswer
		if err := events.Decode(w.Body.Bytes(), &ans); err != nil {
			t.Fatalf("%s: answer %d %q is not a resolution answer: %v", target, w.Code, w.Body.Bytes(), err)
		}
		if (w.Code == http.StatusOK) != (ans.Error == nil) {
			t.Fatalf("%s: status %d with answer %s", target, w.Code, w.Body.Bytes())
		}
		if ans.Error == nil && (ans.Pool == "" || len(ans.Elements) != 1 || ans.Elements[0].PEID != got.Affinity) {
			t.Fatalf("%s: answer %s to request %+v", target, w.Body.Bytes(), got)
		}
		if ans.Error != nil && ans.Error.Code == events.CodeBadRequest && !reflect.DeepEqual(got, events.ResolveRequest{}) {
			t.Fatalf("%s: refused %s, yet resolved %+v", target, w.Body.Bytes(), got)
		}
	})
}

package server_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestEventLogLines: every JSON log line about an event (applied,
// refused, a failure report, the check it starts, the removal that
// follows) names the event (event_id, event_seq), its pool and its PE id,
// once each.
func TestEventLogLines(t *testing.T) {
	var out nstest.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := nstest.StartNATS(t)
	nstest.StartNameServer(t, s, server.Config{Logger: log, MaxBadPEReports: 2, CheckTimeout: 200 * time.Millisecond})
	nc := nstest.Connect(t, s)
	owner, other := newSigner(t, nc), newSigner(t, nc)

	reg := registration("pe-1", 1)
	reg.Transports = []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:1"}} // nothing listens: the check fails
	if out := owner.register("logs", reg); !out.Accepted {
		t.Fatalf("register: %+v", out)
	}
	if out := other.register("logs", registration("pe-1", 2)); out.Accepted {
		t.Fatal("another key took over pe-1")
	}
	other.report("logs", "pe-1")

	want := map[string]bool{"event applied": false, "event refused": false, "failure report": false, "PE removed": false}
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing := ""
		for msg, seen := range want {
			if !seen && !strings.Contains(out.String(), `"msg":"`+msg+`"`) {
				missing = msg
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line in:\n%s", missing, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON line: %v: %s", err, line)
		}
		msg, _ := rec["msg"].(string)
		if _, ok := want[msg]; !ok && rec["event_seq"] == nil {
			continue
		}
		if msg == "PE removed" && rec["reason"] != events.ReasonFailed {
			continue
		}
		want[msg] = true
		id, _ := rec["event_id"].(string)
		seq, _ := rec["event_seq"].(float64)
		if id == "" || seq < 1 || rec["pool"] != "logs" || rec["pe_id"] != "pe-1" || rec["scope"] != "default" {
			t.Errorf("line about an event without event_id, event_seq, pool, pe_id or scope: %s", line)
		}
		for _, key := range []string{`"pool":`, `"pe_id":`, `"event_id":`} {
			if strings.Count(line, key) != 1 {
				t.Errorf("%s appears %d times: %s", key, strings.Count(line, key), line)
			}
		}
	}
}

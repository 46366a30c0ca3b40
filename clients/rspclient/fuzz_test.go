package rspclient

// Fuzz target of what a watch makes of the change messages it receives:
// bodies are decoded by events.Decode (fuzzed in package events); the
// merger then decides which are news, whatever order, duplicates and
// revisions the stream brings.

import (
	"bytes"
	"testing"

	"github.com/rserpool/rsp/events"
)

func FuzzMerger(f *testing.F) {
	el := `"element":{"pe_id":"e1","transports":[{"proto":"tcp","addr":"10.0.0.1:7001"}],"policy":{"name":"round_robin"}}`
	add := `{"scope":"default","pool":"echo","revision":5,"op":"add","pe_id":"e1","reason":"registered",` + el + `}`
	upd := `{"scope":"default","pool":"echo","revision":6,"op":"update","pe_id":"e1","reason":"updated",` + el + `}`
	rm := `{"scope":"default","pool":"echo","revision":7,"op":"remove","pe_id":"e1","reason":"deregistered"}`
	for _, s := range []struct {
		barrier uint64
		stream  string
	}{
		{0, add + "\n" + upd + "\n" + rm}, {0, rm + "\n" + add + "\n" + upd}, {5, add + "\n" + add + "\n" + rm + "\n" + rm},
		{0, `{"revision":1,"op":"rename","pe_id":"e1"}`}, {18446744073709551615, add}, {0, "not json\n" + add},
	} {
		f.Add(s.barrier, []byte(s.stream))
	}
	f.Fuzz(func(t *testing.T, barrier uint64, stream []byte) {
		m := newMerger("default", barrier)
		last := map[string]uint64{} // PE id → revision of its last news
		member := map[string]bool{} // PE id → a member, as the news tell
		for line := range bytes.Lines(stream) {
			var ch events.Change
			if events.Decode(line, &ch) != nil {
				continue
			}
			out, news := m.apply(ch)
			if !news {
				continue
			}
			rev, seen := last[ch.PEID]
			switch {
			case out.Revision <= barrier:
				t.Fatalf("news %+v at or below the barrier %d", out, barrier)
			case seen && out.Revision <= rev:
				t.Fatalf("news %+v after news of revision %d", out, rev)
			case out.Op == events.OpRemove && !member[ch.PEID]:
				t.Fatalf("news %+v removes a PE that is no member", out)
			case out.Op != events.OpAdd && out.Op != events.OpUpdate && out.Op != events.OpRemove:
				t.Fatalf("news %+v of no known op", out)
			}
			last[ch.PEID] = out.Revision
			member[ch.PEID] = out.Op != events.OpRemove
		}
	})
}

package chaos

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rserpool/rsp/events"
)

// reasons formats a count per reason: "expired 3, disconnected 1" ("0").
func reasons(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// victims formats what became of the killed PEs: "3/3 removed (expired
// 2, disconnected 1) 1.2-5.8 s after".
func (r *Result) victims() string {
	if len(r.Victims) == 0 {
		return "none"
	}
	removed := 0
	why := map[string]int{}
	var lo, hi time.Duration
	for _, v := range r.Victims {
		if !v.Removed {
			continue
		}
		if removed == 0 || v.After < lo {
			lo = v.After
		}
		hi = max(hi, v.After)
		removed++
		why[v.Reason]++
	}
	if removed == 0 {
		return fmt.Sprintf("0/%d removed", len(r.Victims))
	}
	return fmt.Sprintf("%d/%d removed (%s) %.1f-%.1f s after", removed, len(r.Victims), reasons(why), lo.Seconds(), hi.Seconds())
}

// verdict is PASS or FAIL.
func (r *Result) verdict() string {
	if len(r.Problems()) == 0 {
		return "PASS"
	}
	return "FAIL"
}

// Summary is the fault's figures on one line.
func (r *Result) Summary() string {
	return fmt.Sprintf("%s: PEs lost %s; registrations ended %d; failed resolutions %d of %d (%d during the outage); longest without a full answer %s; slowest resolution %s; killed PEs %s; removals %d published, %d in the bucket",
		r.verdict(), reasons(r.LostByReason()), len(r.Ended), r.Failed, r.Resolutions, r.FailedOutage,
		r.LongestGap.Round(time.Millisecond), r.Slowest.Round(time.Millisecond), r.victims(), r.Published, r.InBucket)
}

// all is the baseline (if any) and the faults' results.
func (rep *Report) all() []*Result {
	if rep.Baseline == nil {
		return rep.Results
	}
	return append([]*Result{rep.Baseline}, rep.Results...)
}

// WriteText writes one block per fault: what was done, the figures, the
// problems.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, r := range rep.all() {
		fmt.Fprintf(&b, "%s", r.Fault)
		switch {
		case r.Node != "":
			fmt.Fprintf(&b, " (kill -9 of %s, %s)", r.Node, r.Detail)
		case r.Fault == FaultNone:
			b.WriteString(" (the load alone)")
		default:
			fmt.Fprintf(&b, " (all name servers stopped for %s)", rep.Config.Outage)
		}
		fmt.Fprintf(&b, ": %s\n", r.verdict())
		fmt.Fprintf(&b, "  PEs lost:                           %s\n", reasons(r.LostByReason()))
		fmt.Fprintf(&b, "  registrations ended:                %d\n", len(r.Ended))
		fmt.Fprintf(&b, "  failed resolutions:                 %d of %d", r.Failed, r.Resolutions)
		if r.Fault == FaultNameServers {
			fmt.Fprintf(&b, " (and %d during the outage, when none can answer)", r.FailedOutage)
		}
		fmt.Fprintf(&b, "\n  longest time without a full answer: %s\n", r.LongestGap.Round(time.Millisecond))
		fmt.Fprintf(&b, "  slowest resolution:                 %s\n", r.Slowest.Round(time.Millisecond))
		fmt.Fprintf(&b, "  killed PEs:                         %s\n", r.victims())
		fmt.Fprintf(&b, "  removals seen:                      %d on the change subject, %d in the bucket, %d of those not published\n",
			r.Published, r.InBucket, len(r.Unpublished))
		for _, p := range r.Problems() {
			fmt.Fprintf(&b, "  problem: %s\n", p)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMarkdown writes the report as Markdown.
func (rep *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	c, m := rep.Config, rep.Machine
	fmt.Fprintf(&b, "# rsp chaos\n\n")
	fmt.Fprintf(&b, "Run %s, took %s, on %s (%d cores, GOMAXPROCS %d, %s, %s).\n\n",
		rep.Started.UTC().Format(time.RFC3339), rep.Took.Round(time.Second), m.CPU, m.Cores, m.GOMAXPROCS, m.Go, m.OS)
	fmt.Fprintf(&b, "A %d-node NATS cluster in this process (embedded servers on loopback, JetStream, operator mode, "+
		"stream and bucket R3), %d name-server replicas at the default settings, %d PEs in %d pools of at most %d, "+
		"registered with rspclient.Register at the default lifetime over %d connections spread over the nodes (registering "+
		"took %s), %d pool users each resolving every pool in turn (max %d, %s pause), and %d PEs per fault, each on its own "+
		"connection, killed during the fault (registration and connection closed, no deregistration).\n\n",
		rep.Nodes, c.NameServers, c.PEs, (c.PEs+c.PoolSize-1)/c.PoolSize, c.PoolSize, c.Conns, rep.RegisterTook.Round(time.Millisecond),
		c.PUs, events.MaxMax, c.ResolvePause, c.Victims)
	fmt.Fprintf(&b, "A node fault kills the node (no graceful shutdown: its connections and routes drop, it hands nothing over), "+
		"kills the PEs %s later, restarts the node after %s (same ports, same data), and watches %s more. The name-server "+
		"fault stops every replica for %s (the PEs die halfway), starts them again and watches %s more.\n\n",
		victimKillAfter, c.Down, c.Settle, c.Outage, c.Settle)
	b.WriteString("- **PEs lost**: removals (on the change subject or in the bucket) of PEs whose registration was still running, by reason.\n")
	b.WriteString("- **registrations ended**: registrations of those PEs whose Done closed.\n")
	b.WriteString("- **failed resolutions**: an error, or an answer missing a live PE of the pool (a full answer holds every live PE; " +
		"one resolution may be retried by the client within its timeout). During a name-server outage nothing can answer: those are counted apart.\n")
	b.WriteString("- **longest without a full answer**: the longest time a pool went without a full answer during the fault " +
		"(from the name servers' restart for the outage); it includes the pool users' own period of going round the pools.\n")
	b.WriteString("- **slowest resolution**: the longest single resolution, the client's retries within its timeout included: the worst blip a pool user saw.\n")
	b.WriteString("- **killed PEs**: removed or not, the reason, how long after their kill.\n\n")
	b.WriteString("The first row, fault none, is the load alone before any fault (its PEs are killed too): when it fails, " +
		"the machine cannot carry the load, whatever the faults.\n\n")
	b.WriteString("| fault | node killed | verdict | PEs lost | registrations ended | failed resolutions | longest without a full answer | slowest resolution | killed PEs | removals on the change subject / in the bucket / not published |\n")
	b.WriteString("|---|---|---|---|---:|---:|---:|---:|---|---:|\n")
	for _, r := range rep.all() {
		node := "-"
		if r.Node != "" {
			node = r.Node + " (" + r.Detail + ")"
		}
		failed := fmt.Sprintf("%d / %d", r.Failed, r.Resolutions)
		if r.Fault == FaultNameServers {
			failed += fmt.Sprintf(" (+%d in the outage)", r.FailedOutage)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %s | %s | %s | %s | %d / %d / %d |\n", r.Fault, node, r.verdict(), reasons(r.LostByReason()),
			len(r.Ended), failed, r.LongestGap.Round(time.Millisecond), r.Slowest.Round(time.Millisecond), r.victims(), r.Published, r.InBucket, len(r.Unpublished))
	}
	for _, r := range rep.all() {
		ps := r.Problems()
		if len(ps) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s: problems\n\n", r.Fault)
		for _, p := range ps {
			fmt.Fprintf(&b, "- %s\n", p)
		}
		for i, l := range r.Lost {
			if i == 10 {
				fmt.Fprintf(&b, "- ... %d more lost\n", len(r.Lost)-10)
				break
			}
			fmt.Fprintf(&b, "- lost %s/%s: %s, %.1f s after the fault began\n", l.Pool, l.PEID, l.Reason, l.At.Sub(r.Start).Seconds())
		}
		for i, e := range r.Ended {
			if i == 10 {
				fmt.Fprintf(&b, "- ... %d more ended\n", len(r.Ended)-10)
				break
			}
			fmt.Fprintf(&b, "- ended %s\n", e)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Write writes the Markdown report to dir/results.md and returns its path.
func (rep *Report) Write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "results.md")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := rep.WriteMarkdown(f); err != nil {
		_ = f.Close()
		return "", err
	}
	return path, f.Close()
}

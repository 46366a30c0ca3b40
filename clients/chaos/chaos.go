// Package chaos runs rsp's fault scenarios on a real cluster it starts in
// the process: three embedded NATS servers (JetStream, R3, operator mode,
// each with its own ports and data), name-server replicas at their
// default settings, PEs registered with rspclient.Register over several
// connections spread over the nodes, pool users resolving every pool in
// a loop, and an observer of every node's change subject and of the
// bucket's stream. Each fault is injected under that load and measured:
// live PEs lost (by reason), registrations ended, failed resolutions, the
// longest time a pool went without a full answer, and what became of the
// PEs killed on purpose during the fault. The load alone is measured the
// same way first (the baseline).
//
// The faults (Fault): kill -9 of the node leading RSP_EVENTS, of the node
// leading the scope bucket's stream, of the JetStream meta leader, of a
// node that PEs are connected to (each then restarted on the same ports
// with the same data); and all name-server replicas stopped for a while,
// then started again. The cluster tests (services/nameserver/chaos) and
// `rsp chaos` both run Run; Result.Problems is the verdict of one fault.
package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/rserpool/rsp/clients/bench"
	"github.com/rserpool/rsp/events"
)

// Fault names one scenario.
type Fault string

// The faults, in the order Run runs them by default.
const (
	// FaultEventsLeader kills the node leading the stream RSP_EVENTS.
	FaultEventsLeader Fault = "events-leader"
	// FaultBucketLeader kills the node leading the scope bucket's stream
	// (KV_rsp_<scope>).
	FaultBucketLeader Fault = "bucket-leader"
	// FaultMetaLeader kills the JetStream meta leader.
	FaultMetaLeader Fault = "meta-leader"
	// FaultPENode kills a node PEs are connected to (every node holds
	// PE connections; the one chosen leads as little as possible).
	FaultPENode Fault = "pe-node"
	// FaultNameServers stops every name-server replica for
	// Config.Outage, then starts them again.
	FaultNameServers Fault = "nameservers"
)

// FaultNone is no fault: the load alone, with its killed PEs, for
// Config.Settle. Run runs it first (Report.Baseline): when it breaks a
// guarantee, the machine cannot carry the load, whatever the faults.
// Faults naming only it run just the baseline.
const FaultNone Fault = "none"

// Faults is every fault, in the default order.
var Faults = []Fault{FaultEventsLeader, FaultBucketLeader, FaultMetaLeader, FaultPENode, FaultNameServers}

// ParseFault checks a fault name.
func ParseFault(s string) (Fault, error) {
	f := Fault(strings.TrimSpace(s))
	if f != FaultNone && !slices.Contains(Faults, f) {
		var names []string
		for _, f := range Faults {
			names = append(names, string(f))
		}
		return "", fmt.Errorf("fault %q is not one of %s, none", s, strings.Join(names, ", "))
	}
	return f, nil
}

// Config is the load and the faults. Zero fields take the defaults.
type Config struct {
	// PEs registered for the whole run (default 500), in pools of at
	// most PoolSize (default 100, at most events.MaxMax, so that one
	// resolution can return a whole pool).
	PEs      int
	PoolSize int
	// Conns is the number of PE connections (default 6), spread evenly
	// over the nodes; each is an rspclient.Client its PEs register with.
	Conns int
	// PUs is the number of pool users (default 3, one per node), each
	// on its own connection, resolving every pool in turn with a pause
	// of ResolvePause (default 50 ms) after each resolution.
	PUs          int
	ResolvePause time.Duration
	// Victims is the number of extra PEs per fault, each on its own
	// connection, killed during the fault (registration and connection
	// closed, no deregistration): they must be removed after it.
	// Default 3; negative: none.
	Victims int
	// NameServers is the number of name-server replicas (default 2, as
	// deploy/local/cluster.sh runs), each at the default settings.
	NameServers int
	// Down is how long a killed node stays down (default 10 s, two
	// default lifetimes); Outage how long the name servers stay stopped
	// (default 60 s).
	Down, Outage time.Duration
	// Settle is how long the load runs on after a fault ended (node
	// restarted and the cluster ready, or the name servers started),
	// still counted in the fault's figures (default 15 s: the killed
	// PEs' lifetime plus elections).
	Settle time.Duration
	// Recover bounds the wait, before each fault, until every pool
	// answers in full and every node is current (default 60 s).
	Recover time.Duration
	// Faults to run, in order; default Faults.
	Faults []Fault
	// NoBaseline skips the load alone (FaultNone) before the faults,
	// unless it is one of Faults.
	NoBaseline bool
	// Dir holds the cluster's data and the auth store; default a
	// temporary folder removed at the end.
	Dir string
	// Progress gets one line per step; nil: none.
	Progress io.Writer
	// Logger gets the NATS servers', name servers' and clients' logs;
	// nil discards them.
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.PEs, 500)
	def(&c.PoolSize, 100)
	def(&c.Conns, 6)
	def(&c.PUs, 3)
	def(&c.Victims, 3)
	def(&c.NameServers, 2)
	defD(&c.ResolvePause, 50*time.Millisecond)
	defD(&c.Down, 10*time.Second)
	defD(&c.Outage, 60*time.Second)
	defD(&c.Settle, 15*time.Second)
	defD(&c.Recover, 60*time.Second)
	if c.Victims < 0 {
		c.Victims = 0
	}
	if len(c.Faults) == 0 {
		c.Faults = Faults
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.PEs < 1 || c.Conns < 1 || c.PUs < 1 || c.NameServers < 1:
		return fmt.Errorf("chaos: PEs, connections, pool users and name servers must be ≥ 1")
	case c.PoolSize < 1 || c.PoolSize > events.MaxMax:
		return fmt.Errorf("chaos: pool size %d is not in 1..%d (a resolution returns at most %d PEs)", c.PoolSize, events.MaxMax, events.MaxMax)
	case c.Down < 0 || c.Outage < 0 || c.Settle < 0:
		return fmt.Errorf("chaos: negative duration")
	}
	for _, f := range c.Faults {
		if _, err := ParseFault(string(f)); err != nil {
			return err
		}
	}
	return nil
}

// Removal is a PE taken out of the name space, as the observer saw it.
type Removal struct {
	Pool, PEID string
	Reason     string    // from the change, or from the bucket's marker
	At         time.Time // when the observer saw it first
	Published  bool      // a remove change came on the change subject
	// InBucket: the observer read its purge/delete marker in the
	// bucket's stream. It may miss one: a bucket keeps one message per
	// key, so a marker the key's next write (the PE registered again)
	// replaced while the observer lagged (the bucket electing a leader)
	// is gone; the change subject still tells.
	InBucket bool
}

// Victim is a PE killed on purpose during a fault.
type Victim struct {
	Pool, PEID string
	Node       string    // the node its connection was on
	KilledAt   time.Time // registration stopped and connection closed
	Removed    bool
	Reason     string        // of its removal
	After      time.Duration // from its kill until its removal was seen
	Published  bool          // its removal came on the change subject
	// LostAlive: it was removed before its kill (counted in Lost too).
	LostAlive bool
}

// Result is one fault's figures, counted from the fault's start until the
// end of its Settle time.
type Result struct {
	Fault  Fault
	Node   string // the node killed (node faults)
	Detail string // what the node led when it was killed, timings
	Start  time.Time
	Took   time.Duration // start until the end of the settle time

	// Lost are removals of PEs whose registration was still running
	// (also of victims before their kill).
	Lost []Removal
	// Ended are the registrations (of live PEs) whose Done closed since
	// the previous fault's end (also during the wait for recovery: the
	// time is relative to Start), with their Err.
	Ended []string
	// Resolutions asked during the fault; Failed of them returned an
	// error or an answer missing a live PE of the pool. During a
	// name-server outage no answer can come: those are counted in
	// FailedOutage, not Failed.
	Resolutions, Failed, FailedOutage int
	// FailedWhy says what was wrong with the first few Failed ones.
	FailedWhy []string
	// LongestGap is the longest time a pool went without a full answer
	// (outside a name-server outage; from its end for FaultNameServers).
	LongestGap time.Duration
	// Slowest is the longest single resolution, the client's own
	// retries within its timeout included (outside an outage): the
	// worst blip a pool user saw.
	Slowest time.Duration
	// Victims are the PEs killed during the fault.
	Victims []Victim
	// Unpublished are removals in the bucket with no remove change on
	// the change subject.
	Unpublished []Removal
	// Published and InBucket count the removals seen on the change
	// subject and in the bucket's stream (the observer's own check).
	Published, InBucket int
	// Recovered is false when, before this fault, the cluster did not
	// get back to full answers within Config.Recover (RecoverErr says
	// why); the fault ran anyway.
	Recovered  bool
	RecoverErr string
}

// LostByReason counts Lost per removal reason.
func (r *Result) LostByReason() map[string]int {
	m := map[string]int{}
	for _, l := range r.Lost {
		m[l.Reason]++
	}
	return m
}

// victimReasons are the right reasons for the removal of a PE whose
// process died: its connection closed (disconnect advisory) or its
// renewals stopped (lifetime).
var victimReasons = []string{events.ReasonDisconnected, events.ReasonExpired}

// Problems lists every way the fault broke rsp's guarantees (issue 14):
// a live PE lost, a registration ended, a failed resolution, a killed PE
// not removed, removed for another reason or not announced on the change
// subject, a removal in the bucket not announced. Empty: the fault passed.
func (r *Result) Problems() []string {
	var p []string
	if len(r.Lost) > 0 {
		p = append(p, fmt.Sprintf("%d live PEs lost %v (first: %s/%s %s)", len(r.Lost), r.LostByReason(), r.Lost[0].Pool, r.Lost[0].PEID, r.Lost[0].Reason))
	}
	if len(r.Ended) > 0 {
		p = append(p, fmt.Sprintf("%d registrations ended (first: %s)", len(r.Ended), r.Ended[0]))
	}
	if r.Failed > 0 {
		p = append(p, fmt.Sprintf("%d of %d resolutions failed or missed live PEs: %s", r.Failed, r.Resolutions, strings.Join(r.FailedWhy, "; ")))
	}
	for _, v := range r.Victims {
		switch {
		case !v.Removed && v.LostAlive:
			p = append(p, fmt.Sprintf("PE %s/%s removed while alive, before its kill, not after it", v.Pool, v.PEID))
		case !v.Removed:
			p = append(p, fmt.Sprintf("killed PE %s/%s not removed", v.Pool, v.PEID))
		case !slices.Contains(victimReasons, v.Reason):
			p = append(p, fmt.Sprintf("killed PE %s/%s removed as %q, want %s", v.Pool, v.PEID, v.Reason, strings.Join(victimReasons, " or ")))
		case !v.Published:
			p = append(p, fmt.Sprintf("removal of killed PE %s/%s not on the change subject", v.Pool, v.PEID))
		}
	}
	if len(r.Unpublished) > 0 {
		p = append(p, fmt.Sprintf("%d removals in the bucket not on the change subject (first: %s/%s %s)", len(r.Unpublished), r.Unpublished[0].Pool, r.Unpublished[0].PEID, r.Unpublished[0].Reason))
	}
	if !r.Recovered {
		p = append(p, "not recovered before the fault: "+r.RecoverErr)
	}
	return p
}

// Report is a run: the setup and one Result per fault.
type Report struct {
	Config  Config
	Machine bench.Machine
	Started time.Time
	Took    time.Duration
	// Setup figures.
	Nodes        int
	RegisterTook time.Duration // registering Config.PEs
	// Baseline is the load alone (FaultNone), before the faults.
	Baseline *Result
	Results  []*Result
}

// Run starts the cluster and the load, runs cfg.Faults one after the
// other, and stops everything. A fault that breaks a guarantee is in its
// Result; an error means the run itself could not go on (the cluster did
// not start, the PEs could not register, ctx ended).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	rep := &Report{Config: cfg, Machine: bench.ThisMachine(), Started: time.Now()}
	w, err := start(ctx, &cfg, rep)
	if w != nil {
		defer w.close()
	}
	if err != nil {
		return rep, err
	}
	if !cfg.NoBaseline || slices.Contains(cfg.Faults, FaultNone) {
		base, err := w.run(ctx, FaultNone)
		rep.Baseline = base
		if err != nil {
			rep.Took = time.Since(rep.Started)
			return rep, err
		}
	}
	for _, f := range cfg.Faults {
		if f == FaultNone {
			continue // the baseline ran
		}
		res, err := w.run(ctx, f)
		if res != nil {
			rep.Results = append(rep.Results, res)
		}
		if err != nil {
			rep.Took = time.Since(rep.Started)
			return rep, err
		}
	}
	rep.Took = time.Since(rep.Started)
	return rep, nil
}

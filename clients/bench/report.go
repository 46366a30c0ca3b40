package bench

import (
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// us formats a duration in microseconds.
func us(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Nanoseconds())/1e3) }

// WriteMarkdown writes the report as Markdown tables.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# rsp bench\n\n")
	fmt.Fprintf(&b, "Run %s, took %s.\n\n", r.Started.UTC().Format(time.RFC3339), r.Took.Round(time.Second))
	fmt.Fprintf(&b, "| machine | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s |\n| cores (runtime.NumCPU) | %d |\n| GOMAXPROCS | %d |\n| Go | %s |\n| OS/arch | %s |\n\n",
		m.CPU, m.Cores, m.GOMAXPROCS, m.Go, m.OS)
	c := r.Config
	fmt.Fprintf(&b, "Everything runs in one process on loopback: an embedded NATS server (JetStream, file storage), "+
		"one name-server replica on its own connection, and the requesters sharing one connection. "+
		"Each measurement: %s warm-up (not recorded), then %s measured; every request's latency is recorded. "+
		"Resolutions ask for %d PEs and are not signature-checked by the requester (raw NATS request, like the echo).\n\n",
		c.Warmup, c.Duration, c.MaxPEs)

	if len(r.Resolve) > 0 {
		fmt.Fprintf(&b, "## Resolution vs. bare NATS echo\n\n")
		fmt.Fprintf(&b, "The echo responder has its own connection to the same server and answers every request with "+
			"a stored rsp answer of the same pool (same payload size). ratio = rsp / echo.\n\n")
		fmt.Fprintf(&b, "| PEs | policy | clients | bytes | rsp req/s | echo req/s | ratio | rsp p50 µs | echo p50 µs | rsp p99 µs | echo p99 µs | p99 ratio | errors rsp/echo |\n")
		fmt.Fprintf(&b, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range r.Resolve {
			fmt.Fprintf(&b, "| %d | %s | %d | %d | %.0f | %.0f | %.2f | %s | %s | %s | %s | %.2f | %d/%d |\n",
				row.PEs, row.Policy, row.Clients, row.Payload,
				row.RSP.PerSec(), row.Echo.PerSec(), Ratio(row.RSP.PerSec(), row.Echo.PerSec()),
				us(row.RSP.P50), us(row.Echo.P50), us(row.RSP.P99), us(row.Echo.P99),
				Ratio(float64(row.RSP.P99), float64(row.Echo.P99)), row.RSP.Errors, row.Echo.Errors)
		}
		b.WriteString("\n")
	}
	if rr := r.Register; rr != nil {
		fmt.Fprintf(&b, "## Registration vs. plain JetStream publish\n\n")
		fmt.Fprintf(&b, "Registrations/s: %d signed registrations of new PEs published asynchronously until every outcome "+
			"has arrived, next to the same messages (same headers and body) published asynchronously to a plain "+
			"file-backed R1 stream until every ack has arrived. Register-to-visible: from the publish of a registration until "+
			"a watcher of the pool's changes has seen the add and a resolution returns the PE, next to a JetStream publish "+
			"round trip of the same message. ratio = rsp / baseline.\n\n", c.Regs)
		fmt.Fprintf(&b, "| measurement | rsp | baseline | ratio | errors rsp/baseline |\n|---|---:|---:|---:|---:|\n")
		if rr.Regs.Ops+rr.Regs.Errors > 0 {
			fmt.Fprintf(&b, "| registrations/s | %.0f | %.0f | %.2f | %d/%d |\n", rr.Regs.PerSec(), rr.Base.PerSec(),
				Ratio(rr.Regs.PerSec(), rr.Base.PerSec()), rr.Regs.Errors, rr.Base.Errors)
		}
		if rr.Visible.Ops+rr.Visible.Errors > 0 {
			fmt.Fprintf(&b, "| register-to-visible p50 µs | %s | %s | %.2f | %d/%d |\n", us(rr.Visible.P50), us(rr.VisibleJS.P50),
				Ratio(float64(rr.Visible.P50), float64(rr.VisibleJS.P50)), rr.Visible.Errors, rr.VisibleJS.Errors)
			fmt.Fprintf(&b, "| register-to-visible p99 µs | %s | %s | %.2f | %d/%d |\n", us(rr.Visible.P99), us(rr.VisibleJS.P99),
				Ratio(float64(rr.Visible.P99), float64(rr.VisibleJS.P99)), rr.Visible.Errors, rr.VisibleJS.Errors)
		}
		b.WriteString("\n")
	}
	// change notifications and memory: changes.go
	r.writeChangesMemory(&b)
	r.writeEtcd(&b) // etcd.go
	_, err := io.WriteString(w, b.String())
	return err
}

// Write writes results.md and, when there are resolution rows,
// resolution.png (throughput of rsp and echo per cell) to dir.
func (r *Report) Write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	md := filepath.Join(dir, "results.md")
	f, err := os.Create(md)
	if err != nil {
		return nil, err
	}
	if err := r.WriteMarkdown(f); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	files := []string{md}
	if len(r.Resolve) > 0 {
		png := filepath.Join(dir, "resolution.png")
		if err := r.plot(png); err != nil {
			return files, fmt.Errorf("plot: %w", err)
		}
		files = append(files, png)
	}
	return files, nil
}

// plot draws rsp and echo throughput side by side for every cell.
func (r *Report) plot(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("rsp resolution vs. NATS echo (%d cores, %s)", r.Machine.Cores, r.Machine.Go)
	p.Y.Label.Text = "requests/s"
	var rspV, echoV plotter.Values
	var names []string
	for _, row := range r.Resolve {
		rspV = append(rspV, row.RSP.PerSec())
		echoV = append(echoV, row.Echo.PerSec())
		names = append(names, fmt.Sprintf("%d/%s/%d", row.PEs, abbrev(row.Policy), row.Clients))
	}
	w := vg.Points(6)
	echoBars, err := plotter.NewBarChart(echoV, w)
	if err != nil {
		return err
	}
	echoBars.Color = plotter.DefaultLineStyle.Color
	echoBars.Offset = -w / 2
	rspBars, err := plotter.NewBarChart(rspV, w)
	if err != nil {
		return err
	}
	rspBars.Color = plotutilColor
	rspBars.Offset = w / 2
	p.Add(echoBars, rspBars)
	p.Legend.Add("echo", echoBars)
	p.Legend.Add("rsp", rspBars)
	p.Legend.Top = true
	p.NominalX(names...)
	p.Y.Min = 0
	p.Y.Max *= 1.2 // room for the legend
	p.X.Tick.Label.Rotation = 1.2
	p.X.Tick.Label.XAlign = -1
	p.X.Label.Text = "PEs / policy / clients"
	width := max(6*vg.Inch, vg.Length(len(names))*0.45*vg.Inch)
	return p.Save(width, 4*vg.Inch, path)
}

func abbrev(policy string) string {
	switch policy {
	case "round_robin":
		return "rr"
	case "least_used":
		return "lu"
	}
	return policy
}

var plotutilColor = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}

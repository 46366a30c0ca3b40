// Command rsp is the command-line client of rsp, Reliable Server Pooling on
// NATS: it registers pool elements, resolves pool handles, watches pools,
// lists the name space and reports failed pool elements.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rserpool/rsp/events"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args and returns the exit status: 0, 1 for a
// failure, 2 for a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "rsp: "+oneLine(err.Error()))
	if isUsage(err) {
		return 2
	}
	return 1
}

// usageError is a bad command line: unknown command or flag, wrong
// arguments, a malformed value.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// isUsage reports whether err comes from the command line rather than from
// doing the work; a name that breaks the protocol's rules counts too.
func isUsage(err error) bool {
	var ue usageError
	var fe *events.FieldError
	return errors.As(err, &ue) || errors.As(err, &fe)
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", "; ")
}

// Package daemon holds what every rsp daemon (the name server, echo, dns,
// proxy, gateway) does the same way: configuration from the environment,
// logging, signals and exit status.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// FromEnv sets each flag not given on the command line from RSP_<NAME>
// (upper case, "-" as "_"); an empty variable counts as unset.
func FromEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(fl *pflag.Flag) {
		env := "RSP_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && v != "" && !fl.Changed && err == nil {
			if e := fs.Set(fl.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	return err
}

// Logger makes the slog logger of --log-level and --log-format, on stderr.
func Logger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not debug, info, warn or error", level)
	}
	ho := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, ho)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}

// RunE is a cobra RunE for a daemon: it reads the flags' environment
// variables, then calls run with a context that ends on SIGINT or SIGTERM.
func RunE(run func(ctx context.Context) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if err := FromEnv(cmd.Flags()); err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return run(ctx)
	}
}

// Main executes a daemon's command; an error is one line "NAME: reason"
// on stderr and exit status 1.
func Main(name string, cmd *cobra.Command) {
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

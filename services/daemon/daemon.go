// Package daemon holds what every rsp daemon (the name server, the echo
// PE) does the same way: configuration from the environment and logging.
package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

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

package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Binary is a program a test package runs as a real process: Pkg is what
// `go build` takes (relative to the test's package), and Path receives
// where it was built.
type Binary struct {
	Name string
	Pkg  string
	Path *string
}

// RunWithBinaries is a TestMain: it builds the binaries once into a
// temporary folder, runs the tests, removes the folder and exits.
func RunWithBinaries(m *testing.M, bins ...Binary) {
	dir, err := os.MkdirTemp("", "rsp-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, b := range bins {
		*b.Path = filepath.Join(dir, b.Name)
		build := exec.Command("go", "build", "-o", *b.Path, b.Pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", b.Name, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

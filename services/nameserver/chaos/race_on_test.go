//go:build race

package chaos_test

// raceEnabled: the race detector slows every part of the in-process
// cluster several times; see faultPEs.
const raceEnabled = true

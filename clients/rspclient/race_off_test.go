//go:build !race

package rspclient

const raceEnabled = false

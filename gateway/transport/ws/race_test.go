//go:build race

package ws_test

// raceEnabled: the race detector's shadow memory multiplies RSS, so RSS
// bounds are checked only without it (allocation bounds always are).
const raceEnabled = true

package coordinator

import (
	"errors"
	"runtime"
	"testing"
)

// deep recurses n frames of about 1 KiB each, growing the stack it runs on.
func deep(n int) int {
	var pad [1024]byte
	pad[n%len(pad)] = byte(n)
	if n == 0 {
		return int(pad[0])
	}
	return deep(n-1) + int(pad[n%len(pad)])
}

// TestOffStack: f's error comes back, and f runs on another goroutine, so
// a deep call in f does not grow the caller's stack (what keeps an idle
// watch's goroutine small).
func TestOffStack(t *testing.T) {
	want := errors.New("boom")
	if err := offStack(func() error { return want }); err != want {
		t.Fatalf("offStack returned %v, want %v", err, want)
	}
	caller := goroutineID()
	var ran uint64
	if err := offStack(func() error { ran = goroutineID(); deep(64); return nil }); err != nil {
		t.Fatal(err)
	}
	if ran == 0 || ran == caller {
		t.Fatalf("f ran on goroutine %d, the caller is %d", ran, caller)
	}
}

// goroutineID parses the running goroutine's id from its stack header.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	var id uint64
	for _, c := range b[len("goroutine "):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}

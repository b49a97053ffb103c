package pkg_test

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestHelperHoldLock is not a test: holdLock runs the test binary with
// HIVE_HOLD_LOCK set to hold an fcntl lock like dpkg and rpm do.
func TestHelperHoldLock(t *testing.T) {
	p := os.Getenv("HIVE_HOLD_LOCK")
	if p == "" {
		t.Skip("helper process only")
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	fmt.Print("locked")
	time.Sleep(time.Hour)
}

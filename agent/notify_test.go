package agent_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSystemdNotify listens on a NOTIFY_SOCKET like systemd does for a
// Type=notify unit with WatchdogSec, and checks the agent's messages:
// READY=1 only after the first run, WATCHDOG=1 pings, STOPPING=1 at stop.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "300000") // 300 ms: pings every 100 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	eng := &fakeEngine{gate: make(chan struct{})}
	a, stop := startAgent(t, testConfig(t, t.TempDir()), eng, testState(1, "/etc/a"))
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 512)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, "READY=1") && want != "READY=1" {
					t.Fatalf("got %q while waiting for %q", m, want)
				}
				if strings.Contains(m, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q within %v", want, within)
			}
		}
	}
	// The first run is held: watchdog pings come, READY does not.
	waitFor(t, "first run", 5*time.Second, func() bool { return eng.count() == 1 })
	next("WATCHDOG=1", 2*time.Second)
	next("WATCHDOG=1", 2*time.Second)
	close(eng.gate)
	next("READY=1", 5*time.Second)
	<-a.Ready()
	stop()
	next("STOPPING=1", 5*time.Second)
}

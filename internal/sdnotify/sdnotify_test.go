package sdnotify

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func listen(t *testing.T) (string, <-chan string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "s")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return p, ch
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no datagram")
		return ""
	}
}

func TestNotifyOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	if err := Notify(MsgReady); !errors.Is(err, ErrNoSocket) {
		t.Fatalf("Notify without socket = %v, want ErrNoSocket", err)
	}
	if err := Ready(); err != nil {
		t.Fatalf("Ready without socket = %v", err)
	}
	if err := Watchdog(context.Background(), nil); err != nil {
		t.Fatalf("Watchdog without WATCHDOG_USEC = %v", err)
	}
}

func TestReadyStoppingStatus(t *testing.T) {
	p, ch := listen(t)
	t.Setenv("NOTIFY_SOCKET", p)
	for _, tc := range []struct {
		f    func() error
		want string
	}{
		{Ready, "READY=1"},
		{func() error { return Status("serving 3 repos") }, "STATUS=serving 3 repos"},
		{Stopping, "STOPPING=1"},
	} {
		if err := tc.f(); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, ch); got != tc.want {
			t.Errorf("sent %q, want %q", got, tc.want)
		}
	}
}

func TestNotifyDeadSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody"))
	if err := Ready(); err == nil {
		t.Fatal("Ready to a socket nobody listens on succeeded")
	}
}

func TestWatchdog(t *testing.T) {
	p, ch := listen(t)
	t.Setenv("NOTIFY_SOCKET", p)
	t.Setenv("WATCHDOG_USEC", "100000") // 100ms: pings every 50ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if got := WatchdogInterval(); got != 100*time.Millisecond {
		t.Fatalf("WatchdogInterval = %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watchdog(ctx, nil) }()
	for i := 0; i < 3; i++ {
		if got := recv(t, ch); got != MsgWatchdog {
			t.Fatalf("ping %d = %q", i, got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watchdog = %v", err)
	}
}

func TestWatchdogUnhealthyStopsPinging(t *testing.T) {
	p, ch := listen(t)
	t.Setenv("NOTIFY_SOCKET", p)
	t.Setenv("WATCHDOG_USEC", "40000")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Watchdog(ctx, func() error { return errors.New("main loop stuck") })
	select {
	case m := <-ch:
		t.Fatalf("unhealthy daemon pinged: %q", m)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestWatchdogOtherPID(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", "1")
	if got := WatchdogInterval(); got != 0 {
		t.Fatalf("WatchdogInterval for another pid = %v, want 0", got)
	}
}

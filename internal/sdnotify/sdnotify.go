// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)) for the hive daemons whose units are Type=notify with
// WatchdogSec: hive-agent, hive-coordinator and hive-repo.
//
// A daemon calls Ready once it serves (listeners open, state loaded), runs
// Watchdog in a goroutine for its lifetime, and calls Stopping when it
// begins a clean shutdown. Outside systemd (NOTIFY_SOCKET unset) every call
// is a cheap no-op, so tests and `--dev` runs need no special casing.
//
// All functions are safe for concurrent use; none blocks for longer than
// one datagram write to a local socket.
package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Message values of the protocol.
const (
	MsgReady     = "READY=1"
	MsgStopping  = "STOPPING=1"
	MsgWatchdog  = "WATCHDOG=1"
	MsgReloading = "RELOADING=1"
)

// ErrNoSocket is returned by Notify when NOTIFY_SOCKET is not set: the
// process does not run under a service manager that listens.
var ErrNoSocket = errors.New("sdnotify: NOTIFY_SOCKET not set")

// Notify sends state (one or more newline-separated KEY=VALUE assignments)
// to the service manager.
func Notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return ErrNoSocket
	}
	if name[0] == '@' { // abstract socket namespace
		name = "\x00" + name[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: dial: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: send: %w", err)
	}
	return nil
}

// notifyQuiet sends state and ignores a missing socket.
func notifyQuiet(state string) error {
	if err := Notify(state); err != nil && !errors.Is(err, ErrNoSocket) {
		return err
	}
	return nil
}

// Ready tells the service manager start-up is complete. A no-op outside
// systemd.
func Ready() error { return notifyQuiet(MsgReady) }

// Stopping tells the service manager a clean shutdown has begun. A no-op
// outside systemd.
func Stopping() error { return notifyQuiet(MsgStopping) }

// Status sets the free-form status line `systemctl status` shows.
func Status(s string) error { return notifyQuiet("STATUS=" + s) }

// WatchdogInterval returns the interval systemd expects pings at
// (WATCHDOG_USEC), or 0 when no watchdog is configured for this process.
func WatchdogInterval() time.Duration {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}

// Watchdog pings the service manager at half the configured watchdog
// interval until ctx is done, and returns nil then. When healthy is not nil,
// a ping is sent only while healthy() returns nil, so a daemon whose main
// loop is stuck stops pinging and systemd restarts it. Without a configured
// watchdog it returns nil at once.
func Watchdog(ctx context.Context, healthy func() error) error {
	iv := WatchdogInterval()
	if iv == 0 {
		return nil
	}
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	for {
		if healthy == nil || healthy() == nil {
			if err := notifyQuiet(MsgWatchdog); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

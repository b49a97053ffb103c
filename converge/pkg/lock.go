package pkg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/hivefleet/hive/converge"
)

// lockHolder returns the pid holding a conflicting fcntl lock on p, or 0.
// A missing file is not locked.
func lockHolder(p string) (int, error) {
	f, err := os.OpenFile(p, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return 0, fmt.Errorf("query lock %s: %w", p, err)
	}
	if lk.Type == syscall.F_UNLCK {
		return 0, nil
	}
	return int(lk.Pid), nil
}

// waitLocks waits until none of the backend's lock files is held, up to
// the configured timeout.
func (p *Provider) waitLocks(ctx context.Context, env *converge.Env, be backend) error {
	files, err := be.lockFiles(ctx)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(p.cfg.LockTimeout)
	logged := false
	for {
		var held string
		var pid int
		for _, f := range files {
			if pid, err = lockHolder(f); err != nil {
				return err
			}
			if pid != 0 {
				held = f
				break
			}
		}
		if held == "" {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w: %s held by pid %d, waited %s", ErrLocked, held, pid, p.cfg.LockTimeout)
		}
		if !logged && env.Logger != nil {
			env.Logger.Info("waiting for package database lock", "file", held, "pid", pid, "timeout", p.cfg.LockTimeout)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.cfg.PollInterval):
		}
	}
}

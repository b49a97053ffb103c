package file

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"

	"github.com/hivefleet/hive/internal/atomicfile"
)

// ledger is the set of host paths into which hive has rendered (or was
// about to render) a secret. The content of such a path is never put in
// a diff, whatever the current resource says: it may hold a secret value
// the node no longer knows (the one before a rotation). A path leaves the
// set only when hive has replaced its content by secret-free content, or
// removed it.
//
// With a file it survives agent restarts; without, it lives as long as the
// Provider. Paths are recorded before the secret is written, so a crash
// cannot leave a rendered secret unrecorded.
type ledger struct {
	file string

	mu     sync.Mutex
	loaded bool
	paths  map[string]bool
}

func (l *ledger) loadLocked() error {
	if l.loaded {
		return nil
	}
	l.paths = map[string]bool{}
	if l.file != "" {
		b, err := os.ReadFile(l.file)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("read secret file ledger: %w", err)
		default:
			var ps []string
			if err := json.Unmarshal(b, &ps); err != nil {
				return fmt.Errorf("secret file ledger %s is corrupt: %w", l.file, err)
			}
			for _, p := range ps {
				l.paths[p] = true
			}
		}
	}
	l.loaded = true
	return nil
}

// has reports whether p may hold a rendered secret.
func (l *ledger) has(p string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.loadLocked(); err != nil {
		return true, err
	}
	return l.paths[p], nil
}

// set records (on) or clears p, persisting the set when it changed.
func (l *ledger) set(p string, on bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.loadLocked(); err != nil {
		return err
	}
	if l.paths[p] == on {
		return nil
	}
	if on {
		l.paths[p] = true
	} else {
		delete(l.paths, p)
	}
	if l.file == "" {
		return nil
	}
	ps := make([]string, 0, len(l.paths))
	for x := range l.paths {
		ps = append(ps, x)
	}
	sort.Strings(ps)
	b, _ := json.Marshal(ps)
	if err := atomicfile.Write(l.file, b, atomicfile.Options{Perm: 0o600, MkdirPerm: 0o700}); err != nil {
		if on {
			delete(l.paths, p)
		} else {
			l.paths[p] = true
		}
		return fmt.Errorf("record secret file ledger: %w", err)
	}
	return nil
}

package file

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// MaxSnapshot bounds the content a confirm window keeps of one file (the
// agent holds it in memory and on disk until the window ends).
const MaxSnapshot = 8 << 20

var _ converge.Snapshotter = (*Provider)(nil)

// snapshot is a path's state before a change with a confirm window: what
// was there (nothing, a regular file, a directory or a symlink), with its
// content, mode and owner. A file whose content may hold a rendered secret
// keeps that mark (the ledger), so that a restore does not lose it.
type snapshot struct {
	Type    string `json:"type"` // "absent", "file", "dir", "symlink"
	Content []byte `json:"content,omitempty"`
	Link    string `json:"link,omitempty"`
	Mode    uint32 `json:"mode,omitempty"` // permission and setuid/setgid/sticky bits
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	Secret  bool   `json:"secret,omitempty"`
}

// Snapshot implements converge.Snapshotter. A directory with contents
// that the change would remove cannot be snapshotted (its tree is not
// kept); nor can a special file or a file larger than MaxSnapshot.
func (p *Provider) Snapshot(ctx context.Context, env *converge.Env, r *hivev1.Resource) ([]byte, error) {
	f := r.GetFile()
	if f == nil {
		return nil, fmt.Errorf("%w: not a file resource", converge.ErrInvalid)
	}
	target, err := hostPath(env, f.GetPath())
	if err != nil {
		return nil, err
	}
	s := snapshot{Type: "absent"}
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return json.Marshal(s)
	case err != nil:
		return nil, fmt.Errorf("stat: %w", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	s.Mode, s.UID, s.GID = unixPerm(fi.Mode()), int(st.Uid), int(st.Gid)
	switch m := fi.Mode(); {
	case m.IsRegular():
		if fi.Size() > MaxSnapshot {
			return nil, fmt.Errorf("%s is %d bytes, more than a confirm window keeps (%d)", f.GetPath(), fi.Size(), MaxSnapshot)
		}
		s.Type = "file"
		if s.Content, err = os.ReadFile(target); err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		if s.Secret, err = p.ledger.has(target); err != nil {
			return nil, err
		}
	case m.IsDir():
		s.Type = "dir"
		if f.GetState() == hivev1.FileState_FILE_STATE_ABSENT {
			ents, err := os.ReadDir(target)
			if err != nil {
				return nil, fmt.Errorf("read directory: %w", err)
			}
			if len(ents) > 0 {
				return nil, fmt.Errorf("directory %s is not empty: its contents cannot be restored", f.GetPath())
			}
		}
	case m&fs.ModeSymlink != 0:
		s.Type = "symlink"
		if s.Link, err = os.Readlink(target); err != nil {
			return nil, fmt.Errorf("readlink: %w", err)
		}
	default:
		return nil, fmt.Errorf("%s is a %s: it cannot be restored", f.GetPath(), typeName(fi))
	}
	return json.Marshal(s)
}

// Restore implements converge.Snapshotter.
func (p *Provider) Restore(ctx context.Context, env *converge.Env, r *hivev1.Resource, b []byte) error {
	f := r.GetFile()
	if f == nil {
		return fmt.Errorf("%w: not a file resource", converge.ErrInvalid)
	}
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("bad snapshot: %w", err)
	}
	target, err := hostPath(env, f.GetPath())
	if err != nil {
		return err
	}
	fi, err := os.Lstat(target)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat: %w", err)
	}
	// What is there now goes unless it is what the snapshot restores in
	// place (a file is replaced atomically, a directory kept).
	if exists && !(s.Type == "file" && fi.Mode().IsRegular()) && !(s.Type == "dir" && fi.IsDir()) {
		if err := os.Remove(target); err != nil {
			return fmt.Errorf("remove: %w", err)
		}
		exists = false
	}
	switch s.Type {
	case "absent":
		if err := p.ledger.set(target, false); err != nil {
			return err
		}
		return syncDir(filepath.Dir(target))
	case "file":
		if s.Secret {
			if err := p.ledger.set(target, true); err != nil {
				return err
			}
		}
		err := atomicfile.Write(target, s.Content, atomicfile.Options{
			Perm:      toFileMode(os.FileMode(s.Mode)),
			MkdirPerm: DefaultDirMode,
			Prepare:   func(f *os.File) error { return f.Chown(s.UID, s.GID) },
		})
		if err != nil {
			return err
		}
		if !s.Secret {
			return p.ledger.set(target, false)
		}
		return nil
	case "dir":
		if !exists {
			if err := os.Mkdir(target, 0o700); err != nil {
				return fmt.Errorf("mkdir: %w", err)
			}
		}
		if err := os.Lchown(target, s.UID, s.GID); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		if err := os.Chmod(target, toFileMode(os.FileMode(s.Mode))); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
		return syncDir(filepath.Dir(target))
	case "symlink":
		if err := os.Symlink(s.Link, target); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		if err := os.Lchown(target, s.UID, s.GID); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		return syncDir(filepath.Dir(target))
	}
	return fmt.Errorf("bad snapshot: unknown type %q", s.Type)
}

// Package atomicfile is hive's one atomic file write: a temporary file in
// the target's directory (or another on its file system) is written,
// prepared (mode, owner), fsync'ed and renamed over the target, then the
// directory is fsync'ed. After a crash the target holds either its old or
// its new content; at worst a temporary file is left behind, named by
// TempPrefix, which RemoveStale deletes (the agent calls it at start for
// the directories it writes in). Write takes the content whole; Create
// returns a Pending for content that is streamed, verified before it
// becomes visible, or named once written. Options add no-clobber (link
// instead of rename), a temporary directory, and, for output rebuilt after
// a crash anyway, no fsync.
//
// Functions are safe for concurrent use on different targets; two writers
// of one target must be serialised by the caller (the last rename wins).
// Everything here blocks on disk I/O.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// tempInfix marks hive's temporary files: ".<base>.hive-tmp-<random>".
const tempInfix = ".hive-tmp-"

// TempPrefix is the prefix of the temporary files written for path (the
// random suffix of os.CreateTemp follows).
func TempPrefix(path string) string { return "." + filepath.Base(path) + tempInfix }

// IsTemp reports whether a directory entry name is a temporary file of
// this package (for any target).
func IsTemp(name string) bool {
	i := strings.LastIndex(name, tempInfix)
	return strings.HasPrefix(name, ".") && i > 0 && allDigits(name[i+len(tempInfix):])
}

// IsTempOf reports whether name is a temporary file of a write to target.
func IsTempOf(name, target string) bool {
	p := TempPrefix(target)
	return strings.HasPrefix(name, p) && allDigits(name[len(p):])
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Options refine a write.
type Options struct {
	// Perm is the file mode (permission and setuid/setgid/sticky bits).
	Perm fs.FileMode
	// Prepare, when set, runs on the temporary file after its content is
	// written and before its mode is set, fsync and rename (e.g. to
	// chown).
	Prepare func(f *os.File) error
	// MkdirPerm, when not zero, creates missing parent directories (of
	// the temporary file on Create, of the target on Commit).
	MkdirPerm fs.FileMode
	// TempDir is where the temporary file is made; it must be on the
	// target's file system. Empty: the target's directory.
	TempDir string
	// NoClobber refuses to replace an existing target: the temporary file
	// is hard-linked to the target instead of renamed, and Commit fails
	// with an error wrapping fs.ErrExist when the target exists (even if
	// it appeared during the write).
	NoClobber bool
	// NoSync skips both fsyncs: readers still see the old or the new
	// content, never a partial one, but a crash may lose the new content
	// (or, on some file systems, leave the target empty). Only for output
	// that is rebuilt after a crash anyway.
	NoSync bool
}

// WriteFile replaces path with data, mode perm.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, data, Options{Perm: perm})
}

// Write replaces path with data. On error the temporary file is removed
// and path is untouched.
func Write(path string, data []byte, o Options) error {
	p, err := Create(path, o)
	if err != nil {
		return err
	}
	defer p.Discard()
	if _, err := p.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return p.Commit()
}

// Pending is a write in progress: a temporary file that replaces its
// target on Commit, for content that is streamed (large files), read back
// or verified before it becomes visible, or named only once written
// (CommitAs). One goroutine uses a Pending at a time.
type Pending struct {
	f      *os.File
	target string
	o      Options
	synced bool
	done   bool
}

// Create starts a write to target: it creates the temporary file (see
// TempPrefix) in o.TempDir or the target's directory. The caller writes
// through Write or File and ends with Commit or Discard (Discard after a
// Commit does nothing, so it can be deferred).
func Create(target string, o Options) (*Pending, error) {
	dir := o.TempDir
	if dir == "" {
		dir = filepath.Dir(target)
	}
	if o.MkdirPerm != 0 {
		if err := os.MkdirAll(dir, o.MkdirPerm); err != nil {
			return nil, fmt.Errorf("create parents of %s: %w", target, err)
		}
	}
	f, err := os.CreateTemp(dir, TempPrefix(target))
	if err != nil {
		return nil, fmt.Errorf("create temp file for %s: %w", target, err)
	}
	return &Pending{f: f, target: target, o: o}, nil
}

// Write writes to the temporary file.
func (p *Pending) Write(b []byte) (int, error) { return p.f.Write(b) }

// File is the temporary file (to write, seek and read back before
// Commit; not to close).
func (p *Pending) File() *os.File { return p.f }

// Sync fsyncs the content now, so that a caller committing many files can
// overlap their fsyncs; Commit then does not repeat it.
func (p *Pending) Sync() error {
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", p.target, err)
	}
	p.synced = true
	return nil
}

// Commit makes the content the target's: Prepare, mode, fsync, rename (or
// link with NoClobber), fsync of the target's directory. On error the
// temporary file is removed and the target is untouched.
func (p *Pending) Commit() error { return p.CommitAs(p.target) }

// CommitAs is Commit to another target (for content-addressed names known
// once the content is written); it must be on the same file system.
func (p *Pending) CommitAs(target string) (err error) {
	if p.done {
		return fmt.Errorf("commit %s: already committed or discarded", target)
	}
	defer func() {
		if err != nil {
			p.Discard()
		}
	}()
	f := p.f
	if p.o.Prepare != nil {
		if err = p.o.Prepare(f); err != nil {
			return err
		}
	}
	// After Prepare: a chown clears the setuid and setgid bits.
	if err = f.Chmod(p.o.Perm); err != nil {
		return fmt.Errorf("chmod %s: %w", target, err)
	}
	if !p.o.NoSync && !p.synced {
		if err = f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", target, err)
		}
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", target, err)
	}
	dir := filepath.Dir(target)
	if p.o.MkdirPerm != 0 {
		if err = os.MkdirAll(dir, p.o.MkdirPerm); err != nil {
			return fmt.Errorf("create parents of %s: %w", target, err)
		}
	}
	if p.o.NoClobber {
		if err = os.Link(f.Name(), target); err != nil {
			return fmt.Errorf("link into place %s: %w", target, err)
		}
		os.Remove(f.Name())
	} else if err = os.Rename(f.Name(), target); err != nil {
		return fmt.Errorf("rename into place %s: %w", target, err)
	}
	p.done = true
	if p.o.NoSync {
		return nil
	}
	return SyncDir(dir)
}

// Discard removes the temporary file; the target is untouched. It does
// nothing after Commit.
func (p *Pending) Discard() {
	if p.done {
		return
	}
	p.done = true
	p.f.Close()
	os.Remove(p.f.Name())
}

// SyncDir fsyncs a directory, making a rename or removal in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir: %w", err)
	}
	return nil
}

// RemoveStale deletes the regular files in dir whose names match (IsTemp
// when match is nil) and returns their paths. A missing dir is not an
// error. Nothing else is touched: no other files, no subdirectories, no
// symlinks.
func RemoveStale(dir string, match func(name string) bool) ([]string, error) {
	if match == nil {
		match = IsTemp
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if !e.Type().IsRegular() || !match(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

// Package atomicfile is hive's one atomic file write: a temporary file in
// the target's directory is written, prepared (mode, owner), fsync'ed and
// renamed over the target, then the directory is fsync'ed. After a crash
// the target holds either its old or its new content; at worst a
// temporary file is left behind, named by TempPrefix, which RemoveStale
// deletes (the agent calls it at start for the directories it writes in).
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
	// MkdirPerm, when not zero, creates missing parent directories.
	MkdirPerm fs.FileMode
}

// WriteFile replaces path with data, mode perm.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, data, Options{Perm: perm})
}

// Write replaces path with data. On error the temporary file is removed
// and path is untouched.
func Write(path string, data []byte, o Options) (err error) {
	dir := filepath.Dir(path)
	if o.MkdirPerm != 0 {
		if err := os.MkdirAll(dir, o.MkdirPerm); err != nil {
			return fmt.Errorf("create parents of %s: %w", path, err)
		}
	}
	f, err := os.CreateTemp(dir, TempPrefix(path))
	if err != nil {
		return fmt.Errorf("create temp file for %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if o.Prepare != nil {
		if err = o.Prepare(f); err != nil {
			return err
		}
	}
	// After Prepare: a chown clears the setuid and setgid bits.
	if err = f.Chmod(o.Perm); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename into place %s: %w", path, err)
	}
	return SyncDir(dir)
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

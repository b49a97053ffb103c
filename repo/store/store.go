// Package store keeps blobs content-addressed by SHA-256 under one directory
// (blobs/<2 hex>/<64 hex>) and writes files atomically with internal/atomicfile
// (temporary file in the store's tmp directory, fsync, rename, directory
// fsync).
//
// A blob is immutable once committed: readers may open it at any time without
// locks. Writers stream into a Pending blob that is hashed on the way and
// becomes visible only on Commit, so a refused or failed upload leaves nothing
// behind. All methods are safe for concurrent use; Put blocks on disk I/O.
package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/hivefleet/hive/internal/atomicfile"
)

// ErrTooLarge is returned by Put when the stream exceeds the size limit.
var ErrTooLarge = errors.New("blob exceeds size limit")

// ErrNotFound is returned by Open for an unknown blob.
var ErrNotFound = errors.New("blob not found")

// Store is a directory of content-addressed blobs.
type Store struct {
	dir string
	tmp string
}

// Open opens (creating if needed) the store rooted at dir.
func Open(dir string) (*Store, error) {
	s := &Store{dir: filepath.Join(dir, "blobs"), tmp: filepath.Join(dir, "tmp")}
	for _, d := range []string{s.dir, s.tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	// Leftovers of interrupted writes.
	if ents, err := os.ReadDir(s.tmp); err == nil {
		for _, e := range ents {
			os.Remove(filepath.Join(s.tmp, e.Name()))
		}
	}
	return s, nil
}

// ValidSum reports whether sum is a lower-case SHA-256 hex string.
func ValidSum(sum string) bool {
	if len(sum) != 64 {
		return false
	}
	for _, c := range sum {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Path returns where the blob sum lives (whether or not it exists).
func (s *Store) Path(sum string) string { return filepath.Join(s.dir, sum[:2], sum) }

// Has reports whether the blob exists.
func (s *Store) Has(sum string) bool {
	if !ValidSum(sum) {
		return false
	}
	_, err := os.Stat(s.Path(sum))
	return err == nil
}

// Open opens a blob for reading.
func (s *Store) Open(sum string) (*os.File, error) {
	if !ValidSum(sum) {
		return nil, ErrNotFound
	}
	f, err := os.Open(s.Path(sum))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return f, err
}

// Pending is a blob written but not yet committed.
type Pending struct {
	s    *Store
	p    *atomicfile.Pending
	Sum  string
	Size int64
}

// blobOptions are the atomic-write options of blobs and the files written
// with them: temporary files in the store's tmp directory, 0644.
func (s *Store) blobOptions() atomicfile.Options {
	return atomicfile.Options{Perm: 0o644, TempDir: s.tmp, MkdirPerm: 0o755}
}

// Put streams r into a pending blob, refusing more than max bytes (max <= 0:
// no limit). The caller must Commit or Discard it. The data is made durable
// by Commit.
func (s *Store) Put(r io.Reader, max int64) (*Pending, error) {
	// The name is known once the content is: committed with CommitAs.
	p, err := atomicfile.Create(filepath.Join(s.tmp, "put"), s.blobOptions())
	if err != nil {
		return nil, fmt.Errorf("store put: %w", err)
	}
	h := sha256.New()
	src := r
	if max > 0 {
		src = io.LimitReader(r, max+1)
	}
	n, err := io.Copy(io.MultiWriter(p, h), src)
	if err == nil && max > 0 && n > max {
		err = ErrTooLarge
	}
	// No fsync yet: a blob refused by verification never needs one; Commit
	// syncs it together with the files that will refer to it.
	if err != nil {
		p.Discard()
		if errors.Is(err, ErrTooLarge) {
			return nil, err
		}
		return nil, fmt.Errorf("store put: %w", err)
	}
	if _, err := p.File().Seek(0, io.SeekStart); err != nil {
		p.Discard()
		return nil, fmt.Errorf("store put: %w", err)
	}
	return &Pending{s: s, p: p, Sum: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// PutBytes stores b and returns its sum.
func (s *Store) PutBytes(b []byte) (string, error) {
	sum := sha256.Sum256(b)
	h := hex.EncodeToString(sum[:])
	if s.Has(h) {
		return h, nil
	}
	if err := os.MkdirAll(filepath.Dir(s.Path(h)), 0o755); err != nil {
		return "", fmt.Errorf("store put: %w", err)
	}
	if err := WriteFile(s.Path(h), b, s.tmp); err != nil {
		return "", err
	}
	return h, nil
}

// File is a file written atomically beside blobs (see PutAll and Commit).
type File struct {
	Path string
	Data []byte
}

// PutAll stores several blobs and returns their sums, then writes the files
// also. All data is written first and fsync'ed concurrently (one journal
// commit can cover them all), then each blob is renamed into place, and the
// files last: a file written here may refer to the blobs.
func (s *Store) PutAll(blobs [][]byte, also ...File) ([]string, error) {
	sums := make([]string, len(blobs))
	for i, b := range blobs {
		sum := sha256.Sum256(b)
		sums[i] = hex.EncodeToString(sum[:])
	}
	return sums, s.PutSums(blobs, sums, also...)
}

// PutSums is PutAll for blobs whose sums the caller already computed
// (sums[i] must be the SHA-256 hex of blobs[i]).
func (s *Store) PutSums(blobs [][]byte, sums []string, also ...File) error {
	var ps []*atomicfile.Pending
	defer func() {
		for _, p := range ps {
			p.Discard() // no-op once committed
		}
	}()
	write := func(b []byte, dst string) error {
		p, err := atomicfile.Create(dst, s.blobOptions())
		if err != nil {
			return err
		}
		ps = append(ps, p)
		_, err = p.Write(b)
		return err
	}
	for i, b := range blobs {
		if s.Has(sums[i]) {
			continue
		}
		if err := write(b, s.Path(sums[i])); err != nil {
			return fmt.Errorf("store put: %w", err)
		}
	}
	for _, f := range also {
		if err := write(f.Data, f.Path); err != nil {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
	}
	if err := syncAll(ps); err != nil {
		return fmt.Errorf("store put: %w", err)
	}
	for _, p := range ps {
		if err := p.Commit(); err != nil {
			return fmt.Errorf("store put: %w", err)
		}
	}
	return nil
}

// syncAll fsyncs the pending files concurrently (one journal commit can
// cover them all).
func syncAll(ps []*atomicfile.Pending) error {
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = p.Sync() }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// File is the pending blob's temporary file, positioned at its start, for
// verifying the content before Commit.
func (p *Pending) File() *os.File { return p.p.File() }

// Commit makes the blob durable and visible under its sum, then writes the
// files also (which may refer to it) atomically. The blob and the files are
// fsync'ed concurrently, before any of them is renamed into place.
func (p *Pending) Commit(also ...File) error {
	ps := []*atomicfile.Pending{p.p}
	defer func() {
		for _, q := range ps {
			q.Discard() // no-op once committed
		}
	}()
	for _, a := range also {
		q, err := atomicfile.Create(a.Path, p.s.blobOptions())
		if err == nil {
			ps = append(ps, q)
			_, err = q.Write(a.Data)
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", a.Path, err)
		}
	}
	if err := syncAll(ps); err != nil {
		return fmt.Errorf("store commit: %w", err)
	}
	if err := p.p.CommitAs(p.s.Path(p.Sum)); err != nil {
		return fmt.Errorf("store commit: %w", err)
	}
	for i, q := range ps[1:] {
		if err := q.Commit(); err != nil {
			return fmt.Errorf("write %s: %w", also[i].Path, err)
		}
	}
	return nil
}

// Discard drops the pending blob.
func (p *Pending) Discard() { p.p.Discard() }

// Remove deletes a blob (garbage collection); a missing blob is not an error.
func (s *Store) Remove(sum string) error {
	if !ValidSum(sum) {
		return nil
	}
	err := os.Remove(s.Path(sum))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// List returns every blob's sum.
func (s *Store) List() ([]string, error) {
	var out []string
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && ValidSum(d.Name()) {
			out = append(out, d.Name())
		}
		return nil
	})
	return out, err
}

// TempDir is where WriteFile callers inside the store's file system may put
// temporary files.
func (s *Store) TempDir() string { return s.tmp }

// WriteFile writes data to path atomically: a temporary file in tmpDir (or in
// path's directory when tmpDir is ""), fsync, rename. On error nothing is
// left at path that was not there before.
func WriteFile(path string, data []byte, tmpDir string) error {
	return writeFile(path, data, tmpDir, true)
}

// WriteFileNoSync is WriteFile without the fsync: readers still see the old
// or the new file, never a partial one, but a crash may lose the new
// content. For batch jobs that are simply re-run after a crash.
func WriteFileNoSync(path string, data []byte, tmpDir string) error {
	return writeFile(path, data, tmpDir, false)
}

func writeFile(path string, data []byte, tmpDir string, sync bool) error {
	if err := atomicfile.Write(path, data, atomicfile.Options{Perm: 0o644, TempDir: tmpDir, NoSync: !sync}); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

package converge

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrPathEscape is returned by SecureJoin for a path that is not absolute,
// contains "..", or whose symlinks lead outside the root.
var ErrPathEscape = errors.New("path escapes the root")

// SecureJoin resolves the absolute path p of the managed machine inside
// root, following symlinks as a chroot would (an absolute link target is
// taken relative to root). It rejects relative paths, ".." components and
// link targets that climb above root, so nothing it returns is outside
// root. Components that do not exist yet are joined as they are.
func SecureJoin(root, p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%q: not absolute: %w", p, ErrPathEscape)
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", fmt.Errorf("%q: contains \"..\": %w", p, ErrPathEscape)
		}
	}
	root = filepath.Clean(root)
	if root == "/" {
		return filepath.Clean(p), nil
	}
	var done []string // resolved components below root
	todo := splitPath(p)
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				return "", fmt.Errorf("%q: symlink leads above the root: %w", p, ErrPathEscape)
			}
			done = done[:len(done)-1]
			continue
		}
		cur := filepath.Join(root, filepath.Join(append(done, c)...))
		fi, err := os.Lstat(cur)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		hops++
		if hops > 40 {
			return "", fmt.Errorf("%q: too many symlinks: %w", p, ErrPathEscape)
		}
		target, err := os.Readlink(cur)
		if err != nil {
			return "", fmt.Errorf("read link %s: %w", cur, err)
		}
		if strings.HasPrefix(target, "/") {
			done = done[:0]
		}
		todo = append(splitPath(target), todo...)
	}
	return filepath.Join(root, filepath.Join(done...)), nil
}

func splitPath(p string) []string {
	return strings.Split(strings.Trim(p, "/"), "/")
}

package converge

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// IDs resolves user and group names in the managed root's /etc/passwd and
// /etc/group (the host's when the root has none, as a fresh sandbox root),
// each read once. One IDs serves one batch: accounts made by an earlier
// batch of the same run are read fresh by the next.
type IDs struct {
	Root  string
	files map[string]map[string]int
}

// NoAccountError is the error of a name missing from /etc/passwd or
// /etc/group.
type NoAccountError struct{ msg string }

func (e *NoAccountError) Error() string { return e.msg }

// Lookup returns the id of name in db ("passwd" or "group"). A number is
// its own id; "root" is 0 even in a root without /etc/passwd.
func (c *IDs) Lookup(db, name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	if name == "root" {
		return 0, nil
	}
	if c.files == nil {
		c.files = map[string]map[string]int{}
	}
	m, ok := c.files[db]
	if !ok {
		root := c.Root
		if root == "" {
			root = "/"
		}
		p, err := SecureJoin(root, "/etc/"+db)
		if err != nil {
			return -1, err
		}
		m, err = readIDs(p)
		if errors.Is(err, fs.ErrNotExist) && root != "/" {
			// A sandbox root without accounts: the host's names.
			m, err = readIDs("/etc/" + db)
		}
		if err != nil {
			return -1, fmt.Errorf("read ids: %w", err)
		}
		c.files[db] = m
	}
	id, ok := m[name]
	if !ok {
		what := "user"
		if db == "group" {
			what = "group"
		}
		return -1, &NoAccountError{msg: fmt.Sprintf("%s %q not found in /etc/%s", what, name, db)}
	}
	return id, nil
}

// readIDs reads name → id from a passwd or group file; the first entry of
// a name wins, as getpwnam(3) answers.
func readIDs(p string) (map[string]int, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ":")
		if len(parts) < 3 {
			continue
		}
		if id, err := strconv.Atoi(parts[2]); err == nil {
			if _, dup := m[parts[0]]; !dup {
				m[parts[0]] = id
			}
		}
	}
	return m, sc.Err()
}

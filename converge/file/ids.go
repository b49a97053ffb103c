package file

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/hivefleet/hive/converge"
)

// idCache resolves user and group names in the managed root's
// /etc/passwd and /etc/group (the host's when the root has none, as a
// fresh sandbox root), read once per batch.
type idCache struct {
	root  string
	files map[string]map[string]int
}

func (c *idCache) lookup(db, name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	if name == "root" {
		return 0, nil // uid and gid 0, even in a root without /etc/passwd
	}
	if c.files == nil {
		c.files = map[string]map[string]int{}
	}
	m, ok := c.files[db]
	if !ok {
		root := c.root
		if root == "" {
			root = "/"
		}
		p, err := converge.SecureJoin(root, "/etc/"+db)
		if err != nil {
			return -1, err
		}
		m, err = readIDs(p)
		if errors.Is(err, fs.ErrNotExist) && root != "/" {
			// A sandbox root without accounts: the host's names.
			m, err = readIDs("/etc/" + db)
		}
		if err != nil {
			return -1, err
		}
		c.files[db] = m
	}
	id, ok := m[name]
	if !ok {
		what := "user"
		if db == "group" {
			what = "group"
		}
		return -1, fmt.Errorf("%s %q not found in /etc/%s", what, name, db)
	}
	return id, nil
}

func readIDs(p string) (map[string]int, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read ids: %w", err)
	}
	defer f.Close()
	m := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ":")
		if len(fs) < 3 {
			continue
		}
		if id, err := strconv.Atoi(fs[2]); err == nil {
			m[fs[0]] = id
		}
	}
	return m, sc.Err()
}

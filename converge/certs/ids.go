package certs

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hivefleet/hive/converge"
)

// idCache resolves user and group names in the managed root's
// /etc/passwd and /etc/group (the host's when the root has none), read
// once per batch, as the file provider does.
type idCache struct {
	root  string
	files map[string]map[string]int
}

func (c *idCache) lookup(db, name string) (int, error) {
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

// owner returns a file's uid and gid.
func owner(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

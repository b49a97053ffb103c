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
		return -1, &noAccountError{msg: fmt.Sprintf("%s %q not found in /etc/%s", what, name, db)}
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

// noAccountError is the error of a name missing from /etc/passwd or
// /etc/group.
type noAccountError struct{ msg string }

func (e *noAccountError) Error() string { return e.msg }

// pendingAccount reports whether a failed lookup of name in db ("passwd"
// or "group") is only because the account is planned, not made, in this
// dry run: the engine orders a file after the user and group resources
// that own it (converge.ImplicitRequires), so in a dry run they are in
// the batch's Changed set when they would be created. A group may be a
// user's own group, which useradd makes with the user. Outside a dry run
// the account exists by then, or the lookup error stands.
func pendingAccount(env *converge.Env, b *converge.Batch, db, name string, err error) bool {
	if !env.DryRun || b == nil || !errors.As(err, new(*noAccountError)) {
		return false
	}
	if db == "passwd" {
		return b.Changed["user:"+name]
	}
	return b.Changed["group:"+name] || b.Changed["user:"+name]
}

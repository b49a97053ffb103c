package users

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/hivefleet/hive/converge"
)

// account is one /etc/passwd line.
type account struct {
	name    string
	uid     uint32
	gid     uint32
	comment string
	home    string
	shell   string
}

// group is one /etc/group line.
type group struct {
	name    string
	gid     uint32
	members []string
}

// db is the account database of a root, read from its files (the tools'
// own database, in machine-readable form).
type db struct {
	users  map[string]account
	groups map[string]group
	gids   map[uint32]string
	// hashes from /etc/shadow, by user.
	hashes map[string]string
}

// loadDB reads /etc/passwd, /etc/group and /etc/shadow of env's root.
func loadDB(env *converge.Env) (*db, error) {
	d := &db{users: map[string]account{}, groups: map[string]group{}, gids: map[uint32]string{}, hashes: map[string]string{}}
	err := eachLine(env, "/etc/passwd", 7, func(f []string) error {
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("bad uid or gid for %s", f[0])
		}
		d.users[f[0]] = account{name: f[0], uid: uint32(uid), gid: uint32(gid), comment: f[4], home: f[5], shell: f[6]}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachLine(env, "/etc/group", 4, func(f []string) error {
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return fmt.Errorf("bad gid for %s", f[0])
		}
		g := group{name: f[0], gid: uint32(gid)}
		if f[3] != "" {
			g.members = strings.Split(f[3], ",")
		}
		d.groups[f[0]] = g
		if _, dup := d.gids[g.gid]; !dup {
			d.gids[g.gid] = g.name
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachLine(env, "/etc/shadow", 2, func(f []string) error {
		d.hashes[f[0]] = f[1]
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return d, nil
}

// eachLine calls fn with the ':'-separated fields (at least min) of every
// non-empty, non-comment line of the root's file p.
func eachLine(env *converge.Env, p string, min int, fn func([]string) error) error {
	hp, err := env.Path(p)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(hp)
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "+") || strings.HasPrefix(line, "-") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < min {
			return fmt.Errorf("%s:%d: %d fields, want %d", p, n, len(f), min)
		}
		if err := fn(f); err != nil {
			return fmt.Errorf("%s:%d: %w", p, n, err)
		}
	}
	return sc.Err()
}

// memberOf returns the groups listing user as a member, sorted.
func (d *db) memberOf(user string) []string {
	var out []string
	for _, g := range d.groups {
		for _, m := range g.members {
			if m == user {
				out = append(out, g.name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

package users

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// KindUser is the kind of UserProvider.
const KindUser = "user"

var userLedger = ledger{path: "/var/lib/hive/users.json"}

// UserProvider converges "user:" resources.
type UserProvider struct{}

// NewUsers returns the user provider.
func NewUsers() *UserProvider { return &UserProvider{} }

var (
	_ converge.Provider  = (*UserProvider)(nil)
	_ converge.Validator = (*UserProvider)(nil)
	_ converge.Linker    = (*UserProvider)(nil)
	_ converge.Pruner    = (*UserProvider)(nil)
)

// Kind implements converge.Provider.
func (*UserProvider) Kind() string { return KindUser }

// Validate implements converge.Validator with the site's rules.
func (*UserProvider) Validate(r *hivev1.Resource) error {
	u := r.GetUser()
	if u == nil {
		return fmt.Errorf("%w: not a user resource", converge.ErrInvalid)
	}
	errs := []error{site.CheckAccountName("user", u.GetName()), site.CheckGecos(u.GetComment())}
	for _, g := range append([]string{u.GetGroup()}, u.GetGroups()...) {
		if g != "" {
			errs = append(errs, site.CheckAccountName("group", g))
		}
	}
	if u.GetHome() != "" {
		errs = append(errs, site.CheckAccountPath("home", u.GetHome()))
	}
	if u.GetShell() != "" {
		errs = append(errs, site.CheckAccountPath("shell", u.GetShell()))
	}
	for _, k := range u.GetAuthorizedKeys() {
		errs = append(errs, site.CheckAuthorizedKey(k))
	}
	for _, rule := range u.GetSudo() {
		errs = append(errs, site.CheckSudoRule(rule))
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
		}
	}
	return nil
}

// Requires implements converge.Linker: a user converges after its groups
// and, with sudo rules, the sudo package.
func (*UserProvider) Requires(r *hivev1.Resource, _ []*hivev1.Resource) []string {
	u := r.GetUser()
	var out []string
	for _, g := range append([]string{u.GetGroup()}, u.GetGroups()...) {
		if g != "" {
			out = append(out, KindGroup+":"+g)
		}
	}
	if len(u.GetSudo()) > 0 {
		out = append(out, converge.KindPackage+":sudo")
	}
	return out
}

// userPlan is what Apply does for one user.
type userPlan struct {
	name   string
	create []string // useradd arguments
	modify []string // usermod arguments, name excluded
	del    []string // userdel arguments
	// chpasswd holds "name:hash\n": a secret, never printed.
	chpasswd []byte
	keys     []byte // authorized_keys content, nil: not managed or unchanged
	sudo     *sudoPlan
	forget   bool
}

// Plan implements converge.Provider.
func (p *UserProvider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	d, err := loadDB(env)
	if err != nil {
		return nil, err
	}
	out := make([]*converge.Change, 0, len(b.Items))
	for _, it := range b.Items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := &converge.Change{Key: it.Key, Resource: it.Resource}
		out = append(out, c)
		up, sums, err := planUser(ctx, env, d, b.Changed, it.Key, it.Resource.GetUser())
		if err != nil {
			c.Err = err
			continue
		}
		if len(sums) > 0 {
			c.Needed, c.Data, c.Summary = true, up, strings.Join(sums, "; ")
			c.Diff = strings.Join(sums, "\n") + "\n"
		}
	}
	return out, nil
}

// groupKnown reports whether group g exists or a group resource of this
// run creates it.
func groupKnown(d *db, changed map[string]bool, g string) bool {
	_, ok := d.groups[g]
	return ok || changed[KindGroup+":"+g]
}

func planUser(ctx context.Context, env *converge.Env, d *db, changed map[string]bool, key string, u *hivev1.User) (*userPlan, []string, error) {
	up := &userPlan{name: u.GetName()}
	var sums []string
	cur, exists := d.users[u.GetName()]
	if u.GetAbsent() {
		if exists {
			up.del = []string{u.GetName()}
			s := "delete user " + u.GetName() + " (home kept)"
			if u.GetRemoveHome() {
				up.del = []string{"--remove", u.GetName()}
				s = "delete user " + u.GetName() + " and its home " + cur.home
			}
			sums = append(sums, s)
		}
		sp, sum, err := planSudo(ctx, env, sudoPath("user", u.GetName()), nil)
		if err != nil {
			return nil, nil, err
		}
		if sp != nil {
			up.sudo = sp
			sums = append(sums, sum)
		}
		return up, sums, nil
	}
	for _, g := range append([]string{u.GetGroup()}, u.GetGroups()...) {
		if g != "" && !groupKnown(d, changed, g) {
			return nil, nil, fmt.Errorf("unknown group %q: not in the root's /etc/group and no group resource of this node creates it", g)
		}
	}
	if u.Uid != nil {
		for _, o := range d.users {
			if o.uid == u.GetUid() && o.name != u.GetName() {
				return nil, nil, fmt.Errorf("uid %d is already used by user %s", u.GetUid(), o.name)
			}
		}
	}
	want := slices.Clone(u.GetGroups())
	sort.Strings(want)
	want = slices.Compact(want)
	home := u.GetHome()
	if !exists {
		var args []string
		if u.Uid != nil {
			args = append(args, "--uid", strconv.FormatUint(uint64(u.GetUid()), 10))
		}
		switch {
		case u.GetGroup() != "":
			args = append(args, "--gid", u.GetGroup())
		case groupKnown(d, changed, u.GetName()):
			// useradd refuses to make the user's own group when it exists.
			args = append(args, "--gid", u.GetName())
		}
		if len(want) > 0 {
			args = append(args, "--groups", strings.Join(want, ","))
		}
		if home != "" {
			args = append(args, "--home-dir", home)
		}
		if u.GetShell() != "" {
			args = append(args, "--shell", u.GetShell())
		}
		if u.GetComment() != "" {
			args = append(args, "--comment", u.GetComment())
		}
		if u.GetSystem() {
			args = append(args, "--system", "--no-create-home")
		} else {
			args = append(args, "--create-home")
		}
		up.create = append(args, u.GetName())
		s := "create user " + u.GetName()
		if u.Uid != nil {
			s += fmt.Sprintf(" (uid %d)", u.GetUid())
		}
		sums = append(sums, s)
		if home == "" {
			home = "/home/" + u.GetName()
		}
	} else {
		if home == "" {
			home = cur.home
		}
		var mod []string
		if u.Uid != nil && cur.uid != u.GetUid() {
			mod = append(mod, "--uid", strconv.FormatUint(uint64(u.GetUid()), 10))
			sums = append(sums, fmt.Sprintf("uid %d → %d", cur.uid, u.GetUid()))
		}
		if g := u.GetGroup(); g != "" {
			if pg, ok := d.groups[g]; !ok || pg.gid != cur.gid {
				mod = append(mod, "--gid", g)
				sums = append(sums, fmt.Sprintf("primary group %s → %s", d.gids[cur.gid], g))
			}
		}
		if len(want) > 0 {
			if have := d.memberOf(u.GetName()); !slices.Equal(have, want) {
				mod = append(mod, "--groups", strings.Join(want, ","))
				sums = append(sums, fmt.Sprintf("groups %s → %s", strings.Join(have, ","), strings.Join(want, ",")))
			}
		}
		if u.GetHome() != "" && cur.home != u.GetHome() {
			mod = append(mod, "--home", u.GetHome())
			sums = append(sums, fmt.Sprintf("home %s → %s", cur.home, u.GetHome()))
		}
		if u.GetShell() != "" && cur.shell != u.GetShell() {
			mod = append(mod, "--shell", u.GetShell())
			sums = append(sums, fmt.Sprintf("shell %s → %s", cur.shell, u.GetShell()))
		}
		if u.GetComment() != "" && cur.comment != u.GetComment() {
			mod = append(mod, "--comment", u.GetComment())
			sums = append(sums, fmt.Sprintf("comment %q → %q", cur.comment, u.GetComment()))
		}
		if len(mod) > 0 {
			up.modify = mod
		}
	}
	if sn := u.GetPasswordSecret(); sn != "" {
		v, ok := env.Secrets[sn]
		if !ok {
			return nil, nil, fmt.Errorf("password secret %q is not available on this node", sn)
		}
		hash := strings.TrimRight(string(v), "\r\n")
		if !strings.HasPrefix(hash, "$") || strings.ContainsAny(hash, ":\n\r ") {
			return nil, nil, fmt.Errorf("password secret %q does not hold a crypt(3) hash (\"$6$…\", \"$y$…\"; make one with mkpasswd)", sn)
		}
		if !exists || d.hashes[u.GetName()] != hash {
			up.chpasswd = []byte(u.GetName() + ":" + hash + "\n")
			sums = append(sums, "set password (from secret "+sn+")")
		}
	}
	if u.GetManageAuthorizedKeys() {
		want := keysContent(key, u.GetAuthorizedKeys())
		same := false
		if exists {
			var err error
			same, err = keysInPlace(env, cur, home, want)
			if err != nil {
				return nil, nil, err
			}
		}
		if !same {
			up.keys = want
			sums = append(sums, fmt.Sprintf("write %s/.ssh/authorized_keys (%d key(s), others removed)", home, len(u.GetAuthorizedKeys())))
		}
	}
	sp, sum, err := planSudo(ctx, env, sudoPath("user", u.GetName()), sudoContent(key, u.GetName(), u.GetSudo()))
	if err != nil {
		return nil, nil, err
	}
	if sp != nil {
		up.sudo = sp
		sums = append(sums, sum)
	}
	return up, sums, nil
}

// keysContent is the authorized_keys file hive writes.
func keysContent(key string, keys []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Managed by hive (%s); keys not listed here are removed.\n", key)
	for _, k := range keys {
		b.WriteString(strings.TrimSpace(k) + "\n")
	}
	return []byte(b.String())
}

// keysPaths returns the root paths of ~/.ssh and authorized_keys.
func keysPaths(home string) (string, string) {
	dir := path.Join(home, ".ssh")
	return dir, path.Join(dir, "authorized_keys")
}

// keysInPlace reports whether the user's authorized_keys holds want, mode
// 0600 in a 0700 ~/.ssh, both owned by the user.
func keysInPlace(env *converge.Env, u account, home string, want []byte) (bool, error) {
	dir, file := keysPaths(home)
	hd, err := env.Path(dir)
	if err != nil {
		return false, err
	}
	hf := filepath.Join(hd, "authorized_keys")
	have, err := os.ReadFile(hf)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", file, err)
	}
	if !bytes.Equal(have, want) {
		return false, nil
	}
	for _, c := range []struct {
		p    string
		mode os.FileMode
	}{{hd, os.ModeDir | 0o700}, {hf, 0o600}} {
		fi, err := os.Lstat(c.p)
		if err != nil {
			return false, nil
		}
		uid, gid, ok := owner(fi)
		if fi.Mode()&(os.ModeType|os.ModePerm) != c.mode || !ok || uid != u.uid || gid != u.gid {
			return false, nil
		}
	}
	return true, nil
}

// Apply implements converge.Provider.
func (p *UserProvider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	for _, c := range changes {
		up, ok := c.Data.(*userPlan)
		if !ok {
			c.Err = errors.New("user: change without plan data")
			continue
		}
		c.Err = applyUser(ctx, env, up)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func applyUser(ctx context.Context, env *converge.Env, up *userPlan) error {
	if up.create != nil {
		if err := userLedger.set(env, up.name, true); err != nil {
			return err
		}
		if err := tool(ctx, env, "useradd", nil, up.create...); err != nil {
			return err
		}
	}
	if up.modify != nil {
		if err := tool(ctx, env, "usermod", nil, append(up.modify, up.name)...); err != nil {
			return err
		}
	}
	if up.chpasswd != nil {
		if err := tool(ctx, env, "chpasswd", up.chpasswd, "--encrypted"); err != nil {
			// chpasswd echoes nothing of its input; still, say only which user.
			var ee *converge.ExitError
			if errors.As(err, &ee) {
				return fmt.Errorf("set password of %s: chpasswd exit status %d", up.name, ee.Code)
			}
			return fmt.Errorf("set password of %s: %w", up.name, err)
		}
	}
	if up.keys != nil {
		if err := writeKeys(env, up.name, up.keys); err != nil {
			return err
		}
	}
	if up.sudo != nil {
		if err := writeSudo(ctx, env, up.sudo.path, up.sudo.content); err != nil {
			return err
		}
	}
	if up.del != nil {
		if err := tool(ctx, env, "userdel", nil, up.del...); err != nil {
			return err
		}
	}
	if up.del != nil || up.forget {
		return userLedger.set(env, up.name, false)
	}
	return nil
}

// writeKeys writes ~/.ssh/authorized_keys of user name. ~/.ssh and the
// file must not be symbolic links (the home belongs to the user: hive
// never writes through a link the user may have planted).
func writeKeys(env *converge.Env, name string, content []byte) error {
	d, err := loadDB(env)
	if err != nil {
		return err
	}
	u, ok := d.users[name]
	if !ok {
		return fmt.Errorf("user %s does not exist", name)
	}
	dir, file := keysPaths(u.home)
	hh, err := env.Path(u.home)
	if err != nil {
		return err
	}
	if fi, err := os.Lstat(hh); err != nil || !fi.IsDir() {
		return fmt.Errorf("home %s of %s is not a directory: cannot write authorized_keys", u.home, name)
	}
	hd := filepath.Join(hh, ".ssh")
	fi, err := os.Lstat(hd)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(hd, 0o700); err != nil {
			return err
		}
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory (a symbolic link?): refusing to write authorized_keys", dir)
	}
	if err := os.Chmod(hd, 0o700); err != nil {
		return err
	}
	if err := os.Lchown(hd, int(u.uid), int(u.gid)); err != nil {
		return err
	}
	hf := filepath.Join(hd, "authorized_keys")
	if fi, err := os.Lstat(hf); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file: refusing to replace it", file)
	}
	return atomicfile.Write(hf, content, atomicfile.Options{Perm: 0o600, Prepare: func(f *os.File) error {
		return f.Chown(int(u.uid), int(u.gid))
	}})
}

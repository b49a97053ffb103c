package users

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
)

// tool runs a shadow-utils command in env's root: with --root ROOT unless
// env works on the host itself.
func tool(ctx context.Context, env *converge.Env, name string, stdin []byte, args ...string) error {
	if !env.HostRoot() {
		args = append([]string{"--root", env.Root}, args...)
	}
	_, err := env.Runner.Run(ctx, converge.Cmd{Name: name, Args: args, Stdin: stdin, Env: []string{"LC_ALL=C"}})
	return err
}

// sudoersDir is where the drop-ins go.
const sudoersDir = "/etc/sudoers.d"

// sudoPath returns the drop-in of a user ("user") or group ("group"):
// sudo skips files whose name has a '.', so dots become '_'.
func sudoPath(kind, name string) string {
	return path.Join(sudoersDir, "hive-"+kind+"-"+strings.ReplaceAll(name, ".", "_"))
}

// sudoContent returns the drop-in for subject (NAME or %NAME) and rules,
// or nil when there are none.
func sudoContent(key, subject string, rules []string) []byte {
	if len(rules) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Managed by hive (%s); local changes are overwritten.\n", key)
	for _, r := range rules {
		fmt.Fprintf(&b, "%s %s\n", subject, r)
	}
	return []byte(b.String())
}

// readFile returns the content of the root's file p, nil when missing.
func readFile(env *converge.Env, p string) ([]byte, bool, error) {
	hp, err := env.Path(p)
	if err != nil {
		return nil, false, err
	}
	b, err := os.ReadFile(hp)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// visudoCmd returns the command checking the sudoers file p (a path of
// the root; "-" reads stdin): the root's own visudo.
func visudoCmd(env *converge.Env, p string, stdin []byte) (converge.Cmd, error) {
	if env.HostRoot() {
		return converge.Cmd{Name: "visudo", Args: []string{"-c", "-q", "-f", p}, Stdin: stdin}, nil
	}
	vp, err := env.Path("/usr/sbin/visudo")
	if err != nil {
		return converge.Cmd{}, err
	}
	if _, err := os.Stat(vp); err != nil {
		return converge.Cmd{}, errors.New("sudo rules need sudo installed: no /usr/sbin/visudo in the root")
	}
	return converge.Cmd{Name: "chroot", Args: []string{env.Root, "/usr/sbin/visudo", "-c", "-q", "-f", p}, Stdin: stdin}, nil
}

// checkSudo checks drop-in content with visudo, without writing anything.
func checkSudo(ctx context.Context, env *converge.Env, content []byte) error {
	c, err := visudoCmd(env, "-", content)
	if err != nil {
		return err
	}
	if _, err := env.Runner.Run(ctx, c); err != nil {
		return fmt.Errorf("sudo rules rejected by visudo: %w", err)
	}
	return nil
}

// writeSudo puts content in place at p (a root path): written to a
// temporary file beside it (sudo ignores names with a '.'), checked with
// visudo -cf, then renamed; nil content removes p.
func writeSudo(ctx context.Context, env *converge.Env, p string, content []byte) error {
	hp, err := env.Path(p)
	if err != nil {
		return err
	}
	if content == nil {
		if err := os.Remove(hp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	pend, err := atomicfile.Create(hp, atomicfile.Options{Perm: 0o440, MkdirPerm: 0o750})
	if err != nil {
		return err
	}
	defer pend.Discard()
	if _, err := pend.Write(content); err != nil {
		return err
	}
	if err := pend.File().Chmod(0o440); err != nil {
		return err
	}
	if err := pend.Sync(); err != nil {
		return err
	}
	c, err := visudoCmd(env, path.Join(path.Dir(p), path.Base(pend.File().Name())), nil)
	if err != nil {
		return err
	}
	if _, err := env.Runner.Run(ctx, c); err != nil {
		return fmt.Errorf("sudo rules rejected by visudo, %s left as it was: %w", p, err)
	}
	return pend.Commit()
}

// ledger is the set of accounts hive created in a root, kept in the root
// (/var/lib/hive/users.json, …) so that pruning deletes only those.
type ledger struct{ path string }

func (l ledger) load(env *converge.Env) (map[string]bool, error) {
	b, ok, err := readFile(env, l.path)
	if err != nil || !ok {
		return map[string]bool{}, err
	}
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", l.path, err)
	}
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m, nil
}

// set records (on) or forgets name.
func (l ledger) set(env *converge.Env, name string, on bool) error {
	m, err := l.load(env)
	if err != nil {
		return err
	}
	if m[name] == on {
		return nil
	}
	if on {
		m[name] = true
	} else {
		delete(m, name)
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	b, _ := json.Marshal(names)
	hp, err := env.Path(l.path)
	if err != nil {
		return err
	}
	return atomicfile.Write(hp, append(b, '\n'), atomicfile.Options{Perm: 0o600, MkdirPerm: 0o755})
}

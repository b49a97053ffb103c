package repo_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/rpmpack"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo"
	"github.com/hivefleet/hive/repo/repotest"
	"github.com/hivefleet/hive/repo/rpmmeta"
)

// corruptData returns a copy of deb with one byte flipped in the middle of
// its data member, and the member's name.
func corruptData(t testing.TB, deb []byte) ([]byte, string) {
	t.Helper()
	i := bytes.Index(deb, []byte("data.tar"))
	if i < 0 || i+60 > len(deb) {
		t.Fatal("no data member")
	}
	name := strings.TrimRight(strings.TrimSpace(string(deb[i:i+16])), "/")
	size, err := strconv.Atoi(strings.TrimSpace(string(deb[i+48 : i+58])))
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(nil), deb...)
	out[i+60+size/2] ^= 0xff
	return out, name
}

// payloadStart returns where an RPM's payload begins (the end of its main
// header).
func payloadStart(t testing.TB, rpm []byte) int {
	t.Helper()
	p, err := rpmmeta.ParseBytes(rpm)
	if err != nil {
		t.Fatal(err)
	}
	return p.HeaderEnd
}

// TestCorruptPayloadRefused: a .deb whose data member is corrupt or cut,
// and an RPM whose payload is cut or has a flipped byte (headers intact),
// are refused with 422 naming what is wrong; nothing is stored and the
// published repository is unchanged. Before: the .deb cases were 201 and
// published (only the control member was read).
func TestCorruptPayloadRefused(t *testing.T) {
	e := start(t, nil)
	e.upload("site", "good-1.0-1.noarch.rpm", rpmPkg(t, "good", "1.0", false))
	e.upload("site", "tool_1.0_all.deb", debPkg(t, "tool", "1.0", "gz"))
	e.reindex("site")
	before := e.snapshot("site")

	noise := make([]byte, 64<<10)
	for i := range noise {
		noise[i] = byte(i * 7919 >> 3)
	}
	big, err := repotest.BuildRPM(repotest.RPM{Name: "big", Version: "1", Files: map[string]string{"/big": string(noise)}})
	if err != nil {
		t.Fatal(err)
	}
	ps := payloadStart(t, big)
	flipped := append([]byte(nil), big...)
	flipped[ps+(len(big)-ps)/2] ^= 0xff
	type tc struct {
		name, file string
		body       []byte
		want       []string // in the error message
	}
	var cases []tc
	for _, z := range []string{"gz", "xz", "zst", "none"} {
		bad, member := corruptData(t, debPkg(t, "broken", "1.0", z))
		cases = append(cases, tc{"deb data flipped " + z, "broken_1.0_all.deb", bad, []string{"broken_1.0_all.deb", member}})
		whole := debPkg(t, "cut", "1.0", z)
		cases = append(cases, tc{"deb cut in data " + z, "cut_1.0_all.deb", whole[:len(whole)-20], []string{"cut_1.0_all.deb", "truncated"}})
	}
	cases = append(cases,
		tc{"rpm payload cut", "big-1-1.noarch.rpm", big[:ps+(len(big)-ps)/2], []string{"big-1-1.noarch.rpm", "invalid rpm"}},
		tc{"rpm payload flipped", "big-1-1.noarch.rpm", flipped, []string{"big-1-1.noarch.rpm", "payload", "digest mismatch"}},
	)
	for _, c := range cases {
		code, b := e.do("PUT", "/api/v1/repos/site/packages/"+c.file, c.body, token)
		if code != 422 {
			t.Errorf("%s: got %d %s, want 422", c.name, code, b)
			continue
		}
		for _, w := range c.want {
			if !bytes.Contains(b, []byte(w)) {
				t.Errorf("%s: message %s lacks %q", c.name, bytes.TrimSpace(b), w)
			}
		}
		t.Logf("%s: %s", c.name, bytes.TrimSpace(b))
	}
	// A header-cache entry written by an older parser (which read only the
	// control member) for exactly these bytes does not vouch for them.
	bad, _ := corruptData(t, debPkg(t, "stale", "1.0", "gz"))
	sum := sha(bad)
	stale, _ := json.Marshal(map[string]any{"Kind": "deb", "Deb": map[string]any{"name": "stale", "version": "1.0", "arch": "all", "sha256": sum, "size": len(bad)}})
	os.MkdirAll(filepath.Join(e.dir, "meta", sum[:2]), 0o755)
	if err := os.WriteFile(filepath.Join(e.dir, "meta", sum[:2], sum+".json"), stale, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, b := e.do("PUT", "/api/v1/repos/site/packages/stale_1.0_all.deb", bad, token); code != 422 {
		t.Errorf("corrupt deb with a stale header-cache entry: got %d %s, want 422", code, b)
	}
	time.Sleep(3 * e.cfg.MaxDelay)
	sameSnapshot(t, "after corrupt uploads", before, e.snapshot("site"))
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "tmp")); len(ents) != 0 {
		t.Errorf("refused uploads left %d temporary files", len(ents))
	}
}

// TestOnePackageOneFile: a repository holds one file per package version.
// Other bytes for a version another file holds are 409 whatever the file
// name (also a version the package manager calls equal, and for debs
// architecture all against a specific one); the same bytes again are
// idempotent under any name; after a restart the rule still holds. Before:
// every one of these was stored beside the first file, and clients saw two
// candidates.
func TestOnePackageOneFile(t *testing.T) {
	e := start(t, func(c *repo.Config) { c.Debounce, c.MaxDelay = time.Hour, time.Hour })
	deb := debPkg(t, "tool", "1.0", "gz")
	rpm := rpmPkg(t, "good", "1.0", false)
	e.upload("site", "tool_1.0_all.deb", deb)
	e.upload("site", "good-1.0-1.noarch.rpm", rpm)
	e.reindex("site")
	before := e.snapshot("site")

	rebuilt, err := repotest.BuildRPM(repotest.RPM{Name: "good", Version: "1.0", Arch: "noarch", BuildTime: time.Unix(1700000500, 0)})
	if err != nil {
		t.Fatal(err)
	}
	noEpoch, err := repotest.BuildRPM(repotest.RPM{Name: "good", Version: "1.00", Arch: "noarch", Epoch: rpmpack.NoEpoch})
	if err != nil {
		t.Fatal(err)
	}
	amd64, err := repotest.BuildDeb(repotest.Deb{Name: "tool", Version: "1.0", Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	conflicts := []struct {
		name, file string
		body       []byte
		holder     string
	}{
		{"deb other bytes, other name", "tool_1.0_all.rebuild.deb", debPkg(t, "tool", "1.0", "xz"), "tool_1.0_all.deb"},
		{"deb equal version 0:1.00-0", "tool_1.00_all.deb", debPkg(t, "tool", "0:1.00-0", "gz"), "tool_1.0_all.deb"},
		{"deb amd64 beside all", "tool_1.0_amd64.deb", amd64, "tool_1.0_all.deb"},
		{"deb same name other bytes", "tool_1.0_all.deb", debPkg(t, "tool", "1.0", "zst"), "tool_1.0_all.deb"},
		{"rpm rebuilt, other name", "good-1.0-1.rebuilt.noarch.rpm", rebuilt, "good-1.0-1.noarch.rpm"},
		{"rpm no epoch, 1.00", "good-1.00-1.noarch.rpm", noEpoch, "good-1.0-1.noarch.rpm"},
		{"rpm same name other bytes", "good-1.0-1.noarch.rpm", rebuilt, "good-1.0-1.noarch.rpm"},
	}
	check := func(e *env) {
		t.Helper()
		for _, c := range conflicts {
			code, b := e.do("PUT", "/api/v1/repos/site/packages/"+c.file, c.body, token)
			if code != 409 || !bytes.Contains(b, []byte(c.holder)) || !bytes.Contains(b, []byte(sha(c.body))) {
				t.Errorf("%s: got %d %s, want 409 naming %s and the upload's sha256", c.name, code, b, c.holder)
			} else {
				t.Logf("%s: %s", c.name, bytes.TrimSpace(b))
			}
		}
		// The same bytes again, under the same or another name: 200, nothing added.
		for _, u := range []struct {
			file, holder string
			body         []byte
		}{
			{"tool_1.0_all.deb", "tool_1.0_all.deb", deb}, {"tool-copy_1.0_all.deb", "tool_1.0_all.deb", deb},
			{"good-1.0-1.noarch.rpm", "good-1.0-1.noarch.rpm", rpm}, {"good-copy.rpm", "good-1.0-1.noarch.rpm", rpm},
		} {
			code, b := e.do("PUT", "/api/v1/repos/site/packages/"+u.file, u.body, token)
			var res struct {
				Filename  string
				Unchanged bool
			}
			json.Unmarshal(b, &res)
			if code != 200 || !res.Unchanged || res.Filename != u.holder {
				t.Errorf("identical %s: got %d %s, want 200 unchanged as %s", u.file, code, b, u.holder)
			}
		}
		sameSnapshot(t, "after refused duplicates", before, e.snapshot("site"))
	}
	check(e)
	e.stop()
	e2 := startCfg(t, e.cfg)
	check(e2)

	// Removing the holder frees the version; replace under the holder's
	// own name is the explicit way to change its bytes.
	if code, b := e2.do("PUT", "/api/v1/repos/site/packages/good-1.0-1.noarch.rpm?replace=1", rebuilt, token); code != 201 {
		t.Errorf("replace under the same name: %d %s", code, b)
	}
	if code, b := e2.do("DELETE", "/api/v1/repos/site/packages/tool_1.0_all.deb", nil, token); code != 204 {
		t.Fatalf("remove: %d %s", code, b)
	}
	if code, b := e2.do("PUT", "/api/v1/repos/site/packages/tool_1.0_amd64.deb", amd64, token); code != 201 {
		t.Errorf("upload after the holder was removed: %d %s", code, b)
	}
}

// TestClientsSeeOneCandidate: end to end with the real clients. After a
// duplicate (other bytes, other file name) and a corrupt copy of a package
// were offered, apt-get update / apt-cache and dnf see exactly one
// candidate, the first upload's, and apt downloads it with its hash.
// Before: Packages listed both files, the corrupt one among them.
func TestClientsSeeOneCandidate(t *testing.T) {
	aptGet := testenv.RequireTool(t, "apt-get", "apt-cache", "gpgv")
	dnf := testenv.RequireTool(t, "dnf", "rpm")
	e := start(t, nil)
	good := debPkg(t, "tool", "1.0", "gz")
	bad, _ := corruptData(t, debPkg(t, "tool", "1.0", "xz"))
	e.do("PUT", "/api/v1/repos/site/packages/a-tool_1.0_all.deb", bad, token) // sorts first; refused
	e.upload("site", "tool_1.0_all.deb", good)
	e.do("PUT", "/api/v1/repos/site/packages/tool_1.0_all.rebuild.deb", debPkg(t, "tool", "1.0", "zst"), token) // refused
	rpm := rpmPkg(t, "hello", "1.0", true)
	rebuilt, err := repotest.BuildRPM(repotest.RPM{Name: "hello", Version: "1.0", Arch: "noarch", Signer: testSigner(t), BuildTime: time.Unix(1700000500, 0)})
	if err != nil {
		t.Fatal(err)
	}
	e.upload("site", "hello-1.0-1.noarch.rpm", rpm)
	e.do("PUT", "/api/v1/repos/site/packages/a-hello-1.0-1.noarch.rpm", rebuilt, token) // refused
	e.reindex("site")

	dir := t.TempDir()
	key := filepath.Join(dir, "site.asc")
	os.WriteFile(key, e.get("/keys/site.asc"), 0o644)
	a := repotest.NewApt(t, dir, "deb [signed-by="+key+"] "+e.url+"/apt/site stable main")
	ctx := repotest.Ctx(t, 3*time.Minute)
	if out, err := a.Run(ctx, aptGet, "update"); err != nil || len(repotest.Warnings(out)) > 0 {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	out, err := a.Run(ctx, "apt-cache", "show", "tool")
	if err != nil {
		t.Fatalf("apt-cache show: %v\n%s", err, out)
	}
	if n := strings.Count(out, "Package: tool\n"); n != 1 || !strings.Contains(out, "SHA256: "+sha(good)) {
		t.Errorf("apt-cache show tool: %d candidates, want 1 with the first upload's hash:\n%s", n, out)
	}
	if out, err := a.Run(ctx, aptGet, "download", "tool"); err != nil || len(repotest.Warnings(out)) > 0 {
		t.Fatalf("apt-get download: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "dl", "tool_1.0_all.deb")); !bytes.Equal(got, good) {
		t.Errorf("apt downloaded other bytes than the first upload")
	}

	c := repotest.NewDnf(t, dnf, t.TempDir(), "hive-site", e.url+"/yum/site/", e.url+"/keys/site.asc")
	out, err = c.Run(ctx, "list", "--showduplicates", "available", "hello")
	if err != nil {
		t.Fatalf("dnf list: %v\n%s", err, out)
	}
	if n := strings.Count(out, "hello.noarch"); n != 1 {
		t.Errorf("dnf lists %d candidates of hello, want 1:\n%s", n, out)
	}
}

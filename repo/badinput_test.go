package repo_test

import (
	"bytes"
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo"
	"github.com/hivefleet/hive/repo/repotest"
)

// snapshot captures everything a client of the published repository sees.
func (e *env) snapshot(repoName string) map[string][]byte {
	out := map[string][]byte{}
	for _, p := range []string{
		"/yum/" + repoName + "/repodata/repomd.xml", "/yum/" + repoName + "/repodata/repomd.xml.asc",
		"/apt/" + repoName + "/dists/stable/InRelease", "/apt/" + repoName + "/dists/stable/Release",
		"/apt/" + repoName + "/dists/stable/Release.gpg", "/apt/" + repoName + "/dists/stable/main/binary-amd64/Packages",
		"/api/v1/repos/" + repoName,
	} {
		code, b := e.do("GET", p, nil, "")
		out[p] = append([]byte{byte(code / 100)}, b...)
	}
	return out
}

func sameSnapshot(t *testing.T, what string, a, b map[string][]byte) {
	t.Helper()
	for k := range a {
		if !bytes.Equal(a[k], b[k]) {
			t.Errorf("%s: %s changed", what, k)
		}
	}
}

func TestBadInputRefused(t *testing.T) {
	e := start(t, func(c *repo.Config) { c.MaxUploadSize = 64 << 10 })
	good := rpmPkg(t, "good", "1.0", false)
	e.upload("site", "good-1.0-1.noarch.rpm", good)
	e.upload("site", "tool_1.0_all.deb", debPkg(t, "tool", "1.0", "gz"))
	e.reindex("site")
	before := e.snapshot("site")

	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)-30] ^= 0xff
	noise := make([]byte, 100<<10)
	rand.Read(noise)
	big, err := repotest.BuildRPM(repotest.RPM{Name: "big", Version: "1", Files: map[string]string{"/big": string(noise)}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path string
		body       []byte
		tok        string
		want       int
	}{
		{"truncated rpm", "/api/v1/repos/site/packages/t-1-1.noarch.rpm", good[:len(good)/2], token, 422},
		{"corrupt rpm", "/api/v1/repos/site/packages/c-1-1.noarch.rpm", corrupt, token, 422},
		{"rpm renamed deb", "/api/v1/repos/site/packages/good_1.0_all.deb", good, token, 422},
		{"deb renamed rpm", "/api/v1/repos/site/packages/tool-1.0.rpm", debPkg(t, "tool", "1.0", "gz"), token, 422},
		{"empty", "/api/v1/repos/site/packages/e-1-1.noarch.rpm", nil, token, 422},
		{"not a package name", "/api/v1/repos/site/packages/notes.txt", good, token, 400},
		{"encoded traversal", "/api/v1/repos/site/packages/..%2F..%2F..%2Fetc%2Fx.rpm", good, token, 400},
		{"encoded slash", "/api/v1/repos/site/packages/sub%2Fx.rpm", good, token, 400},
		{"dot dot name", "/api/v1/repos/site/packages/..rpm", good, token, 400},
		{"repo traversal", "/api/v1/repos/..%2Fetc/packages/x.rpm", good, token, 400},
		{"missing token", "/api/v1/repos/site/packages/n-1-1.noarch.rpm", good, "", 401},
		{"wrong token", "/api/v1/repos/site/packages/n-1-1.noarch.rpm", good, "nope", 403},
		{"oversize", "/api/v1/repos/site/packages/big-1-1.noarch.rpm", big, token, 413},
		{"same name other content", "/api/v1/repos/site/packages/good-1.0-1.noarch.rpm", rpmPkg(t, "good", "1.1", false), token, 409},
		{"reindex without token", "/api/v1/repos/site/reindex", nil, "", 401},
		{"remove without token", "/api/v1/repos/site/packages/good-1.0-1.noarch.rpm", nil, "", 401},
	}
	for _, c := range cases {
		method := "PUT"
		if c.name == "reindex without token" {
			method = "POST"
		}
		if c.name == "remove without token" {
			method = "DELETE"
		}
		code, b := e.do(method, c.path, c.body, c.tok)
		if code != c.want {
			t.Errorf("%s: got %d %s, want %d", c.name, code, b, c.want)
		} else if !bytes.Contains(b, []byte(`"error"`)) {
			t.Errorf("%s: no error message: %s", c.name, b)
		} else {
			t.Logf("%s: %d %s", c.name, code, bytes.TrimSpace(b))
		}
	}
	// Also a chunked upload (no Content-Length) over the limit.
	req, _ := http.NewRequest("PUT", e.url+"/api/v1/repos/site/packages/big2-1-1.noarch.rpm", struct{ *bytes.Reader }{bytes.NewReader(big)})
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 413 {
		t.Errorf("chunked oversize: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	time.Sleep(3 * e.cfg.MaxDelay)
	sameSnapshot(t, "after bad uploads", before, e.snapshot("site"))
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "tmp")); len(ents) != 0 {
		t.Errorf("refused uploads left %d temporary files", len(ents))
	}
	if _, err := os.Stat(filepath.Join(e.dir, "etc")); err == nil {
		t.Errorf("traversal created a directory")
	}
	// A refused upload to a new repository does not create it.
	if code, _ := e.do("PUT", "/api/v1/repos/fresh/packages/x-1-1.noarch.rpm", corrupt, token); code != 422 {
		t.Errorf("corrupt upload to a new repo: %d", code)
	}
	if code, _ := e.do("GET", "/api/v1/repos/fresh", nil, ""); code != 404 {
		t.Errorf("refused upload created repository fresh: %d", code)
	}
	// Replace is explicit.
	code, b := e.do("PUT", "/api/v1/repos/site/packages/good-1.0-1.noarch.rpm?replace=1", rpmPkg(t, "good", "1.1", false), token)
	if code != 201 || !bytes.Contains(b, []byte(`"replaced": true`)) {
		t.Errorf("replace: %d %s", code, b)
	}
}

// TestDiskFullDuringPublish fills a small tmpfs holding the data dir: the
// publish fails with a clear error, the published repository is unchanged
// and still served; once space is back the next publish succeeds.
func TestDiskFullDuringPublish(t *testing.T) {
	testenv.RequireRoot(t)
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m"); err != nil {
		testenv.Missing(t, "mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	e := start(t, func(c *repo.Config) {
		c.DataDir = filepath.Join(mnt, "data")
		c.Debounce, c.MaxDelay = time.Hour, time.Hour // publish only when asked
	})
	e.upload("site", "a-1-1.noarch.rpm", rpmPkg(t, "a", "1", false))
	e.upload("site", "aa_1_all.deb", debPkg(t, "aa", "1", "gz"))
	e.reindex("site")
	before := e.snapshot("site")
	e.upload("site", "b-1-1.noarch.rpm", rpmPkg(t, "b", "1", false))
	e.upload("site", "bb_1_all.deb", debPkg(t, "bb", "1", "gz"))

	// Fill the file system.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	code, b := e.do("POST", "/api/v1/repos/site/reindex", nil, token)
	if code != http.StatusInsufficientStorage {
		t.Errorf("reindex on a full disk: %d %s, want 507", code, b)
	}
	code, b = e.do("PUT", "/api/v1/repos/site/packages/c-1-1.noarch.rpm", rpmPkg(t, "c", "1", false), token)
	if code != http.StatusInsufficientStorage {
		t.Errorf("upload on a full disk: %d %s, want 507", code, b)
	}
	after := e.snapshot("site")
	delete(before, "/api/v1/repos/site") // the package list grew by b before the disk filled
	sameSnapshot(t, "after disk full", before, after)
	os.Remove(filler)
	e.reindex("site")
	if !bytes.Contains(e.get("/apt/site/dists/stable/main/binary-amd64/Packages"), []byte("Package: bb")) {
		t.Errorf("publish after freeing space lacks b")
	}
}

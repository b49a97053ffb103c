package repocli

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/repo/repotest"
	"github.com/hivefleet/hive/repo/sign"
)

func TestKeygenAndIndex(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key.asc")
	var out, errb bytes.Buffer
	if code := Main([]string{"keygen", "--out", key}, &out, &errb); code != 0 {
		t.Fatalf("keygen: %s", errb.String())
	}
	b, _ := os.ReadFile(key)
	if _, err := sign.Load(b); err != nil {
		t.Fatalf("generated key does not load: %v", err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode())
	}
	if code := Main([]string{"keygen", "--out", key}, &out, &errb); code == 0 {
		t.Errorf("keygen overwrote an existing key")
	}
	yum, apt := filepath.Join(dir, "yum"), filepath.Join(dir, "apt")
	os.MkdirAll(yum, 0o755)
	os.MkdirAll(apt, 0o755)
	r, _ := repotest.BuildRPM(repotest.RPM{Name: "x", Version: "1"})
	os.WriteFile(filepath.Join(yum, "x.rpm"), r, 0o644)
	d, _ := repotest.BuildDeb(repotest.Deb{Name: "xx", Version: "1"})
	os.WriteFile(filepath.Join(apt, "xx.deb"), d, 0o644)
	cache := filepath.Join(dir, "cache")
	for i, want := range []string{"(1 read, 0 from cache)", "(0 read, 1 from cache)"} {
		out.Reset()
		if code := Main([]string{"index", "--yum", yum, "--signing-key", key, "--cache", cache}, &out, &errb); code != 0 {
			t.Fatalf("index --yum: %s", errb.String())
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("run %d: %q lacks %q", i, out.String(), want)
		}
	}
	for _, f := range []string{"repodata/repomd.xml", "repodata/repomd.xml.asc"} {
		if _, err := os.Stat(filepath.Join(yum, f)); err != nil {
			t.Error(err)
		}
	}
	if code := Main([]string{"index", "--apt", apt, "--signing-key", key}, &out, &errb); code != 0 {
		t.Fatalf("index --apt: %s", errb.String())
	}
	for _, f := range []string{"Packages", "Packages.gz", "Packages.xz", "Release", "InRelease", "Release.gpg"} {
		if _, err := os.Stat(filepath.Join(apt, f)); err != nil {
			t.Error(err)
		}
	}
	if code := Main([]string{"index"}, &out, &errb); code == 0 {
		t.Errorf("index without a directory succeeded")
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "hive-repo.conf")
	os.WriteFile(conf, []byte("# comment\naddr: 127.0.0.1:0\nbogus: 1\n"), 0o644)
	var out, errb bytes.Buffer
	if code := Main([]string{"--config", conf, "--data-dir", dir}, &out, &errb); code == 0 || !strings.Contains(errb.String(), `unknown key "bogus"`) {
		t.Errorf("bad config accepted: %s", errb.String())
	}
	os.WriteFile(conf, []byte("addr: 127.0.0.1:0\n"), 0o644)
	errb.Reset()
	if code := Main([]string{"--config", conf, "--data-dir", dir}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "--signing-key is required") {
		t.Errorf("missing key accepted: %s", errb.String())
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestServeDev runs the server command in --dev mode: a key is generated in
// the data dir, writes need no token, SIGTERM stops it cleanly.
func TestServeDev(t *testing.T) {
	dir := t.TempDir()
	var out, errb syncBuf
	done := make(chan int, 1)
	go func() {
		done <- Main([]string{"--dev", "--data-dir", dir, "--addr", "127.0.0.1:0", "--debounce", "10ms"}, &out, &errb)
	}()
	re := regexp.MustCompile(`msg=serving .*addr=(127\.0\.0\.1:\d+)`)
	var addr string
	for deadline := time.Now().Add(20 * time.Second); addr == ""; {
		if m := re.FindStringSubmatch(errb.String()); m != nil {
			addr = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start:\n%s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "dev-signing-key.asc")); err != nil {
		t.Errorf("dev key not generated: %v", err)
	}
	d, _ := repotest.BuildDeb(repotest.Deb{Name: "devpkg", Version: "1"})
	req, _ := http.NewRequest("PUT", "http://"+addr+"/api/v1/repos/dev/packages/devpkg_1_all.deb", bytes.NewReader(d))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("upload without token in --dev: %v %v", err, resp)
	}
	resp.Body.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get("http://" + addr + "/apt/dev/dists/stable/main/binary-amd64/Packages")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "Package: devpkg") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("upload not published")
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d:\n%s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop on SIGTERM")
	}
}

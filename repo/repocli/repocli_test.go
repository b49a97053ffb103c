package repocli

import (
	"bytes"
	"io"
	"net"
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
	conf := filepath.Join(dir, "repo.yaml")
	os.WriteFile(conf, []byte("# comment\nlisten: 127.0.0.1:0\nbogus: 1\n"), 0o644)
	var out, errb bytes.Buffer
	if code := Main([]string{"--config", conf, "--data-dir", dir}, &out, &errb); code == 0 || !strings.Contains(errb.String(), `:3:1: unknown key "bogus"`) {
		t.Errorf("bad config accepted: %s", errb.String())
	}
	os.WriteFile(conf, []byte("listen: 127.0.0.1:0\n"), 0o644)
	errb.Reset()
	if code := Main([]string{"--config", conf, "--data-dir", dir}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "--signing-key is required") {
		t.Errorf("missing key accepted: %s", errb.String())
	}
}

// TestShippedConfig: the config file the packages install
// (deploy/config/repo.yaml) is read as meant.
func TestShippedConfig(t *testing.T) {
	root := newRoot(io.Discard, io.Discard)
	if err := applyConfigFile(root.Flags(), "../../deploy/config/repo.yaml"); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"addr": ":7480", "data-dir": "/var/lib/hive/repo", "signing-key": "/etc/hive/repo-signing.asc"} {
		if got := root.Flags().Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	conf := filepath.Join(t.TempDir(), "full.yaml")
	os.WriteFile(conf, []byte("data_dir: /x\nupload_token_file: /t\ndebounce: 2s\nkeep_generations: 6\nmirrors:\n  debian: http://deb.debian.org/debian\n  rocky: https://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os\n"), 0o644)
	root = newRoot(io.Discard, io.Discard)
	root.Flags().Set("data-dir", "/from-flag")
	if err := applyConfigFile(root.Flags(), conf); err != nil {
		t.Fatal(err)
	}
	fl := root.Flags()
	if fl.Lookup("data-dir").Value.String() != "/from-flag" || fl.Lookup("debounce").Value.String() != "2s" ||
		fl.Lookup("keep-generations").Value.String() != "6" || fl.Lookup("upload-token-file").Value.String() != "/t" ||
		!strings.Contains(fl.Lookup("mirror").Value.String(), "rocky=https://dl.rockylinux.org") {
		t.Errorf("flags after config: data-dir %s debounce %s keep %s mirror %s", fl.Lookup("data-dir").Value, fl.Lookup("debounce").Value, fl.Lookup("keep-generations").Value, fl.Lookup("mirror").Value)
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
	// A systemd notify socket of our own: READY, WATCHDOG, STOPPING.
	sock := filepath.Join(dir, "notify.sock")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	notes := make(chan string, 100)
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				close(notes)
				return
			}
			notes <- string(buf[:n])
		}
	}()
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
	seen := map[string]bool{}
	for deadline := time.After(5 * time.Second); !seen["READY=1"] || !seen["WATCHDOG=1"]; {
		select {
		case n := <-notes:
			seen[n] = true
		case <-deadline:
			t.Fatalf("notifications seen: %v", seen)
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d:\n%s", code, errb.String())
		}
		for deadline := time.After(2 * time.Second); !seen["STOPPING=1"]; {
			select {
			case n := <-notes:
				seen[n] = true
			case <-deadline:
				t.Fatalf("no STOPPING=1: %v", seen)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop on SIGTERM")
	}
}

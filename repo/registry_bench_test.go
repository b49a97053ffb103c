package repo_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/internal/testenv"
)

// BenchmarkRegistryVsDistribution pushes and pulls the same image (a
// HIVE_REGISTRY_BENCH_MB layer of random bytes, default 64, new bytes each
// iteration, plus its config and manifest) through the registry API to
// hive-repo's /v2/ (hive-repo --dev, a process) and to Debian's
// docker-registry (distribution 2.8, package docker-registry, filesystem
// storage), both on 127.0.0.1, with the same client, and reports push and
// pull MB/s and each server's CPU seconds and peak RSS (VmHWM).
//
//	flock /tmp/hive-heavy.lock go test -run '^$' -bench RegistryVsDistribution -benchtime 5x ./repo/
func BenchmarkRegistryVsDistribution(b *testing.B) {
	testenv.RequireTool(b, "docker-registry")
	bin := netlab.Build(b, "hive-repo")
	b.Cleanup(netlab.CleanupBuilds)
	mb := 64
	if v := os.Getenv("HIVE_REGISTRY_BENCH_MB"); v != "" {
		mb, _ = strconv.Atoi(v)
	}
	servers := map[string]func(dir, addr string) *exec.Cmd{
		"hive-repo": func(dir, addr string) *exec.Cmd {
			return exec.Command(bin["hive-repo"], "--dev", "--addr", addr, "--data-dir", dir)
		},
		"docker-registry": func(dir, addr string) *exec.Cmd {
			cfg := filepath.Join(dir, "config.yml")
			os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s/data\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", dir, addr)), 0o644)
			return exec.Command("docker-registry", "serve", cfg)
		},
	}
	for _, name := range []string{"hive-repo", "docker-registry"} {
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			cmd := servers[name](dir, addr)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			base := "http://" + addr
			for i := 0; ; i++ {
				if resp, err := http.Get(base + "/v2/"); err == nil {
					resp.Body.Close()
					break
				}
				if i > 100 {
					b.Fatalf("%s not answering", name)
				}
				time.Sleep(100 * time.Millisecond)
			}
			cpu0 := procCPU(b, cmd.Process.Pid)
			var pushT, pullT time.Duration
			var bytesMoved int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				layer := make([]byte, mb<<20)
				rand.Read(layer)
				t0 := time.Now()
				man := benchPush(b, base, "bench/img", fmt.Sprint(i), layer)
				pushT += time.Since(t0)
				t0 = time.Now()
				benchPull(b, base, "bench/img", fmt.Sprint(i), man)
				pullT += time.Since(t0)
				bytesMoved += int64(len(layer))
			}
			b.StopTimer()
			cpu := procCPU(b, cmd.Process.Pid) - cpu0
			b.ReportMetric(float64(bytesMoved)/1e6/pushT.Seconds(), "push-MB/s")
			b.ReportMetric(float64(bytesMoved)/1e6/pullT.Seconds(), "pull-MB/s")
			b.ReportMetric(cpu.Seconds()/float64(b.N), "server-cpu-s/op")
			b.ReportMetric(float64(procHWM(b, cmd.Process.Pid))/(1<<20), "server-peak-RSS-MiB")
		})
	}
}

func benchDigest(p []byte) string {
	s := sha256.Sum256(p)
	return "sha256:" + hex.EncodeToString(s[:])
}

func benchPush(b *testing.B, base, repoName, tag string, layer []byte) string {
	b.Helper()
	upload := func(blob []byte) {
		resp, err := http.Post(base+"/v2/"+repoName+"/blobs/uploads/", "", nil)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if !strings.HasPrefix(loc, "http") {
			loc = base + loc
		}
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+benchDigest(blob), bytes.NewReader(blob))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("upload: %s", resp.Status)
		}
	}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%q]}}`, benchDigest(layer)))
	upload(layer)
	upload(cfg)
	man := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar","digest":%q,"size":%d}]}`,
		benchDigest(cfg), len(cfg), benchDigest(layer), len(layer)))
	req, _ := http.NewRequest(http.MethodPut, base+"/v2/"+repoName+"/manifests/"+tag, bytes.NewReader(man))
	req.Header.Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("put manifest: %s", resp.Status)
	}
	return benchDigest(layer)
}

func benchPull(b *testing.B, base, repoName, tag, layer string) {
	b.Helper()
	for _, u := range []string{"/manifests/" + tag, "/blobs/" + layer} {
		req, _ := http.NewRequest(http.MethodGet, base+"/v2/"+repoName+u, nil)
		req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %s", u, resp.Status)
		}
	}
}

// procCPU is the user+system CPU time of pid.
func procCPU(b *testing.B, pid int) time.Duration {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100 // USER_HZ
}

// procHWM is the peak RSS of pid in bytes.
func procHWM(b *testing.B, pid int) int64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

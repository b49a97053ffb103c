package repo_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo"
	"github.com/hivefleet/hive/repo/mirror"
	"github.com/hivefleet/hive/repo/repotest"
)

// Benchmarks behind `make bench-repo`. The package corpus is generated
// once into $HIVE_BENCH_CORPUS (default: the user cache dir) and reused.
// Each benchmark times hive-repo and its peer on the same input in the
// same run and reports both and their ratio.

func corpusDir(b *testing.B) string {
	if d := os.Getenv("HIVE_BENCH_CORPUS"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		b.Fatal(err)
	}
	return filepath.Join(d, "hive-bench-corpus")
}

var (
	binOnce          sync.Once
	binPath, peakrss string
	binErr           error
)

// hiveRepoBin builds cmd/hive-repo once per run, as `make build` does
// (static, trimmed, stripped): the binary a user runs. It also builds
// repotest/peakrss, through which every timed command runs.
func hiveRepoBin(b testing.TB) string {
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hive-repo-bench-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath, peakrss = filepath.Join(dir, "hive-repo"), filepath.Join(dir, "peakrss")
		for out, pkg := range map[string]string{binPath: "cmd/hive-repo", peakrss: "repo/repotest/peakrss"} {
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "github.com/hivefleet/hive/"+pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if o, err := cmd.CombinedOutput(); err != nil {
				binErr = fmt.Errorf("build %s: %v\n%s", pkg, err, o)
				return
			}
		}
	})
	if binErr != nil {
		b.Fatal(binErr)
	}
	return binPath
}

// cost is the wall time, the CPU time (user+system, all threads, of the
// process and the children it waited for) and the peak RSS of runs: times
// summed, RSS the largest.
type cost struct {
	wall, cpu time.Duration
	rss       int64 // bytes
}

func (c *cost) add(o cost) {
	c.wall += o.wall
	c.cpu += o.cpu
	c.rss = max(c.rss, o.rss)
}

func (c cost) String() string {
	return fmt.Sprintf("wall %.3f s, CPU %.3f s, peak RSS %.1f MB", c.wall.Seconds(), c.cpu.Seconds(), float64(c.rss)/1e6)
}

// run runs name with args as a fresh process through peakrss (see there
// why) and returns its cost.
func run(b *testing.B, dir, name string, args ...string) cost {
	b.Helper()
	hiveRepoBin(b)
	f, err := os.CreateTemp("", "peakrss")
	if err != nil {
		b.Fatal(err)
	}
	f.Close()
	defer os.Remove(f.Name())
	cmd := exec.Command(peakrss, append([]string{f.Name(), name}, args...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	line, err := os.ReadFile(f.Name())
	if err != nil {
		b.Fatal(err)
	}
	var wall, user, sys, rss int64
	if _, err := fmt.Sscan(string(line), &wall, &user, &sys, &rss); err != nil {
		b.Fatalf("peakrss output %q: %v", line, err)
	}
	return cost{wall: time.Duration(wall), cpu: time.Duration(user + sys), rss: rss << 10}
}

func timed(b *testing.B, name string, args ...string) cost {
	b.Helper()
	return run(b, "", name, args...)
}

func shell(b *testing.B, dir, script string) cost {
	b.Helper()
	return run(b, dir, "bash", "-euo", "pipefail", "-c", script)
}

// selfCPU is this process's user+system CPU time so far (all threads).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report prints wall seconds per run of both sides and their ratio, and the
// same for CPU seconds (robust when the machine is shared: a peer with more
// threads than cores gets a larger share of a loaded machine), and for
// process runs the peak RSS of each side and their ratio.
func report(b *testing.B, hive, peer cost, peerName string, n int) {
	f := func(d time.Duration) float64 { return d.Seconds() / float64(n) }
	b.ReportMetric(f(hive.wall), "hive-s/op")
	b.ReportMetric(f(peer.wall), peerName+"-s/op")
	b.ReportMetric(f(hive.wall)/f(peer.wall), "ratio")
	if hive.cpu > 0 && peer.cpu > 0 {
		b.ReportMetric(f(hive.cpu), "hive-cpu-s/op")
		b.ReportMetric(f(peer.cpu), peerName+"-cpu-s/op")
		b.ReportMetric(f(hive.cpu)/f(peer.cpu), "cpu-ratio")
	}
	if hive.rss > 0 && peer.rss > 0 {
		b.ReportMetric(float64(hive.rss)/1e6, "hive-rss-MB")
		b.ReportMetric(float64(peer.rss)/1e6, peerName+"-rss-MB")
		b.ReportMetric(float64(hive.rss)/float64(peer.rss), "rss-ratio")
	}
	b.ReportMetric(0, "ns/op")
}

// loadavg is the first line of /proc/loadavg, printed beside figures.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// compareRuns times hive and peer (functions running one fresh process
// each and returning its cost) alternately, once each untimed first so
// the page cache holds the corpus and both programs, and logs every run.
func compareRuns(b *testing.B, peerName string, hive, peer func() cost) {
	peer()
	hive()
	var h, p cost
	runs := 0
	for b.Loop() {
		pc := peer()
		hc := hive()
		b.Logf("run %d: hive-repo %v | %s %v | ratio wall %.2f, CPU %.2f, RSS %.2f | load %s", runs+1, hc, peerName, pc,
			hc.wall.Seconds()/pc.wall.Seconds(), hc.cpu.Seconds()/pc.cpu.Seconds(), float64(hc.rss)/float64(pc.rss), loadavg())
		h.add(hc)
		p.add(pc)
		runs++
	}
	report(b, h, p, peerName, runs)
}

// BenchmarkYumFullIndex: hive-repo index --yum vs createrepo_c --no-database
// (both gzip) on a fresh directory of N RPMs, each a fresh process, as a
// user runs them: wall, CPU and peak RSS of each run and their ratios.
// Corpora: rpmpack (three files and one require each) and rpmbuild (one
// file each, built by the real rpmbuild: rpmlib() requires, file digests, a
// changelog; skipped without rpmbuild).
func BenchmarkYumFullIndex(b *testing.B) {
	cr := testenv.RequireTool(b, "createrepo_c")
	type corpus struct {
		name  string
		n     int
		build func(string, int) (string, error)
	}
	corpora := []corpus{{"rpmpack", 2000, repotest.CorpusRPM}, {"rpmbuild", 2000, repotest.CorpusRPMBuild}}
	if os.Getenv("HIVE_BENCH_10K") != "" {
		corpora = append(corpora, corpus{"rpmpack", 10000, repotest.CorpusRPM})
	}
	for _, c := range corpora {
		b.Run(fmt.Sprintf("%s/rpms=%d", c.name, c.n), func(b *testing.B) {
			if c.name == "rpmbuild" {
				if _, err := exec.LookPath("rpmbuild"); err != nil {
					b.Skip("rpmbuild not installed")
				}
			}
			sub := fmt.Sprintf("rpm-%d", c.n)
			if c.name != "rpmpack" {
				sub = fmt.Sprintf("%s-%d", c.name, c.n)
			}
			dir, err := c.build(filepath.Join(corpusDir(b), sub), c.n)
			if err != nil {
				b.Fatal(err)
			}
			bin := hiveRepoBin(b)
			rd := filepath.Join(dir, "repodata")
			compareRuns(b, "createrepo_c",
				func() cost { os.RemoveAll(rd); return timed(b, bin, "index", "--yum", dir) },
				func() cost { os.RemoveAll(rd); return timed(b, cr, "--no-database", "--quiet", dir) })
			os.RemoveAll(rd)
		})
	}
}

// BenchmarkYumAddOne: on a server holding 2,000 RPMs, one upload until its
// metadata is published (PUT + POST reindex) vs createrepo_c --update after
// adding one file to a directory of 2,000.
func BenchmarkYumAddOne(b *testing.B) {
	cr := testenv.RequireTool(b, "createrepo_c")
	const n = 2000
	src, err := repotest.CorpusRPM(filepath.Join(corpusDir(b), fmt.Sprintf("rpm-%d", n)), n)
	if err != nil {
		b.Fatal(err)
	}
	// Peer: a copy of the corpus indexed once.
	peerDir := b.TempDir()
	shell(b, src, "cp -a *.rpm "+peerDir)
	timed(b, cr, "--no-database", "--quiet", peerDir)
	// hive: a server holding the same packages.
	e := start(b, func(c *repo.Config) { c.Debounce, c.MaxDelay = time.Hour, time.Hour })
	files, _ := filepath.Glob(filepath.Join(src, "*.rpm"))
	uploadAll(e, files)

	var hive, peer cost
	var up time.Duration
	i := 0
	for b.Loop() {
		pkg, err := repotest.BuildRPM(repotest.RPM{Name: fmt.Sprintf("added-%d", i), Version: "1", Arch: "x86_64"})
		if err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("added-%d-1-1.x86_64.rpm", i)
		os.WriteFile(filepath.Join(peerDir, name), pkg, 0o644)
		peer.add(timed(b, cr, "--update", "--no-database", "--quiet", peerDir))

		start, cpu0 := time.Now(), selfCPU()
		e.upload("bench", name, pkg)
		mid := time.Now()
		e.reindex("bench")
		hive.wall += time.Since(start)
		// In-process server: the CPU of this whole process (server and
		// the benchmark's HTTP client) while it ran.
		hive.cpu += selfCPU() - cpu0
		up += mid.Sub(start)
		i++
	}
	b.ReportMetric(up.Seconds()/float64(i), "hive-upload-s/op")
	b.ReportMetric((hive.wall-up).Seconds()/float64(i), "hive-publish-s/op")
	report(b, hive, peer, "createrepo_c_update", i)
}

// BenchmarkAptAddOne: on a server holding 2,000 debs, one upload of a deb
// with a 512 KiB data file until its metadata is published (PUT, which
// verifies every member, + POST reindex) vs apt-ftparchive with its --db
// cache warm (reads only the new file) + gzip -9 + xz + release, after
// adding the same file to a directory of 2,000.
func BenchmarkAptAddOne(b *testing.B) {
	testenv.RequireTool(b, "apt-ftparchive", "gzip", "xz")
	const n = 2000
	src, err := repotest.CorpusDeb(filepath.Join(corpusDir(b), fmt.Sprintf("deb-%d", n)), n)
	if err != nil {
		b.Fatal(err)
	}
	peerDir := filepath.Join(b.TempDir(), "pool")
	os.MkdirAll(peerDir, 0o755)
	db := filepath.Join(b.TempDir(), "cache.db")
	peerRun := "apt-ftparchive --db " + db + " packages . > Packages && gzip -9 -kf Packages && xz -kf Packages && apt-ftparchive release . > ../Release.tmp && mv ../Release.tmp Release"
	shell(b, src, "cp -a *.deb "+peerDir)
	shell(b, peerDir, peerRun)
	e := start(b, func(c *repo.Config) { c.Debounce, c.MaxDelay = time.Hour, time.Hour })
	files, _ := filepath.Glob(filepath.Join(src, "*.deb"))
	uploadAll(e, files)

	body := make([]byte, 512<<10)
	for i := range body {
		body[i] = "abcdefghijklmnopqrstuvwxyz0123456789 \n"[(i*7919+i/977)%38]
	}
	var hive, peer cost
	var up time.Duration
	i := 0
	for b.Loop() {
		pkg, err := repotest.BuildDeb(repotest.Deb{Name: fmt.Sprintf("added-%d", i), Version: "1.0-1", Arch: "amd64", Compression: "xz",
			Files: map[string]string{fmt.Sprintf("./usr/share/added/%d.txt", i): string(body)}})
		if err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("added-%d_1.0-1_amd64.deb", i)
		os.WriteFile(filepath.Join(peerDir, name), pkg, 0o644)
		peer.add(shell(b, peerDir, peerRun))

		start, cpu0 := time.Now(), selfCPU()
		e.upload("bench", name, pkg)
		mid := time.Now()
		e.reindex("bench")
		hive.wall += time.Since(start)
		hive.cpu += selfCPU() - cpu0
		up += mid.Sub(start)
		i++
	}
	b.ReportMetric(up.Seconds()/float64(i), "hive-upload-s/op")
	b.ReportMetric((hive.wall-up).Seconds()/float64(i), "hive-publish-s/op")
	report(b, hive, peer, "apt-ftparchive_db", i)
}

// BenchmarkAptFullIndex: hive-repo index --apt (Packages, .gz, .xz, Release,
// InRelease, Release.gpg) vs apt-ftparchive packages + release + gzip + xz.
func BenchmarkAptFullIndex(b *testing.B) {
	testenv.RequireTool(b, "apt-ftparchive", "gzip", "xz")
	const n = 2000
	dir, err := repotest.CorpusDeb(filepath.Join(corpusDir(b), fmt.Sprintf("deb-%d", n)), n)
	if err != nil {
		b.Fatal(err)
	}
	bin := hiveRepoBin(b)
	key := filepath.Join(b.TempDir(), "key.asc")
	timed(b, bin, "keygen", "--out", key)
	clean := "rm -f Packages Packages.gz Packages.xz Release InRelease Release.gpg"
	compareRuns(b, "apt-ftparchive",
		func() cost { shell(b, dir, clean); return timed(b, bin, "index", "--apt", dir, "--signing-key", key) },
		func() cost {
			shell(b, dir, clean)
			return shell(b, dir, "apt-ftparchive packages . > Packages && gzip -9 -k Packages && xz -k Packages && apt-ftparchive release . > ../Release.tmp && mv ../Release.tmp Release")
		})
	shell(b, dir, clean)
}

// BenchmarkMirrorHit: throughput of a large cached file served by the
// mirror over loopback HTTP (page cache hot).
func BenchmarkMirrorHit(b *testing.B) {
	const size = 256 << 20
	blob := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	sum := fmt.Sprintf("%x", sha256sum(blob))
	upDir := b.TempDir()
	os.MkdirAll(filepath.Join(upDir, "by-hash/SHA256"), 0o755)
	os.WriteFile(filepath.Join(upDir, "by-hash/SHA256", sum), blob, 0o644)
	blob = nil
	up := &http.Server{Handler: http.FileServer(http.Dir(upDir))}
	ln := listen(b)
	go up.Serve(ln)
	b.Cleanup(func() { up.Close() })
	e := start(b, func(c *repo.Config) {
		c.Mirrors = map[string]mirror.Upstream{"big": {URL: "http://" + ln.Addr().String()}}
		c.MirrorMaxBytes = 1 << 30
	})
	url := e.url + "/mirror/big/by-hash/SHA256/" + sum
	fetch := func() {
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != size {
			b.Fatalf("GET: %d, %d bytes", resp.StatusCode, n)
		}
	}
	fetch() // miss: fills the cache
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		fetch()
	}
	if !strings.Contains(string(e.get("/metrics")), `hive_repo_mirror_requests_total{mirror="big",result="hit"}`) {
		b.Fatal("requests were not cache hits")
	}
}

// uploadAll uploads files to the "bench" repository, GOMAXPROCS at a
// time, and publishes it.
func uploadAll(e *env, files []string) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for _, f := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			data, _ := os.ReadFile(f)
			e.upload("bench", filepath.Base(f), data)
		}()
	}
	wg.Wait()
	e.reindex("bench")
}

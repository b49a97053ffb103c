package repo_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo"
	"github.com/hivefleet/hive/repo/repotest"
)

// TestPublishRace: while packages are uploaded and published continuously,
// real clients looping apt-get update and dnf makecache never see a hash
// mismatch or a missing file.
func TestPublishRace(t *testing.T) {
	dnf := testenv.RequireTool(t, "dnf", "rpm")
	aptGet := testenv.RequireTool(t, "apt-get", "gpgv")
	testenv.SkipShort(t)
	e := start(t, func(c *repo.Config) { c.Debounce, c.MaxDelay = 20*time.Millisecond, 100*time.Millisecond })
	e.upload("race", "seed-1-1.noarch.rpm", rpmPkg(t, "seed", "1", true))
	e.upload("race", "seed_1_all.deb", debPkg(t, "seed", "1", "gz"))
	e.reindex("race")

	// Run for at least minDur and until every side has done enough to
	// overlap (a loaded machine is slower), at most maxDur.
	const minDur, maxDur = 8 * time.Second, 45 * time.Second
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var uploads atomic.Int64
	wg.Add(1)
	go func() { // uploader: a new rpm and deb every few ms, published by the debouncer
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			e.upload("race", fmt.Sprintf("p%d-1-1.noarch.rpm", i), rpmPkg(t, fmt.Sprintf("p%d", i), "1", true))
			e.upload("race", fmt.Sprintf("p%d_1_all.deb", i), debPkg(t, fmt.Sprintf("p%d", i), "1", "gz"))
			uploads.Add(2)
			if i%5 == 0 {
				e.reindex("race") // forced publishes interleave with debounced ones
			}
			time.Sleep(15 * time.Millisecond)
		}
	}()

	dir := t.TempDir()
	key := filepath.Join(dir, "race.asc")
	os.WriteFile(key, e.get("/keys/race.asc"), 0o644)
	a := repotest.NewApt(t, filepath.Join(dir, "apt"), "deb [signed-by="+key+"] "+e.url+"/apt/race stable main")
	d := repotest.NewDnf(t, dnf, filepath.Join(dir, "dnf"), "hive-race", e.url+"/yum/race/", e.url+"/keys/race.asc")
	ctx := repotest.Ctx(t, 2*time.Minute)
	var aptRuns, dnfRuns atomic.Int64
	errs := make(chan string, 100)
	begin := time.Now()
	enough := func() bool {
		return aptRuns.Load() >= 3 && dnfRuns.Load() >= 2 && e.srvInfo("race").Generation >= 10
	}
	var done atomic.Bool
	wg.Add(2)
	go func() {
		defer wg.Done()
		for !done.Load() {
			out, err := a.Run(ctx, aptGet, "update")
			if w := repotest.Warnings(out); err != nil || len(w) > 0 {
				errs <- fmt.Sprintf("apt-get update: %v %v\n%s", err, w, out)
				return
			}
			aptRuns.Add(1)
		}
	}()
	go func() {
		defer wg.Done()
		for !done.Load() {
			out, err := d.Run(ctx, "makecache", "--refresh")
			if err != nil {
				errs <- fmt.Sprintf("dnf makecache: %v\n%s", err, out)
				return
			}
			dnfRuns.Add(1)
		}
	}()
	for time.Since(begin) < minDur || !enough() && time.Since(begin) < maxDur && len(errs) == 0 {
		time.Sleep(200 * time.Millisecond)
	}
	done.Store(true)
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	info := e.srvInfo("race")
	t.Logf("%d uploads, %d publishes, %d apt-get updates, %d dnf makecaches", uploads.Load(), info.Generation, aptRuns.Load(), dnfRuns.Load())
	if aptRuns.Load() < 3 || dnfRuns.Load() < 2 || info.Generation < 10 {
		t.Errorf("too little overlap to prove anything")
	}
}

package raftnode

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

func entry(i uint64, n int, term uint64) *raft.Log {
	return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("%d/%d/%s", i, term, make([]byte, n)))}
}

func boltStore(t *testing.T) *raftboltdb.BoltStore {
	t.Helper()
	s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(t.TempDir(), "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustGet(t *testing.T, s raft.LogStore, i uint64) *raft.Log {
	t.Helper()
	var l raft.Log
	if err := s.GetLog(i, &l); err != nil {
		t.Fatalf("GetLog(%d): %v", i, err)
	}
	return &l
}

// The newest entries are answered from memory; older ones, past the count
// bound, from the store, and both are the entries stored.
func TestLogCacheServesNewestFromMemory(t *testing.T) {
	c, err := NewLogCache(boltStore(t), 8, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 20; i += 4 {
		if err := c.StoreLogs([]*raft.Log{entry(i, 10, 1), entry(i+1, 10, 1), entry(i+2, 10, 1), entry(i+3, 10, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	first, last, _ := c.Cached()
	if first != 13 || last != 20 {
		t.Fatalf("cached [%d, %d], want [13, 20] (8 entries)", first, last)
	}
	for i := uint64(1); i <= 20; i++ {
		if got, want := string(mustGet(t, c, i).Data), string(entry(i, 10, 1).Data); got != want {
			t.Fatalf("entry %d: %q, want %q", i, got, want)
		}
	}
	if h, m := c.Stats(); h != 8 || m != 12 {
		t.Fatalf("hits %d misses %d, want 8 from memory and 12 from the store", h, m)
	}
}

// The byte bound evicts the oldest entries, and an entry larger than the
// bound is not cached at all (nor are the entries before it kept, since
// the run must be contiguous); the ones after it are.
func TestLogCacheByteBound(t *testing.T) {
	c, err := NewLogCache(raft.NewInmemStore(), 100, 4*(1000+logOverhead))
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 6; i++ {
		if err := c.StoreLog(entry(i, 1000-len(fmt.Sprintf("%d/%d/", i, 1)), 1)); err != nil {
			t.Fatal(err)
		}
	}
	if first, last, b := c.Cached(); first != 3 || last != 6 || b != 4*(1000+logOverhead) {
		t.Fatalf("cached [%d, %d] %d bytes, want [3, 6] and %d", first, last, b, 4*(1000+logOverhead))
	}
	if err := c.StoreLog(entry(7, 10_000, 1)); err != nil {
		t.Fatal(err)
	}
	if first, last, b := c.Cached(); first <= last || b != 0 {
		t.Fatalf("after an oversized entry cached [%d, %d] %d bytes, want none", first, last, b)
	}
	if err := c.StoreLogs([]*raft.Log{entry(8, 10, 1), entry(9, 10, 1)}); err != nil {
		t.Fatal(err)
	}
	if first, last, _ := c.Cached(); first != 8 || last != 9 {
		t.Fatalf("cached [%d, %d], want [8, 9]", first, last)
	}
	if got := mustGet(t, c, 7); len(got.Data) < 10_000 {
		t.Fatalf("entry 7 from the store: %d bytes", len(got.Data))
	}
}

// A follower whose tail conflicts with the leader's deletes it and stores
// the leader's entries: reads must give the new entries, never the
// overwritten ones; a head deletion (compaction) keeps the tail cached.
func TestLogCacheConflictAndCompaction(t *testing.T) {
	c, err := NewLogCache(boltStore(t), 16, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		logs = append(logs, entry(i, 5, 1))
	}
	if err := c.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteRange(7, 10); err != nil {
		t.Fatal(err)
	}
	if first, last, _ := c.Cached(); first != 1 || last != 6 {
		t.Fatalf("after deleting the tail cached [%d, %d], want [1, 6]", first, last)
	}
	if err := c.StoreLogs([]*raft.Log{entry(7, 5, 2), entry(8, 5, 2)}); err != nil {
		t.Fatal(err)
	}
	for i := uint64(7); i <= 8; i++ {
		if l := mustGet(t, c, i); l.Term != 2 {
			t.Fatalf("entry %d has term %d after the conflict, want 2", i, l.Term)
		}
	}
	if err := c.GetLog(9, &raft.Log{}); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("entry 9 after the conflict: %v, want not found", err)
	}
	if err := c.DeleteRange(1, 5); err != nil {
		t.Fatal(err)
	}
	if first, last, _ := c.Cached(); first != 6 || last != 8 {
		t.Fatalf("after compaction cached [%d, %d], want [6, 8]", first, last)
	}
	if err := c.GetLog(3, &raft.Log{}); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("entry 3 after compaction: %v, want not found", err)
	}
	// A restore stores an entry that does not follow: a new run.
	if err := c.StoreLog(entry(100, 5, 3)); err != nil {
		t.Fatal(err)
	}
	if first, last, _ := c.Cached(); first != 100 || last != 100 {
		t.Fatalf("after a jump cached [%d, %d], want [100, 100]", first, last)
	}
}

type failingStore struct{ raft.LogStore }

func (failingStore) StoreLogs([]*raft.Log) error { return errors.New("disk full") }

// Entries the store refused are not served from memory.
func TestLogCacheStoreFailureNotCached(t *testing.T) {
	c, err := NewLogCache(failingStore{raft.NewInmemStore()}, 8, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StoreLog(entry(1, 5, 1)); err == nil {
		t.Fatal("StoreLog succeeded over a failing store")
	}
	if err := c.GetLog(1, &raft.Log{}); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog of a refused entry: %v, want not found", err)
	}
}

// Random appends, conflicts, compactions and reads, checked against the
// store alone: the cache never changes an answer.
func TestLogCacheModel(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		model := raft.NewInmemStore()
		c, err := NewLogCache(raft.NewInmemStore(), 1+r.IntN(12), 200+r.IntN(2000))
		if err != nil {
			t.Fatal(err)
		}
		next, term := uint64(1), uint64(1)
		for op := 0; op < 2000; op++ {
			switch k := r.IntN(10); {
			case k < 5: // append a batch
				var b, m []*raft.Log
				for n := 1 + r.IntN(5); n > 0; n-- {
					b = append(b, entry(next, r.IntN(400), term))
					m = append(m, entry(next, 0, term))
					m[len(m)-1].Data = b[len(b)-1].Data
					next++
				}
				if err := c.StoreLogs(b); err != nil {
					t.Fatal(err)
				}
				_ = model.StoreLogs(m)
			case k < 7: // conflict (drop a tail) or compaction (drop a head)
				lo, _ := model.FirstIndex()
				hi, _ := model.LastIndex()
				if hi == 0 {
					continue
				}
				from, to := max(lo, hi-uint64(r.IntN(4))), hi
				if k == 6 {
					from, to = lo, lo+uint64(r.IntN(int(hi-lo+1)))
				}
				if err := c.DeleteRange(from, to); err != nil {
					t.Fatal(err)
				}
				_ = model.DeleteRange(from, to)
				if k == 5 {
					next, term = from, term+1
				}
			case k < 8: // restore: jump ahead
				next += uint64(1 + r.IntN(50))
				term++
			default:
				i := uint64(r.IntN(int(next + 2)))
				var got, want raft.Log
				gerr, werr := c.GetLog(i, &got), model.GetLog(i, &want)
				if (gerr == nil) != (werr == nil) || string(got.Data) != string(want.Data) || got.Term != want.Term {
					t.Fatalf("seed %d op %d: GetLog(%d) = %q %v, the store alone %q %v", seed, op, i, got.Data, gerr, want.Data, werr)
				}
			}
		}
	}
}

// A real three-server raft cluster, each over bolt behind the cache: the
// followers apply every entry without reading one back from raft.db, and
// the leader reads none back to replicate them.
func TestLogCacheRaftReadsNothingBack(t *testing.T) {
	const servers = 3
	type node struct {
		r     *raft.Raft
		cache *LogCache
		fsm   *countFSM
	}
	var nodes []node
	var trans []*raft.InmemTransport
	var cfg raft.Configuration
	for i := 0; i < servers; i++ {
		addr, tr := raft.NewInmemTransport("")
		trans = append(trans, tr)
		cfg.Servers = append(cfg.Servers, raft.Server{ID: raft.ServerID(fmt.Sprint(i)), Address: addr})
	}
	for i := range trans {
		for j := range trans {
			if i != j {
				trans[i].Connect(trans[j].LocalAddr(), trans[j])
			}
		}
	}
	for i := 0; i < servers; i++ {
		store := boltStore(t)
		cache, err := NewLogCache(store, 1024, 8<<20)
		if err != nil {
			t.Fatal(err)
		}
		rc := raft.DefaultConfig()
		rc.LocalID = cfg.Servers[i].ID
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond
		rc.CommitTimeout = 5 * time.Millisecond
		rc.LogLevel = "ERROR"
		if err := raft.BootstrapCluster(rc, cache, store, raft.NewInmemSnapshotStore(), trans[i], cfg); err != nil {
			t.Fatal(err)
		}
		f := &countFSM{}
		r, err := raft.NewRaft(rc, f, cache, store, raft.NewInmemSnapshotStore(), trans[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Shutdown().Error() })
		nodes = append(nodes, node{r, cache, f})
	}
	var leader *raft.Raft
	deadline := time.Now().Add(10 * time.Second)
	for leader == nil {
		if time.Now().After(deadline) {
			t.Fatal("no leader in 10 s")
		}
		for _, n := range nodes {
			if n.r.State() == raft.Leader {
				leader = n.r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := make([]uint64, servers)
	for i, n := range nodes {
		_, before[i] = n.cache.Stats()
	}
	const entries = 2000
	futures := make([]raft.ApplyFuture, 0, entries)
	for i := 0; i < entries; i++ {
		futures = append(futures, leader.Apply(make([]byte, 2000), 5*time.Second))
	}
	for _, f := range futures {
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range nodes {
		for n.fsm.applied() < entries && time.Now().Before(deadline.Add(10*time.Second)) {
			time.Sleep(10 * time.Millisecond)
		}
		hits, misses := n.cache.Stats()
		t.Logf("server %d: %d entries applied, %d read back from the cache, %d from raft.db", i, n.fsm.applied(), hits, misses-before[i])
		if n.fsm.applied() < entries {
			t.Fatalf("server %d applied %d of %d entries", i, n.fsm.applied(), entries)
		}
		if misses > before[i] {
			t.Errorf("server %d read %d entries back from raft.db", i, misses-before[i])
		}
	}
}

// countFSM counts the commands it applies.
type countFSM struct {
	mu sync.Mutex
	n  int
}

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l.Type == raft.LogCommand {
		f.n++
	}
	return nil
}

func (f *countFSM) applied() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (f *countFSM) Restore(io.ReadCloser) error         { return errors.New("no snapshots") }

package raftnode

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// LogCache keeps the newest raft entries decoded in memory in front of a
// log store, like raft.LogCache, but bounded by bytes as well as by count:
// raft.LogCache keeps its last N entries whatever their size (report
// batches may be 2 MiB), so a count large enough for what raft reads back
// could hold much.
//
// Raft reads back what it has just written: a follower applies each
// committed entry by reading it from the log store (processLogs), a few
// AppendEntries batches after storing it, and the leader reads the
// entries it sends to a follower that is behind. A read that misses is a
// bolt read transaction and a msgpack decode of the entry; with raft's
// four-entry cache a follower at 10,000 agents read back about 14,500
// entries (36 MB) in a 20-second report burst.
//
// The cache holds a contiguous run of indexes [first, last]: an entry
// that does not follow the last one (after a conflict, or a restore)
// starts a new run, and entries leave from the oldest end when the count
// or the byte bound would be passed. An entry larger than the byte bound
// is not cached.
type LogCache struct {
	store    raft.LogStore
	maxBytes int

	mu    sync.RWMutex
	ring  []*raft.Log
	first uint64 // first == last+1 when empty
	last  uint64
	bytes int

	hits, misses atomic.Uint64
}

// logOverhead is what a cached entry costs besides its data: the raft.Log
// and its slot.
const logOverhead = 128

// NewLogCache returns a cache of at most entries entries and maxBytes
// bytes of entry data in front of store.
func NewLogCache(store raft.LogStore, entries, maxBytes int) (*LogCache, error) {
	if entries <= 0 || maxBytes <= 0 {
		return nil, fmt.Errorf("raft log cache: entries (%d) and bytes (%d) must be positive", entries, maxBytes)
	}
	return &LogCache{store: store, maxBytes: maxBytes, ring: make([]*raft.Log, entries), first: 1}, nil
}

// Stats returns how many reads the cache answered and how many went to
// the store.
func (c *LogCache) Stats() (hits, misses uint64) { return c.hits.Load(), c.misses.Load() }

// Cached returns the range of indexes held and their bytes (first > last
// when empty).
func (c *LogCache) Cached() (first, last uint64, bytes int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.first, c.last, c.bytes
}

// IsMonotonic passes on the store's answer (raft.MonotonicLogStore).
func (c *LogCache) IsMonotonic() bool {
	if m, ok := c.store.(raft.MonotonicLogStore); ok {
		return m.IsMonotonic()
	}
	return false
}

// GetLog implements raft.LogStore.
func (c *LogCache) GetLog(idx uint64, log *raft.Log) error {
	c.mu.RLock()
	if idx >= c.first && idx <= c.last {
		*log = *c.ring[idx%uint64(len(c.ring))]
		c.mu.RUnlock()
		c.hits.Add(1)
		return nil
	}
	c.mu.RUnlock()
	c.misses.Add(1)
	return c.store.GetLog(idx, log)
}

// StoreLog implements raft.LogStore.
func (c *LogCache) StoreLog(log *raft.Log) error { return c.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore: the store first, the cache only on
// success.
func (c *LogCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		return fmt.Errorf("unable to store logs within log store, err: %q", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		c.add(l)
	}
	return nil
}

func size(l *raft.Log) int { return len(l.Data) + len(l.Extensions) + logOverhead }

func (c *LogCache) add(l *raft.Log) {
	if c.first <= c.last && l.Index != c.last+1 {
		c.reset(l.Index)
	}
	n := size(l)
	if n > c.maxBytes {
		c.reset(l.Index + 1)
		return
	}
	if c.first > c.last {
		c.first, c.last = l.Index, l.Index-1
	}
	for c.first <= c.last && (c.last-c.first+1 >= uint64(len(c.ring)) || c.bytes+n > c.maxBytes) {
		c.dropFirst()
	}
	c.ring[l.Index%uint64(len(c.ring))] = l
	c.last = l.Index
	c.bytes += n
}

func (c *LogCache) dropFirst() {
	i := c.first % uint64(len(c.ring))
	c.bytes -= size(c.ring[i])
	c.ring[i] = nil
	c.first++
}

func (c *LogCache) dropLast() {
	i := c.last % uint64(len(c.ring))
	c.bytes -= size(c.ring[i])
	c.ring[i] = nil
	c.last--
}

// reset empties the cache; the next run starts at next.
func (c *LogCache) reset(next uint64) {
	for c.first <= c.last {
		c.dropFirst()
	}
	c.first, c.last = next, next-1
}

// FirstIndex implements raft.LogStore.
func (c *LogCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

// LastIndex implements raft.LogStore.
func (c *LogCache) LastIndex() (uint64, error) { return c.store.LastIndex() }

// DeleteRange implements raft.LogStore: raft deletes from the head after a
// snapshot and from the tail on a conflict; either end leaves the cache's
// run, anything else empties it.
func (c *LogCache) DeleteRange(lo, hi uint64) error {
	c.mu.Lock()
	switch {
	case c.first > c.last || hi < c.first || lo > c.last:
	case lo <= c.first:
		for c.first <= c.last && c.first <= hi {
			c.dropFirst()
		}
	case hi >= c.last:
		for c.first <= c.last && c.last >= lo {
			c.dropLast()
		}
	default:
		c.reset(c.last + 1)
	}
	c.mu.Unlock()
	return c.store.DeleteRange(lo, hi)
}

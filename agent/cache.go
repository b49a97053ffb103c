package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hivefleet/hive/internal/atomicfile"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Cache file names under Config.DataDir.
const (
	StateFile        = "state.pb"
	AppliedFile      = "applied.json"
	CoordinatorsFile = "coordinators.json"
	// PoolFile remembers the size of the gossip pool last seen.
	PoolFile   = "pool.json"
	ReportsDir = "reports"
	// SecretFilesLedger lists the paths the file provider rendered
	// secrets into (their diffs are never reported).
	SecretFilesLedger = "secret-files.json"
)

// cacheMagic starts every cache file; the hex sha256 of the payload follows
// on the same line, so a torn or altered file is detected before decoding.
const cacheMagic = "hive-agent-cache/1 "

// ErrCorrupt is returned when a cache file fails its checksum or does not
// decode. The agent logs it, moves the file aside (suffix .corrupt) and
// goes on as if it were missing.
var ErrCorrupt = errors.New("corrupt cache file")

// Applied is what the agent last did with its state, kept beside it.
type Applied struct {
	Generation uint64    `json:"generation"`
	Hash       string    `json:"hash"`
	Phase      string    `json:"phase"`
	Finished   time.Time `json:"finished"`
	// Seq is the last report sequence number handed out.
	Seq uint64 `json:"seq"`
	// LastConverged is the state hash of the last successful run (drift
	// is told from change by it).
	LastConverged string `json:"last_converged,omitempty"`
}

// Cache is the agent's offline cache: the last NodeState, what was last
// applied, and the queue of reports not yet delivered. Every write is
// atomic (temporary file, fsync, rename, fsync of the directory): after a
// crash a file holds either the old or the new content. Methods are called
// from the agent's goroutines; the state file and the applied file each
// have one writer (the watcher and the run loop), the queue is locked by
// the caller.
type Cache struct {
	dir string
	log *slog.Logger
}

// OpenCache creates dir (0700: the state may carry secrets) and returns
// the cache in it.
func OpenCache(dir string, log *slog.Logger) (*Cache, error) {
	if err := os.MkdirAll(filepath.Join(dir, ReportsDir), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Temporary files of writes cut short by a crash are never read: drop
	// them (those of older versions too).
	for _, d := range []string{dir, filepath.Join(dir, ReportsDir)} {
		removed, err := atomicfile.RemoveStale(d, isDataTemp)
		for _, p := range removed {
			log.Info("removed a temporary file left by a crash", "file", p)
		}
		if err != nil {
			log.Warn("cannot remove stale temporary files", "err", err)
		}
	}
	return &Cache{dir: dir, log: log}, nil
}

// SaveState writes st as the last known state.
func (c *Cache) SaveState(st *hivev1.NodeState) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return writeAtomic(filepath.Join(c.dir, StateFile), seal(b), 0o600)
}

// LoadState returns the cached state, or nil when there is none. A corrupt
// file is reported with ErrCorrupt and moved aside.
func (c *Cache) LoadState() (*hivev1.NodeState, error) {
	b, err := c.read(StateFile)
	if err != nil || b == nil {
		return nil, err
	}
	st := &hivev1.NodeState{}
	if err := proto.Unmarshal(b, st); err != nil {
		return nil, c.corrupt(StateFile, err)
	}
	return st, nil
}

// SaveApplied records what was last applied.
func (c *Cache) SaveApplied(a Applied) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(c.dir, AppliedFile), seal(b), 0o600)
}

// LoadApplied returns what was last applied (zero when unknown).
func (c *Cache) LoadApplied() (Applied, error) {
	var a Applied
	b, err := c.read(AppliedFile)
	if err != nil || b == nil {
		return a, err
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return Applied{}, c.corrupt(AppliedFile, err)
	}
	return a, nil
}

// SaveCoordinators remembers the coordinator gRPC addresses last known,
// for a restart before gossip has found any.
func (c *Cache) SaveCoordinators(addrs []string) error {
	b, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(c.dir, CoordinatorsFile), seal(b), 0o600)
}

// LoadCoordinators returns the remembered coordinator addresses.
func (c *Cache) LoadCoordinators() ([]string, error) {
	b, err := c.read(CoordinatorsFile)
	if err != nil || b == nil {
		return nil, err
	}
	var addrs []string
	if err := json.Unmarshal(b, &addrs); err != nil {
		return nil, c.corrupt(CoordinatorsFile, err)
	}
	return addrs, nil
}

// SavePoolSize remembers how many members the gossip pool had, so that a
// restarted agent sizes gossip for its fleet from the start.
func (c *Cache) SavePoolSize(n int) error {
	b, err := json.Marshal(struct {
		Members int `json:"members"`
	}{n})
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(c.dir, PoolFile), seal(b), 0o600)
}

// LoadPoolSize returns the remembered pool size (0 when none).
func (c *Cache) LoadPoolSize() (int, error) {
	b, err := c.read(PoolFile)
	if err != nil || b == nil {
		return 0, err
	}
	var v struct {
		Members int `json:"members"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Members < 0 {
		return 0, c.corrupt(PoolFile, fmt.Errorf("members: %v (%d)", err, v.Members))
	}
	return v.Members, nil
}

// read returns the verified payload of name, nil if it does not exist.
func (c *Cache) read(name string) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(c.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	b, err := unseal(raw)
	if err != nil {
		return nil, c.corrupt(name, err)
	}
	return b, nil
}

// corrupt moves a bad file aside so that it is kept for inspection but
// never read again.
func (c *Cache) corrupt(name string, cause error) error {
	p := filepath.Join(c.dir, name)
	if err := os.Rename(p, p+".corrupt"); err != nil {
		c.log.Warn("cannot move corrupt cache file aside", "file", p, "err", err)
	}
	return fmt.Errorf("%w %s: %v", ErrCorrupt, p, cause)
}

func seal(payload []byte) []byte {
	sum := sha256.Sum256(payload)
	var b bytes.Buffer
	b.Grow(len(cacheMagic) + 65 + len(payload))
	b.WriteString(cacheMagic)
	b.WriteString(hex.EncodeToString(sum[:]))
	b.WriteByte('\n')
	b.Write(payload)
	return b.Bytes()
}

func unseal(raw []byte) ([]byte, error) {
	if !bytes.HasPrefix(raw, []byte(cacheMagic)) {
		return nil, errors.New("no cache header")
	}
	rest := raw[len(cacheMagic):]
	nl := bytes.IndexByte(rest, '\n')
	if nl != 64 {
		return nil, errors.New("bad checksum line")
	}
	want, err := hex.DecodeString(string(rest[:nl]))
	if err != nil {
		return nil, errors.New("bad checksum")
	}
	payload := rest[nl+1:]
	got := sha256.Sum256(payload)
	if !bytes.Equal(want, got[:]) {
		return nil, errors.New("checksum mismatch (torn or altered file)")
	}
	return payload, nil
}

// writeAtomic replaces path with data (internal/atomicfile: temporary
// file in the same directory, fsync, rename over path, fsync of the
// directory).
func writeAtomic(path string, data []byte, perm fs.FileMode) error {
	return atomicfile.WriteFile(path, data, perm)
}

// Report queue: one file per report, named by its zero-padded sequence
// number so that a directory listing is the send order.

func queueName(seq uint64) string { return fmt.Sprintf("%020d.pb", seq) }

// Enqueue writes r to the queue and drops the oldest reports beyond max.
func (c *Cache) Enqueue(r *hivev1.Report, max int) error {
	b, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := writeAtomic(filepath.Join(c.dir, ReportsDir, queueName(r.GetSeq())), seal(b), 0o600); err != nil {
		return err
	}
	seqs, err := c.Queued()
	if err != nil {
		return err
	}
	for len(seqs) > max {
		c.log.Warn("report queue full, dropping the oldest report", "seq", seqs[0])
		c.Dequeue(seqs[0])
		seqs = seqs[1:]
	}
	return nil
}

// Queued lists the queued reports' sequence numbers, oldest first.
func (c *Cache) Queued() ([]uint64, error) {
	ents, err := os.ReadDir(filepath.Join(c.dir, ReportsDir))
	if err != nil {
		return nil, fmt.Errorf("list report queue: %w", err)
	}
	var seqs []uint64
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".pb")
		if !ok || strings.HasPrefix(n, ".") {
			continue
		}
		s, err := strconv.ParseUint(n, 10, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, nil
}

// Peek reads a queued report; a corrupt one is moved aside and reported
// with ErrCorrupt.
func (c *Cache) Peek(seq uint64) (*hivev1.Report, error) {
	name := filepath.Join(ReportsDir, queueName(seq))
	b, err := c.read(name)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("report %d: %w", seq, fs.ErrNotExist)
	}
	r := &hivev1.Report{}
	if err := proto.Unmarshal(b, r); err != nil {
		return nil, c.corrupt(name, err)
	}
	return r, nil
}

// Dequeue removes a delivered report.
func (c *Cache) Dequeue(seq uint64) {
	if err := os.Remove(filepath.Join(c.dir, ReportsDir, queueName(seq))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("remove delivered report", "seq", seq, "err", err)
	}
}

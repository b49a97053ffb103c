package fsm

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"sync"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
)

// Packed commands (envelope version 2): a version 1 command compressed
// whole, for report batches. A batch of reports from many nodes repeats
// itself (resource names, outcomes, field tags) and compresses about 4:1
// with DEFLATE at its fastest setting, and everything that carries or keeps
// the entry does less: the leader's AppendEntries to each follower, bolt's
// writes (it rewrites the last leaf's entries on every append), and the
// pages of raft.db that bolt's reads map into every coordinator (about
// 25 MiB per coordinator at 10,000 agents and 20 reports each, against 5).
//
// A coordinator older than version 2 refuses a packed entry loudly
// (UnknownCommandError: upgrade it), so a leader packs only while every
// server of the raft configuration has recorded that it applies version 2
// (encodeCommand and serversApplyPacked in coordinator/apply.go).

// plainVersion is the envelope version of an unpacked command: what every
// coordinator since the first applies.
const plainVersion uint32 = 1

// packedVersion is the envelope version of a packed command.
const packedVersion uint32 = 2

// MaxUnpacked bounds a packed command's decompressed size. The leader
// packs report batches, which the batcher caps far below this.
const MaxUnpacked = 64 << 20

// PackMin is the smallest encoding worth packing.
const PackMin = 1024

var packers = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

var unpackers = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}

// EncodePacked is Encode, then compressed into a version 2 envelope when
// that is smaller; commands under PackMin stay plain.
func EncodePacked(c *hivev1.Command) ([]byte, error) {
	plain, err := Encode(c)
	if err != nil || len(plain) < PackMin {
		return plain, err
	}
	var buf bytes.Buffer
	buf.Grow(len(plain)/3 + 64)
	w := packers.Get().(*flate.Writer)
	w.Reset(&buf)
	_, err = w.Write(plain)
	if err == nil {
		err = w.Close()
	}
	w.Reset(nil)
	packers.Put(w)
	if err != nil {
		return nil, fmt.Errorf("pack command: %w", err)
	}
	if buf.Len()+16 >= len(plain) {
		return plain, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&hivev1.Command{Version: packedVersion, Packed: buf.Bytes()})
	if err != nil {
		return nil, fmt.Errorf("encode packed command: %w", err)
	}
	return b, nil
}

var errTooLarge = errors.New("packed command inflates past the limit")

// unpack returns the version 1 encoding a version 2 envelope carries.
func unpack(c *hivev1.Command) ([]byte, error) {
	if len(c.GetPacked()) == 0 || c.GetBody() != nil || c.GetAudit() != nil || c.GetTime() != nil || c.GetIgnorable() {
		return nil, errors.New("version 2 envelope without packed content, or with other fields beside it")
	}
	r := unpackers.Get().(io.ReadCloser)
	defer unpackers.Put(r)
	if err := r.(flate.Resetter).Reset(bytes.NewReader(c.GetPacked()), nil); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.Grow(len(c.GetPacked()) * 4)
	n, err := out.ReadFrom(io.LimitReader(r, MaxUnpacked+1))
	if err != nil {
		return nil, fmt.Errorf("inflate packed command: %w", err)
	}
	if n > MaxUnpacked {
		return nil, errTooLarge
	}
	return out.Bytes(), nil
}

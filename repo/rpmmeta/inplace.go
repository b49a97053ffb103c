package rpmmeta

import (
	"bytes"
	"crypto"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	rpmutils "github.com/sassoftware/go-rpmutils"
)

// The in-place reader behind ParseBytes.
//
// go-rpmutils reads a header from a stream: it copies the header three times
// (the entry table, the data area and, through a growing buffer, the whole
// header again for its digest) and decodes every entry with reflection into
// a map. For a package already in memory that is most of the cost of a full
// index and most of its garbage. inplaceHeader indexes the two headers where
// they lie and performs exactly the checks of rpmutils.Verify with no known
// keys — entry bounds, the SHA-256 (or SHA-1) header digest, every OpenPGP
// signature packet parsed (not checked against a key, as Verify without
// keys), the payload digest or else the legacy MD5 — and its accessors
// return what go-rpmutils' return for the same header. Parse (the streaming
// path, used for uploads) still goes through go-rpmutils; TestParseBytesAgrees
// and FuzzParse hold the two to the same answers.

// header is what fromHeader reads: *rpmutils.RpmHeader or *inplaceHeader.
type header interface {
	HasTag(tag int) bool
	GetStrings(tag int) ([]string, error)
	GetInts(tag int) ([]int, error)
	GetUint32s(tag int) ([]uint32, error)
	GetUint64s(tag int) ([]uint64, error)
	InstalledSize() (int64, error)
	PayloadSize() (int64, error)
	GetRange() rpmutils.HeaderRange
}

// rpm header data types.
const (
	typeNull        = 0
	typeChar        = 1
	typeInt8        = 2
	typeInt16       = 3
	typeInt32       = 4
	typeInt64       = 5
	typeString      = 6
	typeBin         = 7
	typeStringArray = 8
	typeI18NString  = 9
)

// fixedSize is the size of one value of a fixed-size type (ok false for the
// string types and unknown types, which go-rpmutils reads as strings).
func fixedSize(t int32) (int, bool) {
	switch t {
	case typeNull:
		return 0, true
	case typeChar, typeInt8, typeBin:
		return 1, true
	case typeInt16:
		return 2, true
	case typeInt32:
		return 4, true
	case typeInt64:
		return 8, true
	}
	return 0, false
}

type rawEntry struct {
	tag, typ, count int32
	contents        []byte
}

// rawHeader is one header's entries, their contents pointing into the
// package's bytes.
type rawHeader struct {
	ents []rawEntry
	orig []byte // intro, entry table and data area
}

// readRaw indexes the header at the start of b (bounds already checked by
// checkHeaders); sig pads the data area to 8 bytes, as the signature header is.
func readRaw(b []byte, sig bool) (rawHeader, error) {
	n := int(binary.BigEndian.Uint32(b[8:12]))
	size := int(binary.BigEndian.Uint32(b[12:16]))
	if sig {
		size = (size + 7) / 8 * 8
	}
	table := b[16 : 16+16*n]
	data := b[16+16*n : 16+16*n+size]
	h := rawHeader{ents: make([]rawEntry, n), orig: b[:16+16*n+size]}
	for i := range n {
		e := table[i*16 : i*16+16]
		tag := int32(binary.BigEndian.Uint32(e[0:4]))
		typ := int32(binary.BigEndian.Uint32(e[4:8]))
		off := int(int32(binary.BigEndian.Uint32(e[8:12])))
		count := int(int32(binary.BigEndian.Uint32(e[12:16])))
		if off < 0 || off > len(data) || count < 0 {
			return rawHeader{}, fmt.Errorf("tag %d out of range", tag)
		}
		var end int
		if sz, ok := fixedSize(typ); ok {
			end = off + sz*count
			if end > len(data) {
				return rawHeader{}, fmt.Errorf("tag %d out of range", tag)
			}
		} else {
			// String types are NUL-terminated.
			end = off
			for range count {
				next := bytes.IndexByte(data[end:], 0)
				if next < 0 {
					return rawHeader{}, fmt.Errorf("tag %d is truncated", tag)
				}
				end += next + 1
			}
		}
		h.ents[i] = rawEntry{tag: tag, typ: typ, count: int32(count), contents: data[off:end]}
	}
	return h, nil
}

// find returns the entry of tag; of two, the later (go-rpmutils' map keeps
// the last one).
func (h *rawHeader) find(tag int) (rawEntry, bool) {
	for i := len(h.ents) - 1; i >= 0; i-- {
		if int(h.ents[i].tag) == tag {
			return h.ents[i], true
		}
	}
	return rawEntry{}, false
}

func (h *rawHeader) getStrings(tag int) ([]string, error) {
	e, ok := h.find(tag)
	if !ok {
		return nil, rpmutils.NewNoSuchTagError(tag)
	}
	if e.typ != typeString && e.typ != typeStringArray && e.typ != typeI18NString {
		return nil, fmt.Errorf("unsupported datatype for string: %d, tag: %d", e.typ, tag)
	}
	// What strings.Split(string(contents), "\x00")[:count] gives (the
	// contents are count NUL-terminated strings, readRaw made sure), with
	// one string conversion and one slice.
	s := string(e.contents)
	out := make([]string, e.count)
	for i := range out {
		j := strings.IndexByte(s, 0)
		out[i], s = s[:j], s[j+1:]
	}
	return out, nil
}

func (h *rawHeader) getBytes(tag int) ([]byte, error) {
	e, ok := h.find(tag)
	if !ok {
		return nil, rpmutils.NewNoSuchTagError(tag)
	}
	if e.typ != typeBin {
		return nil, fmt.Errorf("unsupported datatype for bytes: %d, tag: %d", e.typ, tag)
	}
	return e.contents, nil
}

// getUints returns an integer tag's values widened to uint64, and the
// width of its type in bytes.
func (h *rawHeader) getUints(tag int) ([]uint64, int, error) {
	e, ok := h.find(tag)
	if !ok {
		return nil, 0, rpmutils.NewNoSuchTagError(tag)
	}
	c := e.contents
	var out []uint64
	var w int
	switch e.typ {
	case typeInt8, typeChar:
		w, out = 1, make([]uint64, len(c))
		for i, v := range c {
			out[i] = uint64(v)
		}
	case typeInt16:
		w, out = 2, make([]uint64, len(c)/2)
		for i := range out {
			out[i] = uint64(binary.BigEndian.Uint16(c[2*i:]))
		}
	case typeInt32:
		w, out = 4, make([]uint64, len(c)/4)
		for i := range out {
			out[i] = uint64(binary.BigEndian.Uint32(c[4*i:]))
		}
	case typeInt64:
		w, out = 8, make([]uint64, len(c)/8)
		for i := range out {
			out[i] = binary.BigEndian.Uint64(c[8*i:])
		}
	default:
		return nil, 0, fmt.Errorf("tag %d isn't an int type", tag)
	}
	return out, w, nil
}

func (h *rawHeader) getUint64s(tag int) ([]uint64, error) {
	v, _, err := h.getUints(tag)
	return v, err
}

// getUint64Fallback is go-rpmutils' rpmHeader.GetUint64Fallback.
func (h *rawHeader) getUint64Fallback(intTag, longTag int) ([]uint64, error) {
	if _, ok := h.find(longTag); ok {
		return h.getUint64s(longTag)
	}
	return h.getUint64s(intTag)
}

// inplaceHeader is a package's two headers read in place.
type inplaceHeader struct {
	sig, gen rawHeader
	start    int // offset of the main header
}

// Tag numbering of go-rpmutils' RpmHeader: signature tags are offset by
// 16384 (or below 1000), general tags are not.
const (
	sigTagBase     = 16384
	generalTagBase = 1000
)

func (h *inplaceHeader) pick(tag int) (*rawHeader, int) {
	if tag > sigTagBase {
		return &h.sig, tag - sigTagBase
	}
	if tag < generalTagBase {
		return &h.sig, tag
	}
	return &h.gen, tag
}

func (h *inplaceHeader) HasTag(tag int) bool {
	r, t := h.pick(tag)
	_, ok := r.find(t)
	return ok
}

func (h *inplaceHeader) GetStrings(tag int) ([]string, error) {
	r, t := h.pick(tag)
	return r.getStrings(t)
}

func (h *inplaceHeader) GetInts(tag int) ([]int, error) {
	r, t := h.pick(tag)
	v, w, err := r.getUints(t)
	if err != nil {
		return nil, err
	}
	if w == 8 {
		return nil, fmt.Errorf("tag %d is too big for int type", tag)
	}
	out := make([]int, len(v))
	for i, x := range v {
		if x > (1<<31)-1 {
			return nil, fmt.Errorf("value %d out of range for int32 array in tag %d", i, tag)
		}
		out[i] = int(x)
	}
	return out, nil
}

func (h *inplaceHeader) GetUint32s(tag int) ([]uint32, error) {
	r, t := h.pick(tag)
	v, w, err := r.getUints(t)
	if err != nil {
		return nil, err
	}
	if w == 8 {
		return nil, fmt.Errorf("tag %d is too big for int type", tag)
	}
	out := make([]uint32, len(v))
	for i, x := range v {
		out[i] = uint32(x)
	}
	return out, nil
}

func (h *inplaceHeader) GetUint64s(tag int) ([]uint64, error) {
	r, t := h.pick(tag)
	return r.getUint64s(t)
}

// InstalledSize is go-rpmutils' RpmHeader.InstalledSize.
func (h *inplaceHeader) InstalledSize() (int64, error) {
	if v, err := h.GetUint64s(rpmutils.LONGSIZE); err == nil && len(v) == 1 {
		return int64(v[0]), nil
	}
	v, err := h.GetUint64s(rpmutils.SIZE)
	if err != nil {
		return -1, err
	} else if len(v) != 1 {
		return -1, errors.New("incorrect number of values")
	}
	return int64(v[0]), nil
}

// PayloadSize is go-rpmutils' RpmHeader.PayloadSize.
func (h *inplaceHeader) PayloadSize() (int64, error) {
	u, err := h.sig.getUint64Fallback(rpmutils.SIG_PAYLOADSIZE-sigTagBase, rpmutils.SIG_LONGARCHIVESIZE)
	if err != nil {
		return -1, err
	} else if len(u) != 1 {
		return -1, errors.New("incorrect number of values")
	}
	return int64(u[0]), nil
}

func (h *inplaceHeader) GetRange() rpmutils.HeaderRange {
	return rpmutils.HeaderRange{Start: h.start, End: h.start + len(h.gen.orig)}
}

// readInplace reads and verifies the package b, whose header sizes
// checkHeaders has accepted, as rpmutils.Verify(b, nil) does.
func readInplace(b []byte) (*inplaceHeader, error) {
	h := &inplaceHeader{}
	var err error
	if h.sig, err = readRaw(b[96:], true); err != nil {
		return nil, err
	}
	h.start = 96 + len(h.sig.orig)
	if h.gen, err = readRaw(b[h.start:], false); err != nil {
		return nil, err
	}
	// The header digest: SHA-256, else SHA-1, if the signature header has one.
	digest, typ := h.sig.first(rpmutils.SIG_SHA256), crypto.SHA256
	if digest == "" {
		digest, typ = h.sig.first(rpmutils.SIG_SHA1), crypto.SHA1
	}
	if len(digest) > 1 {
		d := typ.New()
		d.Write(h.gen.orig)
		if hex.EncodeToString(d.Sum(nil)) != digest {
			return nil, fmt.Errorf("%s mismatch in signature header", typ)
		}
	}
	// OpenPGP signatures: parsed, not checked against a key (no keys known).
	for _, tag := range []int{rpmutils.SIG_RSA, rpmutils.SIG_DSA, rpmutils.SIG_PGP - sigTagBase, rpmutils.SIG_GPG - sigTagBase} {
		blob, err := h.sig.getBytes(tag)
		if _, ok := err.(rpmutils.NoSuchTagError); ok {
			continue
		} else if err != nil {
			return nil, err
		}
		if err := checkSignaturePacket(blob); err != nil {
			return nil, err
		}
	}
	payload := b[h.start+len(h.gen.orig):]
	if value, typ := payloadDigest(&h.gen); typ != 0 {
		if !typ.Available() {
			return nil, fmt.Errorf("unknown payload digest %s", typ)
		}
		d := typ.New()
		d.Write(payload)
		if hex.EncodeToString(d.Sum(nil)) != value {
			return nil, fmt.Errorf("payload %s digest mismatch", typ)
		}
		return h, nil
	}
	if sigmd5, _ := h.sig.getBytes(rpmutils.SIG_MD5 - sigTagBase); len(sigmd5) != 0 {
		d := md5.New()
		d.Write(h.gen.orig)
		d.Write(payload)
		if !bytes.Equal(d.Sum(nil), sigmd5) {
			return nil, errors.New("md5 digest mismatch")
		}
		return h, nil
	}
	return nil, errors.New("no usable payload digest found")
}

// first returns the first string of tag, "" if it has none; an empty
// array, which makes go-rpmutils index out of range, is a panic here too
// (ParseBytes turns it into an error).
func (h *rawHeader) first(tag int) string {
	v, err := h.getStrings(tag)
	if err != nil {
		return ""
	}
	return v[0]
}

// checkSignaturePacket accepts what go-rpmutils' parseSignature accepts:
// exactly one OpenPGP signature packet naming its issuer, with a hash
// function this program has.
func checkSignaturePacket(blob []byte) error {
	r := bytes.NewReader(blob)
	p, err := packet.Read(r)
	if err != nil {
		return err
	}
	if r.Len() > 0 {
		return rpmutils.ErrTrailingGarbage
	}
	sig, ok := p.(*packet.Signature)
	if !ok || (sig.IssuerKeyId == nil && len(sig.IssuerFingerprint) == 0) {
		return rpmutils.ErrNoPGPSignature
	}
	if !sig.Hash.Available() {
		return fmt.Errorf("signature hash %v unavailable", sig.Hash)
	}
	return nil
}

// payloadDigest is go-rpmutils' getPayloadDigest.
func payloadDigest(gen *rawHeader) (string, crypto.Hash) {
	digests, err := gen.getStrings(rpmutils.PAYLOADDIGEST)
	if err != nil || len(digests) == 0 {
		return "", 0
	}
	algos, w, err := gen.getUints(rpmutils.PAYLOADDIGESTALGO)
	if err != nil || len(algos) == 0 || w == 8 { // GetUint32s refuses an INT64 tag
		return "", 0
	}
	switch algos[0] {
	case rpmutils.HASH_MD5:
		return digests[0], crypto.MD5
	case rpmutils.HASH_SHA1:
		return digests[0], crypto.SHA1
	case rpmutils.HASH_SHA256:
		return digests[0], crypto.SHA256
	case rpmutils.HASH_SHA384:
		return digests[0], crypto.SHA384
	case rpmutils.HASH_SHA512:
		return digests[0], crypto.SHA512
	case rpmutils.HASH_SHA224:
		return digests[0], crypto.SHA224
	}
	return "", 0
}

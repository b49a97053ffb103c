// Package rpmmeta reads the metadata of an .rpm file that a YUM repository
// index needs: name, EVR, dependencies, files, changelog, header byte range.
//
// Parse reads the whole package once: the lead and both headers are checked
// for sane sizes before github.com/sassoftware/go-rpmutils decodes them, the
// header digest and the payload digest are verified, and the SHA-256 of the
// whole file is computed on the way. A package that fails any check is
// refused with an error wrapping ErrInvalid. Parse is safe for concurrent use
// and never panics on hostile input (the fuzz target FuzzParse keeps it so).
package rpmmeta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	rpmutils "github.com/sassoftware/go-rpmutils"
)

// ErrInvalid is wrapped by every error Parse returns for input that is not a
// well-formed, intact RPM package (truncated, corrupt, wrong digest, not an RPM).
var ErrInvalid = errors.New("invalid rpm")

// Limits on header sizes, as rpm itself enforces (HEADER_TAGS_MAX, HEADER_DATA_MAX).
const (
	maxEntries  = 0xffff
	maxDataSize = 256 << 20
)

// Dep is one dependency entry (provides, requires, ...).
type Dep struct {
	Name  string `json:"n"`
	Flags string `json:"f,omitempty"` // EQ, LT, GT, LE, GE or empty
	Epoch string `json:"e,omitempty"`
	Ver   string `json:"v,omitempty"`
	Rel   string `json:"r,omitempty"`
	Pre   bool   `json:"p,omitempty"`
}

// File is one entry of the package's file list.
type File struct {
	Path string `json:"p"`
	Type string `json:"t,omitempty"` // "", "dir" or "ghost"
}

// Changelog is one changelog entry.
type Changelog struct {
	Author string `json:"a"`
	Date   int64  `json:"d"`
	Text   string `json:"t"`
}

// Package is the parsed metadata of one .rpm file.
type Package struct {
	Name          string      `json:"name"`
	Arch          string      `json:"arch"`
	Epoch         string      `json:"epoch"`
	Version       string      `json:"version"`
	Release       string      `json:"release"`
	SHA256        string      `json:"sha256"`
	Summary       string      `json:"summary"`
	Description   string      `json:"description"`
	Packager      string      `json:"packager,omitempty"`
	URL           string      `json:"url,omitempty"`
	BuildTime     int64       `json:"buildtime"`
	Size          int64       `json:"size"`
	InstalledSize int64       `json:"installed"`
	ArchiveSize   int64       `json:"archive"`
	License       string      `json:"license,omitempty"`
	Vendor        string      `json:"vendor,omitempty"`
	Group         string      `json:"group,omitempty"`
	BuildHost     string      `json:"buildhost,omitempty"`
	SourceRPM     string      `json:"sourcerpm,omitempty"`
	HeaderStart   int         `json:"hstart"`
	HeaderEnd     int         `json:"hend"`
	Provides      []Dep       `json:"provides,omitempty"`
	Requires      []Dep       `json:"requires,omitempty"`
	Conflicts     []Dep       `json:"conflicts,omitempty"`
	Obsoletes     []Dep       `json:"obsoletes,omitempty"`
	Suggests      []Dep       `json:"suggests,omitempty"`
	Recommends    []Dep       `json:"recommends,omitempty"`
	Supplements   []Dep       `json:"supplements,omitempty"`
	Enhances      []Dep       `json:"enhances,omitempty"`
	Files         []File      `json:"files,omitempty"`
	Changelogs    []Changelog `json:"changelogs,omitempty"`
}

// NEVRA returns name-[epoch:]version-release.arch.
func (p *Package) NEVRA() string {
	if p.Epoch != "" && p.Epoch != "0" {
		return fmt.Sprintf("%s-%s:%s-%s.%s", p.Name, p.Epoch, p.Version, p.Release, p.Arch)
	}
	return fmt.Sprintf("%s-%s-%s.%s", p.Name, p.Version, p.Release, p.Arch)
}

// Weak dependency tags (rpm 4.12+), not named by go-rpmutils.
const (
	tagRecommendName    = 5046
	tagRecommendVersion = 5047
	tagRecommendFlags   = 5048
	tagSuggestName      = 5049
	tagSuggestVersion   = 5050
	tagSuggestFlags     = 5051
	tagSupplementName   = 5052
	tagSupplementVer    = 5053
	tagSupplementFlags  = 5054
	tagEnhanceName      = 5055
	tagEnhanceVersion   = 5056
	tagEnhanceFlags     = 5057
)

// rpmsense bits.
const (
	senseLess    = 1 << 1
	senseGreater = 1 << 2
	senseEqual   = 1 << 3
	sensePrereq  = 1 << 6
	senseScrPre  = 1 << 9
	senseScrPost = 1 << 10
	senseScrPreU = 1 << 11
	senseScrPstU = 1 << 12
	senseRpmlib  = 1 << 24
)

// file flags and modes.
const (
	fileGhost = 1 << 6
	modeDir   = 0o040000
	modeMask  = 0o170000
)

// ParseBytes is Parse for a package already in memory: the same checks and
// the same result, with the headers read in place (see inplace.go) rather
// than copied by go-rpmutils.
func ParseBytes(b []byte) (pkg *Package, err error) {
	defer func() {
		if v := recover(); v != nil {
			pkg, err = nil, fmt.Errorf("%w: malformed header (%v)", ErrInvalid, v)
		}
	}()
	if err := checkHeaders(b); err != nil {
		return nil, err
	}
	hdr, err := readInplace(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	p, err := fromHeader(hdr)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	p.SHA256 = hex.EncodeToString(sum[:])
	p.Size = int64(len(b))
	return p, nil
}

// Parse reads a complete .rpm from r and returns its metadata, with the
// file's SHA-256 and size recorded.
func Parse(r io.Reader) (pkg *Package, err error) {
	defer func() {
		if v := recover(); v != nil {
			pkg, err = nil, fmt.Errorf("%w: malformed header (%v)", ErrInvalid, v)
		}
	}()
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(r, h)}
	head, err := readHeaders(cr)
	if err != nil {
		return nil, err
	}
	hdr, _, err := rpmutils.Verify(io.MultiReader(bytes.NewReader(head), cr), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, fmt.Errorf("read rpm: %w", err)
	}
	p, err := fromHeader(hdr)
	if err != nil {
		return nil, err
	}
	p.SHA256 = hex.EncodeToString(h.Sum(nil))
	p.Size = cr.n
	return p, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// readHeaders reads the lead and the signature and general headers, checking
// every size field before anything is allocated from it.
func readHeaders(r io.Reader) ([]byte, error) {
	buf := make([]byte, 96, 4096)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: reading lead: %v", ErrInvalid, err)
	}
	if binary.BigEndian.Uint32(buf[0:4]) != 0xedabeedb {
		return nil, fmt.Errorf("%w: not an rpm file (bad lead magic)", ErrInvalid)
	}
	for i, which := range []string{"signature", "main"} {
		intro := make([]byte, 16)
		if _, err := io.ReadFull(r, intro); err != nil {
			return nil, fmt.Errorf("%w: reading %s header: %v", ErrInvalid, which, err)
		}
		if !bytes.Equal(intro[0:4], []byte{0x8e, 0xad, 0xe8, 0x01}) {
			return nil, fmt.Errorf("%w: bad %s header magic", ErrInvalid, which)
		}
		entries := binary.BigEndian.Uint32(intro[8:12])
		size := binary.BigEndian.Uint32(intro[12:16])
		if entries == 0 || entries > maxEntries || size > maxDataSize {
			return nil, fmt.Errorf("%w: %s header sizes out of range (%d entries, %d bytes)", ErrInvalid, which, entries, size)
		}
		n := int(entries)*16 + int(size)
		if i == 0 {
			n = int(entries)*16 + (int(size)+7)/8*8
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, fmt.Errorf("%w: reading %s header: truncated", ErrInvalid, which)
		}
		// Every entry must point inside the data area.
		for e := 0; e < int(entries); e++ {
			ent := body[e*16 : e*16+16]
			off := binary.BigEndian.Uint32(ent[8:12])
			cnt := binary.BigEndian.Uint32(ent[12:16])
			if off > size || cnt > maxDataSize {
				return nil, fmt.Errorf("%w: %s header entry %d out of range", ErrInvalid, which, e)
			}
		}
		buf = append(buf, intro...)
		buf = append(buf, body...)
	}
	return buf, nil
}

// checkHeaders is readHeaders for a package in memory: the same checks,
// nothing copied.
func checkHeaders(b []byte) error {
	if len(b) < 96 {
		return fmt.Errorf("%w: reading lead: truncated", ErrInvalid)
	}
	if binary.BigEndian.Uint32(b[0:4]) != 0xedabeedb {
		return fmt.Errorf("%w: not an rpm file (bad lead magic)", ErrInvalid)
	}
	off := 96
	for i, which := range []string{"signature", "main"} {
		if len(b) < off+16 {
			return fmt.Errorf("%w: reading %s header: truncated", ErrInvalid, which)
		}
		intro := b[off : off+16]
		if !bytes.Equal(intro[0:4], []byte{0x8e, 0xad, 0xe8, 0x01}) {
			return fmt.Errorf("%w: bad %s header magic", ErrInvalid, which)
		}
		entries := binary.BigEndian.Uint32(intro[8:12])
		size := binary.BigEndian.Uint32(intro[12:16])
		if entries == 0 || entries > maxEntries || size > maxDataSize {
			return fmt.Errorf("%w: %s header sizes out of range (%d entries, %d bytes)", ErrInvalid, which, entries, size)
		}
		n := int(entries)*16 + int(size)
		if i == 0 {
			n = int(entries)*16 + (int(size)+7)/8*8
		}
		off += 16
		if len(b) < off+n {
			return fmt.Errorf("%w: reading %s header: truncated", ErrInvalid, which)
		}
		for e := 0; e < int(entries); e++ {
			ent := b[off+e*16 : off+e*16+16]
			if binary.BigEndian.Uint32(ent[8:12]) > size || binary.BigEndian.Uint32(ent[12:16]) > maxDataSize {
				return fmt.Errorf("%w: %s header entry %d out of range", ErrInvalid, which, e)
			}
		}
		off += n
	}
	return nil
}

func fromHeader(h header) (*Package, error) {
	p := &Package{}
	var err error
	str := func(tag int) string {
		s, _ := h.GetStrings(tag)
		if len(s) > 0 {
			return s[0]
		}
		return ""
	}
	num := func(tag int) int64 {
		v, err := h.GetUint64s(tag)
		if err != nil || len(v) == 0 {
			return 0
		}
		return int64(v[0])
	}
	p.Name = str(rpmutils.NAME)
	p.Version = str(rpmutils.VERSION)
	p.Release = str(rpmutils.RELEASE)
	p.Arch = str(rpmutils.ARCH)
	if p.Name == "" || p.Version == "" || p.Arch == "" {
		return nil, fmt.Errorf("%w: header lacks name, version or arch", ErrInvalid)
	}
	if err := checkName(p.Name); err != nil {
		return nil, err
	}
	p.Epoch = "0"
	if h.HasTag(rpmutils.EPOCH) {
		p.Epoch = strconv.FormatInt(num(rpmutils.EPOCH), 10)
	}
	p.Summary = str(rpmutils.SUMMARY)
	p.Description = str(rpmutils.DESCRIPTION)
	p.Packager = str(rpmutils.PACKAGER)
	p.URL = str(rpmutils.URL)
	p.License = str(rpmutils.LICENSE)
	p.Vendor = str(rpmutils.VENDOR)
	p.Group = str(rpmutils.GROUP)
	p.BuildHost = str(rpmutils.BUILDHOST)
	p.SourceRPM = str(rpmutils.SOURCERPM)
	p.BuildTime = num(rpmutils.BUILDTIME)
	if p.InstalledSize, err = h.InstalledSize(); err != nil {
		p.InstalledSize = 0
	}
	if p.ArchiveSize, err = h.PayloadSize(); err != nil {
		p.ArchiveSize = 0
	}
	rg := h.GetRange()
	p.HeaderStart, p.HeaderEnd = rg.Start, rg.End

	deps := func(nameTag, verTag, flagTag int, requires bool) []Dep {
		names, _ := h.GetStrings(nameTag)
		vers, _ := h.GetStrings(verTag)
		flags, _ := h.GetInts(flagTag)
		var out []Dep
		seen := map[Dep]bool{}
		for i, n := range names {
			var f int
			if i < len(flags) {
				f = flags[i]
			}
			v := ""
			if i < len(vers) {
				v = vers[i]
			}
			if requires && (strings.HasPrefix(n, "rpmlib(") || f&senseRpmlib != 0) {
				continue
			}
			d := Dep{Name: n}
			switch f & (senseLess | senseGreater | senseEqual) {
			case senseEqual:
				d.Flags = "EQ"
			case senseLess:
				d.Flags = "LT"
			case senseGreater:
				d.Flags = "GT"
			case senseLess | senseEqual:
				d.Flags = "LE"
			case senseGreater | senseEqual:
				d.Flags = "GE"
			}
			if v != "" {
				d.Epoch, d.Ver, d.Rel = splitEVR(v)
			}
			if requires && f&(sensePrereq|senseScrPre|senseScrPost|senseScrPreU|senseScrPstU) != 0 {
				d.Pre = true
			}
			if seen[d] {
				continue
			}
			seen[d] = true
			out = append(out, d)
		}
		return out
	}
	p.Provides = deps(rpmutils.PROVIDENAME, rpmutils.PROVIDEVERSION, rpmutils.PROVIDEFLAGS, false)
	p.Requires = deps(rpmutils.REQUIRENAME, rpmutils.REQUIREVERSION, rpmutils.REQUIREFLAGS, true)
	p.Conflicts = deps(rpmutils.CONFLICTNAME, rpmutils.CONFLICTVERSION, rpmutils.CONFLICTFLAGS, false)
	p.Obsoletes = deps(rpmutils.OBSOLETENAME, rpmutils.OBSOLETEVERSION, rpmutils.OBSOLETEFLAGS, false)
	p.Recommends = deps(tagRecommendName, tagRecommendVersion, tagRecommendFlags, false)
	p.Suggests = deps(tagSuggestName, tagSuggestVersion, tagSuggestFlags, false)
	p.Supplements = deps(tagSupplementName, tagSupplementVer, tagSupplementFlags, false)
	p.Enhances = deps(tagEnhanceName, tagEnhanceVersion, tagEnhanceFlags, false)

	if p.Files, err = files(h); err != nil {
		return nil, err
	}

	ctimes, _ := h.GetUint64s(rpmutils.CHANGELOGTIME)
	cnames, _ := h.GetStrings(rpmutils.CHANGELOGNAME)
	ctexts, _ := h.GetStrings(rpmutils.CHANGELOGTEXT)
	for i := range ctimes {
		if i >= len(cnames) || i >= len(ctexts) {
			break
		}
		p.Changelogs = append(p.Changelogs, Changelog{Author: cnames[i], Date: int64(ctimes[i]), Text: ctexts[i]})
	}
	return p, nil
}

func files(h header) ([]File, error) {
	bases, _ := h.GetStrings(rpmutils.BASENAMES)
	if len(bases) == 0 {
		old, _ := h.GetStrings(rpmutils.OLDFILENAMES)
		out := make([]File, 0, len(old))
		for _, o := range old {
			out = append(out, File{Path: o})
		}
		return out, nil
	}
	dirs, _ := h.GetStrings(rpmutils.DIRNAMES)
	idx, _ := h.GetUint32s(rpmutils.DIRINDEXES)
	modes, _ := h.GetInts(rpmutils.FILEMODES)
	flags, _ := h.GetInts(rpmutils.FILEFLAGS)
	if len(idx) != len(bases) {
		return nil, fmt.Errorf("%w: file list arrays disagree", ErrInvalid)
	}
	out := make([]File, 0, len(bases))
	for i, b := range bases {
		if int(idx[i]) >= len(dirs) {
			return nil, fmt.Errorf("%w: file dir index out of range", ErrInvalid)
		}
		f := File{Path: dirs[idx[i]] + b}
		switch {
		case i < len(flags) && flags[i]&fileGhost != 0:
			f.Type = "ghost"
		case i < len(modes) && modes[i]&modeMask == modeDir:
			f.Type = "dir"
		}
		out = append(out, f)
	}
	return out, nil
}

// splitEVR splits "[epoch:]version[-release]".
func splitEVR(s string) (e, v, r string) {
	if i := strings.IndexByte(s, ':'); i >= 0 {
		e, s = s[:i], s[i+1:]
	} else {
		e = "0"
	}
	if i := strings.LastIndexByte(s, '-'); i >= 0 {
		v, r = s[:i], s[i+1:]
	} else {
		v = s
	}
	return e, v, r
}

func checkName(n string) error {
	if strings.ContainsAny(n, "/\x00\n") || n == "." || n == ".." || path.Clean(n) != n {
		return fmt.Errorf("%w: bad package name %q", ErrInvalid, n)
	}
	return nil
}

// IsPrimaryFile reports whether createrepo_c lists path in primary.xml's
// short file list: anything under /etc/, any path containing "bin/", and
// /usr/lib/sendmail.
func IsPrimaryFile(p string) bool {
	return strings.HasPrefix(p, "/etc/") || strings.Contains(p, "bin/") || p == "/usr/lib/sendmail"
}

// CanonicalVersion returns a form of an RPM version or release that is
// equal for two strings exactly when rpmvercmp compares them equal:
// separators (anything but letters, digits, '~' and '^') are dropped,
// digit runs lose their leading zeros, and the runs are kept apart
// ("1.0" = "1_00" = "1.0.", "1a" = "1.a").
func CanonicalVersion(v string) string {
	var b strings.Builder
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	isAlpha := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	for i := 0; i < len(v); {
		c := v[i]
		switch {
		case c == '~' || c == '^':
			b.WriteByte(c)
			i++
		case isDigit(c):
			j := i
			for j < len(v) && isDigit(v[j]) {
				j++
			}
			b.WriteByte('#')
			b.WriteString(strings.TrimLeft(v[i:j], "0"))
			i = j
		case isAlpha(c):
			j := i
			for j < len(v) && isAlpha(v[j]) {
				j++
			}
			b.WriteByte('=')
			b.WriteString(v[i:j])
			i = j
		default:
			i++
		}
	}
	return b.String()
}

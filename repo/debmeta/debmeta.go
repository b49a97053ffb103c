// Package debmeta reads the control data of a .deb file that an APT
// repository index needs.
//
// Parse reads the whole package once and verifies every member: the ar
// archive is walked member by member (each exactly as long as its header
// says), debian-binary must come first, the control member (control.tar,
// .gz, .xz or .zst) is decompressed to its end and its ./control file
// parsed, and the data member (also .bz2 or .lzma) is decompressed to its
// end and its tar archive read to the last byte of the last file, so a
// corrupt or truncated member fails a checksum or the tar reader. The
// member order is dpkg's: debian-binary, control, data, with only
// underscore-prefixed members (signatures, for one) between or after them.
// MD5, SHA-1 and SHA-256 of the whole file are computed on the same pass.
// Input that is not an intact binary package is refused with an error
// wrapping ErrInvalid. Parse is safe for concurrent use and never panics on
// hostile input (FuzzParse keeps it so).
package debmeta

import (
	"archive/tar"
	"bufio"
	"compress/bzip2"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// ErrInvalid is wrapped by every error Parse returns for input that is not a
// well-formed Debian binary package.
var ErrInvalid = errors.New("invalid deb")

const (
	maxControl = 16 << 20 // decompressed control.tar limit
	maxFields  = 1 << 20  // control file limit
)

// Field is one control field, in file order. Value keeps continuation lines
// (each starting with a space) joined by "\n".
type Field struct {
	Name  string `json:"n"`
	Value string `json:"v"`
}

// Package is the parsed control data of one .deb file.
type Package struct {
	Name         string  `json:"name"`
	Version      string  `json:"version"`
	Architecture string  `json:"arch"`
	Fields       []Field `json:"fields"`
	Size         int64   `json:"size"`
	MD5          string  `json:"md5"`
	SHA1         string  `json:"sha1"`
	SHA256       string  `json:"sha256"`
}

// Field returns the value of the named field (case-insensitive), or "".
func (p *Package) Field(name string) string {
	for _, f := range p.Fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

var (
	nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	verRe  = regexp.MustCompile(`^([0-9]+:)?[A-Za-z0-9][A-Za-z0-9.+~:-]*$`)
	archRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// repoFields are written by the index, never taken from the package.
var repoFields = map[string]bool{"filename": true, "size": true, "md5sum": true, "sha1": true, "sha256": true, "sha512": true}

// Parse reads a complete .deb from r.
func Parse(r io.Reader) (pkg *Package, err error) {
	defer func() {
		if v := recover(); v != nil {
			pkg, err = nil, fmt.Errorf("%w: malformed package (%v)", ErrInvalid, v)
		}
	}()
	hm, h1, h256 := md5.New(), sha1.New(), sha256.New()
	cr := &countReader{r: io.TeeReader(r, io.MultiWriter(hm, h1, h256))}
	br, _ := bufPool.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReaderSize(cr, 64<<10)
	} else {
		br.Reset(cr)
	}
	defer func() { br.Reset(nil); bufPool.Put(br) }()
	magic := make([]byte, 8)
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != "!<arch>\n" {
		return nil, fmt.Errorf("%w: not an ar archive", ErrInvalid)
	}
	var control []byte
	sawBinary, sawData := false, false
	for i := 0; ; i++ {
		name, size, err := nextMember(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		body := &member{r: br, name: name, size: size, left: size}
		switch {
		case i == 0:
			if name != "debian-binary" {
				return nil, fmt.Errorf("%w: first member is %q, not debian-binary", ErrInvalid, name)
			}
			b, _ := io.ReadAll(io.LimitReader(body, 64))
			if !strings.HasPrefix(string(b), "2.") {
				return nil, fmt.Errorf("%w: unsupported format version %q", ErrInvalid, strings.TrimSpace(string(b)))
			}
			sawBinary = true
		case strings.HasPrefix(name, "_"):
			// Reserved for additions to the format (dpkg-sig's _gpgbuilder,
			// debsigs' _gpgorigin, appended after data); dpkg ignores them.
		case sawData:
			// dpkg stops reading at the data member: nothing else may hide behind it.
			return nil, fmt.Errorf("%w: member %q after the data member", ErrInvalid, name)
		case strings.HasPrefix(name, "control.tar"):
			if control != nil {
				return nil, fmt.Errorf("%w: second control member %q", ErrInvalid, name)
			}
			if control, err = readControl(name, body); err != nil {
				return nil, err
			}
		case strings.HasPrefix(name, "data.tar"):
			if control == nil {
				return nil, fmt.Errorf("%w: data member %q before the control member", ErrInvalid, name)
			}
			if err := checkData(name, body); err != nil {
				return nil, err
			}
			sawData = true
		default:
			return nil, fmt.Errorf("%w: unexpected member %q", ErrInvalid, name)
		}
		if _, err := io.Copy(io.Discard, body); err != nil {
			return nil, memberErr(body, err)
		}
		if size%2 == 1 {
			if _, err := br.Discard(1); err != nil && size > 0 {
				return nil, fmt.Errorf("%w: truncated after member %s", ErrInvalid, name)
			}
		}
	}
	if !sawBinary || control == nil || !sawData {
		return nil, fmt.Errorf("%w: missing debian-binary, control or data member", ErrInvalid)
	}
	fields, err := ParseControl(control)
	if err != nil {
		return nil, err
	}
	p := &Package{Size: cr.n}
	for _, f := range fields {
		if repoFields[strings.ToLower(f.Name)] {
			continue
		}
		p.Fields = append(p.Fields, f)
	}
	p.Name, p.Version, p.Architecture = p.Field("Package"), p.Field("Version"), p.Field("Architecture")
	if !nameRe.MatchString(p.Name) {
		return nil, fmt.Errorf("%w: bad or missing Package %q", ErrInvalid, p.Name)
	}
	if !verRe.MatchString(p.Version) {
		return nil, fmt.Errorf("%w: bad or missing Version %q", ErrInvalid, p.Version)
	}
	if !archRe.MatchString(p.Architecture) {
		return nil, fmt.Errorf("%w: bad or missing Architecture %q", ErrInvalid, p.Architecture)
	}
	p.MD5, p.SHA1, p.SHA256 = hexSum(hm), hexSum(h1), hexSum(h256)
	return p, nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

func nextMember(br *bufio.Reader) (string, int64, error) {
	hdr := make([]byte, 60)
	n, err := io.ReadFull(br, hdr)
	if n == 0 && (err == io.EOF) {
		return "", 0, io.EOF
	}
	if err != nil {
		return "", 0, fmt.Errorf("%w: truncated ar member header", ErrInvalid)
	}
	if string(hdr[58:60]) != "`\n" {
		return "", 0, fmt.Errorf("%w: bad ar member header", ErrInvalid)
	}
	name := strings.TrimRight(strings.TrimSpace(string(hdr[0:16])), "/")
	size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
	if err != nil || size < 0 {
		return "", 0, fmt.Errorf("%w: bad ar member size", ErrInvalid)
	}
	return name, size, nil
}

// member reads one ar member's body: exactly size bytes, or an
// io.ErrUnexpectedEOF if the archive ends before them.
type member struct {
	r          io.Reader
	name       string
	size, left int64
	short      bool // the archive ended inside this member
}

func (m *member) Read(b []byte) (int, error) {
	if m.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > m.left {
		b = b[:m.left]
	}
	n, err := m.r.Read(b)
	m.left -= int64(n)
	if err == io.EOF && m.left > 0 {
		m.short = true
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// memberErr describes err met while reading m: a truncated archive is named
// as such, whatever the decompressor made of the missing bytes.
func memberErr(m *member, err error) error {
	if m.short {
		return fmt.Errorf("%w: member %s truncated: %d of %d bytes", ErrInvalid, m.name, m.size-m.left, m.size)
	}
	if errors.Is(err, ErrInvalid) {
		return err
	}
	return fmt.Errorf("%w: member %s: %v", ErrInvalid, m.name, err)
}

// MaxData bounds the decompressed size of a data member: a package that
// unpacks to more is refused rather than decompressed for ever.
const MaxData = 64 << 30

// maxZstdWindow is the largest zstd window accepted, libzstd's default
// decoder limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT), which dpkg uses.
const maxZstdWindow = 1 << 27

// decompressor returns a reader of the decompressed member; the caller
// closes it if it is an io.Closer. Control members may be .tar, .gz, .xz
// or .zst (as dpkg accepts); data members also .bz2 and .lzma.
func decompressor(name string, r io.Reader, data bool) (io.Reader, error) {
	var (
		dr  io.Reader
		err error
	)
	switch {
	case strings.HasSuffix(name, ".tar"):
		return r, nil
	case strings.HasSuffix(name, ".tar.gz"):
		if z, _ := gzPool.Get().(*gzip.Reader); z != nil {
			if err = z.Reset(r); err == nil {
				return &pooledGzip{Reader: z}, nil
			}
		} else if z, err = gzip.NewReader(r); err == nil {
			return &pooledGzip{Reader: z}, nil
		}
	case strings.HasSuffix(name, ".tar.xz"):
		dr, err = xz.NewReader(r)
	case strings.HasSuffix(name, ".tar.zst"):
		d, zerr := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if zerr != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, zerr)
		}
		return d.IOReadCloser(), nil
	case data && strings.HasSuffix(name, ".tar.bz2"):
		return bzip2.NewReader(r), nil
	case data && strings.HasSuffix(name, ".tar.lzma"):
		dr, err = lzma.NewReader(r)
	default:
		return nil, fmt.Errorf("%w: unsupported member compression %q", ErrInvalid, name)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
	}
	return dr, nil
}

// Readers reused across packages: a full index of 2,000 small debs
// otherwise allocates a 64 KiB bufio.Reader and two gzip readers (with
// their 32 KiB windows) per package, 270 of its 350 MB of garbage.
var bufPool, gzPool sync.Pool

// pooledGzip returns its reader to gzPool when closed (once).
type pooledGzip struct {
	*gzip.Reader
	closed bool
}

func (p *pooledGzip) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	err := p.Reader.Close()
	gzPool.Put(p.Reader)
	return err
}

// checkData decompresses the data member to its end and reads its tar
// archive entry by entry, every byte of every file, then the rest of the
// decompressed stream: a corrupt or truncated member fails a checksum, the
// decompressor or the tar reader, and is refused naming the member and,
// where known, the entry.
func checkData(name string, body *member) error {
	dr, err := decompressor(name, body, true)
	if err != nil {
		if body.short {
			return memberErr(body, err)
		}
		return err
	}
	if c, ok := dr.(io.Closer); ok {
		defer c.Close()
	}
	lr := &io.LimitedReader{R: dr, N: MaxData + 1}
	tr := tar.NewReader(lr)
	fail := func(what string, err error) error {
		if body.short {
			return memberErr(body, err)
		}
		if lr.N <= 0 {
			return fmt.Errorf("%w: %s unpacks to more than %d bytes", ErrInvalid, name, int64(MaxData))
		}
		return fmt.Errorf("%w: %s: %s%v", ErrInvalid, name, what, err)
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail("tar: ", err)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return fail(h.Name+": ", err)
		}
	}
	// After the end-of-archive blocks: padding, then the compressor's
	// trailer and checksum.
	if _, err := io.Copy(io.Discard, lr); err != nil {
		return fail("after the tar archive: ", err)
	}
	if lr.N <= 0 {
		return fail("", nil)
	}
	return nil
}

func readControl(name string, body *member) ([]byte, error) {
	dr, err := decompressor(name, body, false)
	if err != nil {
		if body.short {
			return nil, memberErr(body, err)
		}
		return nil, err
	}
	if c, ok := dr.(io.Closer); ok {
		defer c.Close()
	}
	fail := func(err error) error {
		if body.short {
			return memberErr(body, err)
		}
		return fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
	}
	tr := tar.NewReader(io.LimitReader(dr, maxControl))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: %s has no control file", ErrInvalid, name)
		}
		if err != nil {
			return nil, fail(err)
		}
		if strings.TrimPrefix(h.Name, "./") == "control" && h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(io.LimitReader(tr, maxFields+1))
			if err != nil {
				return nil, fail(err)
			}
			if len(b) > maxFields {
				return nil, fmt.Errorf("%w: control file too large", ErrInvalid)
			}
			// Read the member to its end so the compressor's checksum is verified.
			for {
				if _, err := tr.Next(); err == io.EOF {
					break
				} else if err != nil {
					return nil, fail(err)
				}
			}
			if _, err := io.Copy(io.Discard, io.LimitReader(dr, maxControl)); err != nil {
				return nil, fail(err)
			}
			return b, nil
		}
	}
}

// ParseControl parses one deb822 stanza (a control file).
func ParseControl(b []byte) ([]Field, error) {
	var out []Field
	for ln, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if line == "" {
			return nil, fmt.Errorf("%w: control line %d: empty line inside stanza", ErrInvalid, ln+1)
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: control line %d: continuation without field", ErrInvalid, ln+1)
			}
			out[len(out)-1].Value += "\n" + line
			continue
		}
		if line[0] == '#' {
			continue
		}
		i := strings.IndexByte(line, ':')
		if i <= 0 || strings.ContainsAny(line[:i], " \t") {
			return nil, fmt.Errorf("%w: control line %d: not a field", ErrInvalid, ln+1)
		}
		out = append(out, Field{Name: line[:i], Value: strings.TrimSpace(line[i+1:])})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty control file", ErrInvalid)
	}
	return out, nil
}

// CanonicalVersion returns a form of a Debian version that is equal for two
// versions exactly when dpkg compares them equal: the epoch defaults to 0
// and loses leading zeros, every digit run loses its leading zeros, and a
// revision of only zeros is the same as none ("1.0" = "0:1.00-0").
func CanonicalVersion(v string) string {
	epoch, rest := "0", v
	if i := strings.IndexByte(v, ':'); i >= 0 {
		epoch, rest = v[:i], v[i+1:]
		if epoch = strings.TrimLeft(epoch, "0"); epoch == "" {
			epoch = "0"
		}
	}
	upstream, revision := rest, ""
	if i := strings.LastIndexByte(rest, '-'); i >= 0 {
		upstream, revision = rest[:i], rest[i+1:]
	}
	return epoch + ":" + canonPart(upstream) + "-" + canonPart(revision)
}

// canonPart rewrites the alternating non-digit and digit runs of a version
// part as dpkg's verrevcmp sees them: non-digit runs compare character by
// character, digit runs as numbers, a missing digit run as 0.
func canonPart(s string) string {
	var b strings.Builder
	for first := true; s != ""; first = false {
		i := strings.IndexFunc(s, func(r rune) bool { return r >= '0' && r <= '9' })
		if i < 0 {
			i = len(s)
		}
		nd := s[:i]
		s = s[i:]
		j := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
		if j < 0 {
			j = len(s)
		}
		d := strings.TrimLeft(s[:j], "0")
		s = s[j:]
		if first && nd == "" && d == "" && s == "" {
			break // "0", "00": the same as nothing
		}
		b.WriteString(nd)
		b.WriteByte('#') // not a version character: keeps runs apart
		b.WriteString(d)
		b.WriteByte('#')
	}
	return b.String()
}

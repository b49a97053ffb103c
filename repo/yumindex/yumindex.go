// Package yumindex renders YUM repository metadata (repodata/repomd.xml and
// the hash-named primary, filelists and other .xml.gz) from parsed RPM
// headers, following what createrepo_c emits: header-range, pre="1" on
// requires needed by scriptlets, rpmlib() requires dropped, epoch defaulting
// to 0, only /etc/, */bin/* and /usr/lib/sendmail in primary's file list.
//
// Each Entry renders its three XML fragments once and keeps them, so a
// repository indexed again after one upload re-renders one package; Build
// then concatenates and compresses. Build is safe to call from several
// goroutines on disjoint or shared entries. Build does no I/O.
package yumindex

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/gzip"

	"github.com/hivefleet/hive/repo/rpmmeta"
)

// ChangelogLimit is how many changelog entries other.xml keeps per package
// (createrepo_c's default --changelog-limit).
const ChangelogLimit = 10

// Entry is one package of the repository.
type Entry struct {
	Pkg      *rpmmeta.Package
	Href     string // location href, relative to the repository root
	FileTime int64  // <time file=...>: upload time or file mtime

	once                      sync.Once
	done                      atomic.Bool
	primary, filelists, other []byte
	key                       [32]byte // SHA-256 of Pkg.SHA256, Href, FileTime: names the entry in run keys
}

// File is one generated metadata file.
type File struct {
	Name      string // path relative to the repository root, e.g. repodata/<sha256>-primary.xml.gz
	Data      []byte
	SHA256    string
	OpenSHA   string
	OpenSize  int64
	Type      string // primary, filelists, other
	Timestamp int64
}

// Options control Build.
type Options struct {
	Revision  int64 // <revision>, usually the Unix time of the build
	Timestamp int64 // <timestamp> of each data element
	// GzipLevel is the compression level (default: gzip default, as createrepo_c).
	GzipLevel int
	// Chunks, when set, compresses in cached runs (incremental builds).
	Chunks *Chunks
}

// Result is a complete set of repository metadata.
type Result struct {
	Files  []File // hash-named files, written before RepoMD
	RepoMD []byte // repodata/repomd.xml
}

// Build renders the metadata for entries (in any order; output is sorted by href).
func Build(entries []*Entry, opt Options) (*Result, error) {
	es := append([]*Entry(nil), entries...)
	slices.SortFunc(es, func(a, b *Entry) int { return strings.Compare(a.Href, b.Href) })
	renderAll(es)
	if opt.GzipLevel == 0 {
		opt.GzipLevel = gzip.DefaultCompression
	}
	parts := fileParts(len(es))
	files := make([]File, len(parts))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var z []byte
			var osum [32]byte
			var osize int64
			if opt.Chunks != nil {
				z, osum, osize, errs[i] = opt.Chunks.build(p.typ, p.head, p.tail, es, p.get, opt.GzipLevel)
			} else {
				z, osum, osize, errs[i] = whole(p.head, p.tail, es, p.get, opt.GzipLevel)
			}
			if errs[i] != nil {
				errs[i] = fmt.Errorf("compress %s: %w", p.typ, errs[i])
				return
			}
			files[i] = newFile(p.typ, z, osum, osize, opt.Timestamp)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if opt.Chunks != nil {
		opt.Chunks.sweep()
	}
	return &Result{Files: files, RepoMD: RepoMD(files, opt.Revision)}, nil
}

// part is one of the three files: its type, its text before and after the
// packages, and which of an entry's fragments it holds.
type part struct {
	typ, head, tail string
	get             func(*Entry) []byte
}

// fileParts returns the three files of a repository of n packages.
func fileParts(n int) [3]part {
	c := strconv.Itoa(n)
	return [3]part{
		{"primary", `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="` + c + `">` + "\n", "</metadata>\n", func(e *Entry) []byte { return e.primary }},
		{"filelists", `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<filelists xmlns="http://linux.duke.edu/metadata/filelists" packages="` + c + `">` + "\n", "</filelists>\n", func(e *Entry) []byte { return e.filelists }},
		{"other", `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<otherdata xmlns="http://linux.duke.edu/metadata/other" packages="` + c + `">` + "\n", "</otherdata>\n", func(e *Entry) []byte { return e.other }},
	}
}

func newFile(typ string, z []byte, osum [32]byte, osize, timestamp int64) File {
	sum := sha256.Sum256(z)
	h := hex.EncodeToString(sum[:])
	return File{
		Name: "repodata/" + h + "-" + typ + ".xml.gz", Data: z, SHA256: h,
		OpenSHA: hex.EncodeToString(osum[:]), OpenSize: osize, Type: typ, Timestamp: timestamp,
	}
}

// Stream builds the same metadata as Build from entries given one at a time
// in href order, rendering each into reused buffers and compressing it at
// once, so that it holds no entry and no uncompressed file: only the three
// compressed files grow. It is what the pipeline indexer (hive-repo index
// --yum) uses, whose packages are parsed, written and dropped one by one.
// A Stream is used by one goroutine.
type Stream struct {
	n, added int
	opt      Options
	parts    [3]part
	out      [3]streamFile
	b        buf
	last     string
	err      error
}

type streamFile struct {
	z    bytes.Buffer
	zw   *gzip.Writer
	oh   hash.Hash
	size int64
}

func (f *streamFile) write(b []byte) {
	f.oh.Write(b)
	f.zw.Write(b)
	f.size += int64(len(b))
}

// NewStream starts the metadata of a repository of n packages.
func NewStream(n int, opt Options) (*Stream, error) {
	if opt.GzipLevel == 0 {
		opt.GzipLevel = gzip.DefaultCompression
	}
	s := &Stream{n: n, opt: opt, parts: fileParts(n)}
	for i := range s.out {
		f := &s.out[i]
		zw, err := gzip.NewWriterLevel(&f.z, opt.GzipLevel)
		if err != nil {
			return nil, err
		}
		f.zw, f.oh = zw, sha256.New()
		f.write([]byte(s.parts[i].head))
	}
	return s, nil
}

// Add renders e into the three files. Entries must come in strictly
// increasing href order (the order Build sorts them in), at most n of them.
func (s *Stream) Add(e *Entry) error {
	if s.err != nil {
		return s.err
	}
	switch {
	case s.added == s.n:
		s.err = fmt.Errorf("yumindex stream: more than the %d packages announced", s.n)
	case s.added > 0 && e.Href <= s.last:
		s.err = fmt.Errorf("yumindex stream: %s after %s: entries must come in href order", e.Href, s.last)
	}
	if s.err != nil {
		return s.err
	}
	s.last = e.Href
	s.added++
	for i, render := range [3]func(*buf){e.primaryTo, e.filelistsTo, e.otherTo} {
		s.b.Reset()
		render(&s.b)
		s.out[i].write(s.b.Bytes())
	}
	return nil
}

// Close finishes the three files and returns the metadata. It fails when
// fewer entries than announced were added.
func (s *Stream) Close() (*Result, error) {
	if s.err != nil {
		return nil, s.err
	}
	if s.added != s.n {
		return nil, fmt.Errorf("yumindex stream: %d packages announced, %d added", s.n, s.added)
	}
	files := make([]File, len(s.out))
	for i := range s.out {
		f := &s.out[i]
		f.write([]byte(s.parts[i].tail))
		if err := f.zw.Close(); err != nil {
			return nil, fmt.Errorf("compress %s: %w", s.parts[i].typ, err)
		}
		var osum [32]byte
		f.oh.Sum(osum[:0])
		files[i] = newFile(s.parts[i].typ, f.z.Bytes(), osum, f.size, s.opt.Timestamp)
	}
	s.err = errors.New("yumindex stream: closed")
	return &Result{Files: files, RepoMD: RepoMD(files, s.opt.Revision)}, nil
}

// whole compresses the file as one gzip member, as createrepo_c does,
// hashing the uncompressed stream on the way (never held in memory whole).
func whole(head, tail string, es []*Entry, get func(*Entry) []byte, level int) ([]byte, [32]byte, int64, error) {
	size := len(head) + len(tail)
	for _, e := range es {
		size += len(get(e))
	}
	oh := sha256.New()
	z, err := gzWith(level, size/4, func(zw *gzip.Writer) {
		w := func(b []byte) {
			oh.Write(b)
			zw.Write(b)
		}
		w([]byte(head))
		for _, e := range es {
			w(get(e))
		}
		w([]byte(tail))
	})
	var sum [32]byte
	oh.Sum(sum[:0])
	return z, sum, int64(size), err
}

// gzPool keeps writers of the default level: a new one allocates large tables.
var gzPool sync.Pool

func gz(data []byte, level, hint int) ([]byte, error) {
	return gzWith(level, hint, func(zw *gzip.Writer) { zw.Write(data) })
}

// gzWith returns one gzip member of what write writes to its writer.
func gzWith(level, hint int, write func(*gzip.Writer)) ([]byte, error) {
	var z bytes.Buffer
	z.Grow(hint)
	var zw *gzip.Writer
	if level == gzip.DefaultCompression {
		if w, ok := gzPool.Get().(*gzip.Writer); ok {
			zw = w
			zw.Reset(&z)
			defer gzPool.Put(zw)
		}
	}
	if zw == nil {
		w, err := gzip.NewWriterLevel(&z, level)
		if err != nil {
			return nil, err
		}
		zw = w
		if level == gzip.DefaultCompression {
			defer gzPool.Put(zw)
		}
	}
	write(zw)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return z.Bytes(), nil
}

// Chunks keeps compressed runs of packages between builds, so that a build
// after a small change compresses only the runs that changed. A file is
// then a series of gzip members (header, runs, footer), which zlib,
// libsolv and every gzip reader read as one stream (RFC 1952 §2.2). Run
// boundaries are content-defined (by a hash of each entry's href), so one
// insertion changes one run. A Chunks belongs to one repository and is used
// by one Build at a time.
type Chunks struct {
	mu   sync.Mutex
	m    map[string][]byte // gzip member by run key
	used map[string]bool
}

// NewChunks returns an empty run cache.
func NewChunks() *Chunks { return &Chunks{m: map[string][]byte{}, used: map[string]bool{}} }

const (
	runAvg = 64  // average entries per run
	runMax = 256 // hard limit
)

func (c *Chunks) build(typ, head, tail string, es []*Entry, get func(*Entry) []byte, level int) ([]byte, [32]byte, int64, error) {
	// Runs and their keys; the open checksum covers the whole file (its
	// header carries the package count), so it is computed on the way.
	type run struct {
		start, end int
		key        string
	}
	var runs []run
	oh := sha256.New()
	oh.Write([]byte(head))
	osize := int64(len(head))
	// A run's key: its type and the SHA-256 of its entries' keys.
	kb := make([]byte, 0, runMax*32)
	start := 0
	for i, e := range es {
		kb = append(kb, e.key[:]...)
		f := get(e)
		oh.Write(f)
		osize += int64(len(f))
		if i+1 < len(es) && i+1-start < runMax && fnv32(e.Href)%runAvg != 0 {
			continue
		}
		k := sha256.Sum256(kb)
		runs = append(runs, run{start, i + 1, typ + string(k[:])})
		start = i + 1
		kb = kb[:0]
	}
	oh.Write([]byte(tail))
	osize += int64(len(tail))

	// Compressed file: cached members for head, runs and tail.
	member := func(key string, data func() []byte) ([]byte, error) {
		c.mu.Lock()
		z, ok := c.m[key]
		c.used[key] = true
		c.mu.Unlock()
		if ok {
			return z, nil
		}
		b := data()
		z, err := gz(b, level, len(b)/4+64)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.m[key] = z
		c.mu.Unlock()
		return z, nil
	}
	parts := make([][]byte, 0, len(runs)+2)
	hz, err := member(typ+"\x00head\x00"+head, func() []byte { return []byte(head) })
	if err != nil {
		return nil, [32]byte{}, 0, err
	}
	parts = append(parts, hz)
	// Runs not in the cache are compressed concurrently.
	zs := make([][]byte, len(runs))
	errs := make([]error, len(runs))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			zs[i], errs[i] = member(r.key, func() []byte {
				var b []byte
				for _, x := range es[r.start:r.end] {
					b = append(b, get(x)...)
				}
				return b
			})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, [32]byte{}, 0, err
	}
	parts = append(parts, zs...)
	tz, err := member(typ+"\x00tail", func() []byte { return []byte(tail) })
	if err != nil {
		return nil, [32]byte{}, 0, err
	}
	parts = append(parts, tz)
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	out := make([]byte, 0, size)
	for _, p := range parts {
		out = append(out, p...)
	}
	var sum [32]byte
	copy(sum[:], oh.Sum(nil))
	return out, sum, osize, nil
}

// sweep drops runs the last build did not use.
func (c *Chunks) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if !c.used[k] {
			delete(c.m, k)
		}
	}
	c.used = map[string]bool{}
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// RepoMD renders repomd.xml for files.
func RepoMD(files []File, revision int64) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">` + "\n")
	fmt.Fprintf(&b, "  <revision>%d</revision>\n", revision)
	for _, f := range files {
		fmt.Fprintf(&b, "  <data type=\"%s\">\n", f.Type)
		fmt.Fprintf(&b, "    <checksum type=\"sha256\">%s</checksum>\n", f.SHA256)
		fmt.Fprintf(&b, "    <open-checksum type=\"sha256\">%s</open-checksum>\n", f.OpenSHA)
		fmt.Fprintf(&b, "    <location href=\"%s\"/>\n", f.Name)
		fmt.Fprintf(&b, "    <timestamp>%d</timestamp>\n", f.Timestamp)
		fmt.Fprintf(&b, "    <size>%d</size>\n", len(f.Data))
		fmt.Fprintf(&b, "    <open-size>%d</open-size>\n", f.OpenSize)
		b.WriteString("  </data>\n")
	}
	b.WriteString("</repomd>\n")
	return b.Bytes()
}

func renderAll(es []*Entry) {
	var fresh []*Entry
	for _, e := range es {
		if !e.done.Load() {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) < 64 {
		for _, e := range fresh {
			e.render()
		}
		return
	}
	es = fresh
	todo := make(chan *Entry, 64)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range todo {
				e.render()
			}
		}()
	}
	for _, e := range es {
		todo <- e
	}
	close(todo)
	wg.Wait()
}

func (e *Entry) render() {
	e.once.Do(func() {
		e.primary = e.renderPrimary()
		e.filelists = e.renderFilelists()
		e.other = e.renderOther()
		e.key = sha256.Sum256(strconv.AppendInt([]byte(e.Pkg.SHA256+"\x00"+e.Href+"\x00"), e.FileTime, 10))
		e.done.Store(true)
	})
}

type buf struct{ bytes.Buffer }

func (b *buf) s(s string) { b.WriteString(s) }

// text writes s escaped for XML text and attribute values, like
// xml.EscapeText (characters XML cannot carry become U+FFFD) but without
// allocating for the common case of nothing to escape.
func (b *buf) text(s string) {
	last := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		var esc string
		switch {
		case c == '<':
			esc = "&lt;"
		case c == '>':
			esc = "&gt;"
		case c == '&':
			esc = "&amp;"
		case c == '"':
			esc = "&#34;"
		case c == '\'':
			esc = "&#39;"
		case c == '\t':
			esc = "&#x9;"
		case c == '\n':
			esc = "&#xA;"
		case c == '\r':
			esc = "&#xD;"
		case c < 0x20 || c >= 0x80:
			// Rare: control characters and non-ASCII go through encoding/xml.
			b.s(s[last:i])
			xml.EscapeText(b, []byte(s[i:]))
			return
		default:
			continue
		}
		b.s(s[last:i])
		b.s(esc)
		last = i + 1
	}
	b.s(s[last:])
}

func (b *buf) attr(name, v string) {
	b.WriteByte(' ')
	b.s(name)
	b.s(`="`)
	b.text(v)
	b.WriteByte('"')
}

func (b *buf) num(v int64) {
	var tmp [20]byte
	b.Write(strconv.AppendInt(tmp[:0], v, 10))
}

func (b *buf) elem(indent, name, v string) {
	b.s(indent + "<" + name + ">")
	b.text(v)
	b.s("</" + name + ">\n")
}

func (b *buf) version(indent string, p *rpmmeta.Package) {
	b.s(indent + "<version")
	b.attr("epoch", p.Epoch)
	b.attr("ver", p.Version)
	b.attr("rel", p.Release)
	b.s("/>\n")
}

func (e *Entry) renderPrimary() []byte {
	p := e.Pkg
	var b buf
	b.Grow(1024 + 128*(len(p.Provides)+len(p.Requires)) + 64*len(p.Files))
	e.primaryTo(&b)
	return b.Bytes()
}

func (e *Entry) primaryTo(b *buf) {
	p := e.Pkg
	b.s("<package type=\"rpm\">\n")
	b.elem("  ", "name", p.Name)
	b.elem("  ", "arch", p.Arch)
	b.version("  ", p)
	b.s(`  <checksum type="sha256" pkgid="YES">` + p.SHA256 + "</checksum>\n")
	b.elem("  ", "summary", p.Summary)
	b.elem("  ", "description", p.Description)
	b.elem("  ", "packager", p.Packager)
	b.elem("  ", "url", p.URL)
	b.s(`  <time file="`)
	b.num(e.FileTime)
	b.s(`" build="`)
	b.num(p.BuildTime)
	b.s(`"/>` + "\n" + `  <size package="`)
	b.num(p.Size)
	b.s(`" installed="`)
	b.num(p.InstalledSize)
	b.s(`" archive="`)
	b.num(p.ArchiveSize)
	b.s(`"/>` + "\n")
	b.s("  <location")
	b.attr("href", e.Href)
	b.s("/>\n  <format>\n")
	b.elem("    ", "rpm:license", p.License)
	b.elem("    ", "rpm:vendor", p.Vendor)
	b.elem("    ", "rpm:group", p.Group)
	b.elem("    ", "rpm:buildhost", p.BuildHost)
	b.elem("    ", "rpm:sourcerpm", p.SourceRPM)
	b.s(`    <rpm:header-range start="`)
	b.num(int64(p.HeaderStart))
	b.s(`" end="`)
	b.num(int64(p.HeaderEnd))
	b.s(`"/>` + "\n")
	deps := []struct {
		name string
		list []rpmmeta.Dep
	}{
		{"provides", p.Provides}, {"requires", p.Requires}, {"conflicts", p.Conflicts}, {"obsoletes", p.Obsoletes},
		{"suggests", p.Suggests}, {"enhances", p.Enhances}, {"recommends", p.Recommends}, {"supplements", p.Supplements},
	}
	for _, d := range deps {
		if len(d.list) == 0 {
			continue
		}
		b.s("    <rpm:" + d.name + ">\n")
		for _, x := range d.list {
			b.s("      <rpm:entry")
			b.attr("name", x.Name)
			if x.Flags != "" {
				b.attr("flags", x.Flags)
				b.attr("epoch", x.Epoch)
				b.attr("ver", x.Ver)
				if x.Rel != "" {
					b.attr("rel", x.Rel)
				}
			}
			if x.Pre {
				b.s(` pre="1"`)
			}
			b.s("/>\n")
		}
		b.s("    </rpm:" + d.name + ">\n")
	}
	for _, f := range p.Files {
		if rpmmeta.IsPrimaryFile(f.Path) {
			b.file("    ", f)
		}
	}
	b.s("  </format>\n</package>\n")
}

func (b *buf) file(indent string, f rpmmeta.File) {
	b.s(indent + "<file")
	if f.Type != "" {
		b.attr("type", f.Type)
	}
	b.WriteByte('>')
	b.text(f.Path)
	b.s("</file>\n")
}

func (b *buf) pkgOpen(e *Entry) {
	b.s(`<package pkgid="` + e.Pkg.SHA256 + `"`)
	b.attr("name", e.Pkg.Name)
	b.attr("arch", e.Pkg.Arch)
	b.s(">\n")
	b.version("  ", e.Pkg)
}

func (e *Entry) renderFilelists() []byte {
	var b buf
	b.Grow(256 + 64*len(e.Pkg.Files))
	e.filelistsTo(&b)
	return b.Bytes()
}

func (e *Entry) filelistsTo(b *buf) {
	b.pkgOpen(e)
	for _, f := range e.Pkg.Files {
		b.file("  ", f)
	}
	b.s("</package>\n")
}

func (e *Entry) renderOther() []byte {
	var b buf
	e.otherTo(&b)
	return b.Bytes()
}

func (e *Entry) otherTo(b *buf) {
	b.pkgOpen(e)
	cl := e.Pkg.Changelogs
	if len(cl) > ChangelogLimit {
		cl = cl[:ChangelogLimit]
	}
	// createrepo_c writes the kept entries oldest first.
	for i := len(cl) - 1; i >= 0; i-- {
		c := cl[i]
		b.s("  <changelog")
		b.attr("author", c.Author)
		b.attr("date", strconv.FormatInt(c.Date, 10))
		b.WriteByte('>')
		b.text(c.Text)
		b.s("</changelog>\n")
	}
	b.s("</package>\n")
}

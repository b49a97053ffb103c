// Package aptindex renders APT repository indexes from parsed .deb control
// data: Packages (plain, .gz, .xz) per architecture and the Release file
// listing them with MD5, SHA-256 and SHA-512 sums of compressed and
// uncompressed forms, for a full repository (dists/<suite>/<component>/
// binary-<arch>/) or a flat one (Packages and Release side by side).
//
// Each Entry renders its stanza once and keeps it. Packages of architecture
// "all" are listed in every architecture's index. Build does no I/O and is
// safe for concurrent use.
package aptindex

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/ulikunitz/xz"

	"github.com/hivefleet/hive/repo/debmeta"
)

// Entry is one package of the repository.
type Entry struct {
	Pkg      *debmeta.Package
	Filename string // path relative to the repository root, e.g. pool/main/h/hello/hello_1.0_amd64.deb

	once   sync.Once
	stanza []byte
}

// Options control Build.
type Options struct {
	Flat          bool     // flat repository: Packages and Release in one directory
	Suite         string   // default "stable"
	Codename      string   // default Suite
	Component     string   // default "main"
	Origin, Label string   // default "hive"
	Archs         []string // architectures always listed (default amd64, arm64)
	Date          time.Time
	ValidUntil    time.Time // zero: no Valid-Until
}

// File is one generated index file with its sums.
type File struct {
	Path   string // relative to the Release file's directory
	Data   []byte
	MD5    string
	SHA256 string
	SHA512 string
}

// Result is a complete set of indexes.
type Result struct {
	Files   []File   // the Packages files, written (also by hash) before Release
	Release []byte   // unsigned Release content
	Archs   []string // architectures listed
}

// Rerelease returns r's Release made again for opt (a new Date), reusing the
// index files: for publishes that changed no .deb.
func (r *Result) Rerelease(opt Options) []byte {
	opt.defaults()
	return release(r.Files, r.Archs, opt)
}

func (o *Options) defaults() {
	if o.Suite == "" {
		o.Suite = "stable"
	}
	if o.Codename == "" {
		o.Codename = o.Suite
	}
	if o.Component == "" {
		o.Component = "main"
	}
	if o.Origin == "" {
		o.Origin = "hive"
	}
	if o.Label == "" {
		o.Label = "hive"
	}
	if len(o.Archs) == 0 {
		o.Archs = []string{"amd64", "arm64"}
	}
	if o.Date.IsZero() {
		o.Date = time.Now()
	}
}

// Build renders the indexes for entries.
func Build(entries []*Entry, opt Options) (*Result, error) {
	opt.defaults()
	es := append([]*Entry(nil), entries...)
	sort.Slice(es, func(i, j int) bool {
		a, b := es[i].Pkg, es[j].Pkg
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Version != b.Version {
			return a.Version < b.Version
		}
		return es[i].Filename < es[j].Filename
	})
	for _, e := range es {
		e.render()
	}
	archSet := map[string]bool{}
	for _, a := range opt.Archs {
		archSet[a] = true
	}
	for _, e := range es {
		if a := e.Pkg.Architecture; a != "all" {
			archSet[a] = true
		}
	}
	var archs []string
	for a := range archSet {
		archs = append(archs, a)
	}
	sort.Strings(archs)

	type job struct {
		dir  string
		data []byte
	}
	var jobs []job
	if opt.Flat {
		var b bytes.Buffer
		for _, e := range es {
			b.Write(e.stanza)
		}
		jobs = append(jobs, job{"", b.Bytes()})
	} else {
		for _, a := range archs {
			var b bytes.Buffer
			for _, e := range es {
				if pa := e.Pkg.Architecture; pa == a || pa == "all" {
					b.Write(e.stanza)
				}
			}
			jobs = append(jobs, job{opt.Component + "/binary-" + a + "/", b.Bytes()})
		}
	}
	files := make([]File, 3*len(jobs))
	errs := make([]error, 3*len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		files[3*i] = sums(j.dir+"Packages", j.data)
		wg.Add(2)
		go func() {
			defer wg.Done()
			z, err := gz(j.data)
			files[3*i+1], errs[3*i+1] = sums(j.dir+"Packages.gz", z), err
		}()
		go func() {
			defer wg.Done()
			z, err := xzData(j.data)
			files[3*i+2], errs[3*i+2] = sums(j.dir+"Packages.xz", z), err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return &Result{Files: files, Release: release(files, archs, opt), Archs: archs}, nil
}

func sums(path string, data []byte) File {
	m := md5.Sum(data)
	s := sha256.Sum256(data)
	l := sha512.Sum512(data)
	return File{Path: path, Data: data, MD5: hex.EncodeToString(m[:]), SHA256: hex.EncodeToString(s[:]), SHA512: hex.EncodeToString(l[:])}
}

func gz(data []byte) ([]byte, error) {
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return b.Bytes(), nil
}

func xzData(data []byte) ([]byte, error) {
	var b bytes.Buffer
	w, err := xz.WriterConfig{DictCap: 1 << 20}.NewWriter(&b)
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	return b.Bytes(), nil
}

// release renders the Release file. Date uses RFC 2822 in UTC as apt expects.
func release(files []File, archs []string, opt Options) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Origin: %s\nLabel: %s\n", opt.Origin, opt.Label)
	if !opt.Flat {
		fmt.Fprintf(&b, "Suite: %s\nCodename: %s\n", opt.Suite, opt.Codename)
	}
	fmt.Fprintf(&b, "Date: %s\n", opt.Date.UTC().Format(time.RFC1123Z))
	if !opt.ValidUntil.IsZero() {
		fmt.Fprintf(&b, "Valid-Until: %s\n", opt.ValidUntil.UTC().Format(time.RFC1123Z))
	}
	if !opt.Flat {
		fmt.Fprintf(&b, "Architectures: %s\nComponents: %s\n", strings.Join(archs, " "), opt.Component)
		b.WriteString("Acquire-By-Hash: yes\n")
	}
	b.WriteString("MD5Sum:\n")
	for _, f := range files {
		fmt.Fprintf(&b, " %s %16d %s\n", f.MD5, len(f.Data), f.Path)
	}
	b.WriteString("SHA256:\n")
	for _, f := range files {
		fmt.Fprintf(&b, " %s %16d %s\n", f.SHA256, len(f.Data), f.Path)
	}
	b.WriteString("SHA512:\n")
	for _, f := range files {
		fmt.Fprintf(&b, " %s %16d %s\n", f.SHA512, len(f.Data), f.Path)
	}
	return b.Bytes()
}

// ByHash returns the by-hash paths under which f must be served
// (<dir>/by-hash/SHA256/<hex>, and SHA512, and MD5Sum).
func ByHash(f File) []string {
	dir := ""
	if i := strings.LastIndexByte(f.Path, '/'); i >= 0 {
		dir = f.Path[:i+1]
	}
	return []string{
		dir + "by-hash/SHA256/" + f.SHA256,
		dir + "by-hash/SHA512/" + f.SHA512,
		dir + "by-hash/MD5Sum/" + f.MD5,
	}
}

// PoolPath is the conventional pool location of a package file name.
func PoolPath(component, name, file string) string {
	prefix := name[:1]
	if strings.HasPrefix(name, "lib") && len(name) > 3 {
		prefix = name[:4]
	}
	return "pool/" + component + "/" + prefix + "/" + name + "/" + file
}

func (e *Entry) render() {
	e.once.Do(func() {
		p := e.Pkg
		var b bytes.Buffer
		var desc *debmeta.Field
		for i := range p.Fields {
			f := &p.Fields[i]
			if strings.EqualFold(f.Name, "Description") {
				desc = f
				continue
			}
			b.WriteString(f.Name + ": " + f.Value + "\n")
		}
		b.WriteString("Filename: " + e.Filename + "\n")
		b.WriteString("Size: " + strconv.FormatInt(p.Size, 10) + "\n")
		b.WriteString("MD5sum: " + p.MD5 + "\nSHA1: " + p.SHA1 + "\nSHA256: " + p.SHA256 + "\n")
		if desc != nil {
			b.WriteString("Description: " + desc.Value + "\n")
		}
		b.WriteByte('\n')
		e.stanza = b.Bytes()
	})
}

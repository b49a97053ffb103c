package repo

import (
	"net"
	"strings"
	"sync"
	"time"
)

// A client fetches a signed root document (repomd.xml, Release) and its
// detached signature (repomd.xml.asc, Release.gpg) in two requests; a
// publish between them would pair the document of one generation with the
// signature of the next ("Bad GPG signature"). pins remembers which
// generation each client last got a document from, so its signature comes
// from the same generation while that is still retained. Clients are known
// by their connection (keep-alive clients fetch both over one) and, failing
// that, by their IP address. InRelease is clear-signed and needs no pin.
type pins struct {
	mu sync.Mutex
	m  map[string]pin
}

type pin struct {
	gen  int64
	when time.Time
}

const (
	pinTTL = 2 * time.Minute
	pinMax = 20000
)

// signedDoc returns the document a detached signature signs.
func signedDoc(key string) (string, bool) {
	switch {
	case strings.HasSuffix(key, "/repomd.xml.asc"):
		return strings.TrimSuffix(key, ".asc"), true
	case strings.HasSuffix(key, "/Release.gpg"):
		return strings.TrimSuffix(key, ".gpg"), true
	}
	return "", false
}

// isSignedDoc reports whether key is a document with a detached signature.
func isSignedDoc(key string) bool {
	return strings.HasSuffix(key, "/repomd.xml") || strings.HasSuffix(key, "/Release")
}

func pinKeys(remoteAddr, doc string) [2]string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	return [2]string{"c " + remoteAddr + " " + doc, "i " + host + " " + doc}
}

// record notes that the client at remoteAddr got doc from generation gen.
func (p *pins) record(remoteAddr, doc string, gen int64, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]pin{}
	}
	if len(p.m) >= pinMax {
		for k, v := range p.m {
			if now.Sub(v.when) > pinTTL {
				delete(p.m, k)
			}
		}
		if len(p.m) >= pinMax {
			p.m = map[string]pin{}
		}
	}
	for _, k := range pinKeys(remoteAddr, doc) {
		p.m[k] = pin{gen: gen, when: now}
	}
}

// lookup returns the generation the client at remoteAddr last got doc from.
func (p *pins) lookup(remoteAddr, doc string, now time.Time) (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range pinKeys(remoteAddr, doc) {
		if v, ok := p.m[k]; ok && now.Sub(v.when) <= pinTTL {
			return v.gen, true
		}
	}
	return 0, false
}

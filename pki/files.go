package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/hivefleet/hive/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"
)

// File names written by WriteCA and WriteCert.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// CertFiles returns the certificate and key file names for name:
// NAME.pem and NAME-key.pem.
func CertFiles(name string) (cert, key string) { return name + ".pem", name + "-key.pem" }

// EncodeKey encodes a private key as PEM "PRIVATE KEY" (PKCS#8).
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey decodes a PEM private key (PKCS#8 or SEC 1 "EC PRIVATE KEY").
func ParseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("parse private key: no PEM block")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parse private key: %T cannot sign", k)
		}
		return s, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("parse private key: PEM block %q, want \"PRIVATE KEY\"", block.Type)
	}
}

// ParseCerts decodes every PEM "CERTIFICATE" block in data (at least one).
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("parse certificate: no PEM \"CERTIFICATE\" block")
	}
	return certs, nil
}

// LoadCA reads a CA certificate and its key and checks that they match.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read ca certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read ca key: %w", err)
	}
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: certificate %q is not a ca", certFile, cert.Subject.CommonName)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s does not belong to %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCAFromDir loads DIR/ca.pem and DIR/ca-key.pem.
func LoadCAFromDir(dir string) (*CA, error) {
	return LoadCA(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile))
}

// LoadCertPool reads a PEM file of one or more CA certificates.
func LoadCertPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read ca: %w", err)
	}
	certs, err := ParseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// WriteCA writes DIR/ca.pem (mode 0644) and DIR/ca-key.pem (0600). It
// refuses with ErrExists, writing nothing, when either exists and force is
// false: replacing a CA invalidates every certificate it signed.
func WriteCA(dir string, ca *CA, force bool) (certPath, keyPath string, err error) {
	keyPEM, err := EncodeKey(ca.Key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	return certPath, keyPath, writePair(certPath, ca.CertPEM(), keyPath, keyPEM, force)
}

// WriteCert writes DIR/NAME.pem (0644) and DIR/NAME-key.pem (0600) for an
// issued certificate. It refuses with ErrExists, writing nothing, when
// either exists and force is false.
func WriteCert(dir, name string, iss *Issued, force bool) (certPath, keyPath string, err error) {
	if err := ValidateName(name); err != nil {
		return "", "", err
	}
	if iss.KeyPEM == nil {
		return "", "", errors.New("write certificate: no private key to write")
	}
	c, k := CertFiles(name)
	certPath, keyPath = filepath.Join(dir, c), filepath.Join(dir, k)
	return certPath, keyPath, writePair(certPath, iss.CertPEM, keyPath, iss.KeyPEM, force)
}

func writePair(certPath string, certPEM []byte, keyPath string, keyPEM []byte, force bool) error {
	if !force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%w: %s (use --force to replace it)", ErrExists, p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	// Key first: a certificate on disk always has its key beside it.
	// Without force, never replace a file that appeared since the check.
	err := atomicfile.Write(keyPath, keyPEM, atomicfile.Options{Perm: 0o600, NoClobber: !force})
	if err == nil {
		err = atomicfile.Write(certPath, certPEM, atomicfile.Options{Perm: 0o644, NoClobber: !force})
	}
	if !force && errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %v (use --force to replace it)", ErrExists, err)
	}
	return err
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

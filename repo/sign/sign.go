// Package sign makes and uses the OpenPGP keys that sign repository metadata:
// detached armored signatures (repomd.xml.asc, Release.gpg) and clear-signed
// text (InRelease), with github.com/ProtonMail/go-crypto.
//
// A Signer is immutable after Load or Generate and safe for concurrent use.
// Keys are RSA (3072 bits or more) or Ed25519; weaker keys are refused.
package sign

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// ErrWeakKey is returned by Load for keys other than RSA >= 3072 bits and Ed25519.
var ErrWeakKey = errors.New("signing key must be RSA of at least 3072 bits or Ed25519")

// Algorithm names accepted by Generate.
const (
	Ed25519 = "ed25519"
	RSA4096 = "rsa4096"
	RSA3072 = "rsa3072"
)

// Signer signs with one private key.
type Signer struct {
	entity *openpgp.Entity
	config *packet.Config
	public []byte
}

// Generate makes a new key pair for name/email.
func Generate(algo, name, email string) (*Signer, error) {
	cfg := &packet.Config{DefaultHash: crypto.SHA256, Time: time.Now}
	switch algo {
	case Ed25519, "":
		cfg.Algorithm = packet.PubKeyAlgoEdDSA
	case RSA3072:
		cfg.Algorithm, cfg.RSABits = packet.PubKeyAlgoRSA, 3072
	case RSA4096:
		cfg.Algorithm, cfg.RSABits = packet.PubKeyAlgoRSA, 4096
	default:
		return nil, fmt.Errorf("unknown key algorithm %q (want %s, %s or %s)", algo, Ed25519, RSA3072, RSA4096)
	}
	e, err := openpgp.NewEntity(name, "hive-repo signing key", email, cfg)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return newSigner(e)
}

// Load reads an armored (or binary) private key.
func Load(data []byte) (*Signer, error) {
	var el openpgp.EntityList
	var err error
	if bytes.Contains(data, []byte("-----BEGIN PGP")) {
		el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("read signing key: want exactly one key, found %d", len(el))
	}
	e := el[0]
	if e.PrivateKey == nil {
		return nil, errors.New("read signing key: no private key (a public key was given)")
	}
	if e.PrivateKey.Encrypted {
		return nil, errors.New("read signing key: key is passphrase-protected; export it without a passphrase")
	}
	return newSigner(e)
}

func newSigner(e *openpgp.Entity) (*Signer, error) {
	switch e.PrimaryKey.PubKeyAlgo {
	case packet.PubKeyAlgoEdDSA, packet.PubKeyAlgoEd25519:
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSASignOnly:
		bits, err := e.PrimaryKey.BitLength()
		if err != nil || bits < 3072 {
			return nil, ErrWeakKey
		}
	default:
		return nil, ErrWeakKey
	}
	s := &Signer{entity: e, config: &packet.Config{DefaultHash: crypto.SHA256}}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := e.Serialize(w); err != nil {
		return nil, fmt.Errorf("serialize public key: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	s.public = buf.Bytes()
	return s, nil
}

// PrivateArmored returns the armored private key, for writing a key file.
func (s *Signer) PrivateArmored() ([]byte, error) {
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := s.entity.SerializePrivate(w, nil); err != nil {
		return nil, fmt.Errorf("serialize private key: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// PublicArmored returns the armored public key (served as /keys/<repo>.asc).
func (s *Signer) PublicArmored() []byte { return s.public }

// Fingerprint returns the primary key's fingerprint in upper-case hex.
func (s *Signer) Fingerprint() string { return fmt.Sprintf("%X", s.entity.PrimaryKey.Fingerprint) }

// Entity exposes the key, for signing RPM packages in tests and tools.
func (s *Signer) Entity() *openpgp.Entity { return s.entity }

// DetachArmored returns an armored detached signature of data.
func (s *Signer) DetachArmored(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&buf, s.entity, bytes.NewReader(data), s.config); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// Detach returns a binary detached signature of data.
func (s *Signer) Detach(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := openpgp.DetachSign(&buf, s.entity, bytes.NewReader(data), s.config); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return buf.Bytes(), nil
}

// ClearSign returns data clear-signed (an InRelease file).
func (s *Signer) ClearSign(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := clearsign.Encode(&buf, s.entity.PrivateKey, s.config)
	if err != nil {
		return nil, fmt.Errorf("clearsign: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return nil, fmt.Errorf("clearsign: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("clearsign: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// Verify checks an armored detached signature against the signer's public
// key; it is used by tests and by the server's self-check after publishing.
func (s *Signer) Verify(data, armoredSig []byte) error {
	_, err := openpgp.CheckArmoredDetachedSignature(openpgp.EntityList{s.entity}, bytes.NewReader(data), bytes.NewReader(armoredSig), nil)
	return err
}

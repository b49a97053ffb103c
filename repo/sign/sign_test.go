package sign_test

import (
	"bytes"
	"crypto"
	"errors"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/hivefleet/hive/repo/sign"
)

func TestRoundTripAndSignatures(t *testing.T) {
	s, err := sign.Generate(sign.Ed25519, "n", "e@x")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := s.PrivateArmored()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := sign.Load(priv)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Fingerprint() != s.Fingerprint() {
		t.Fatal("fingerprint changed across save/load")
	}
	msg := []byte("Origin: hive\nDate: x\n")
	sig, err := s2.DetachArmored(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(msg, sig); err != nil {
		t.Errorf("detached signature: %v", err)
	}
	if err := s.Verify(append(msg, 'x'), sig); err == nil {
		t.Errorf("signature verified for changed data")
	}
	cs, err := s.ClearSign(msg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := clearsign.Decode(cs)
	if b == nil {
		t.Fatalf("clearsign output does not decode:\n%s", cs)
	}
	if !bytes.Equal(b.Plaintext, bytes.TrimSuffix(msg, []byte("\n"))) && !bytes.Equal(b.Plaintext, msg) {
		t.Fatalf("clearsign plaintext %q", b.Plaintext)
	}
	keyring, _ := openpgp.ReadArmoredKeyRing(bytes.NewReader(s.PublicArmored()))
	if _, err := b.VerifySignature(keyring, nil); err != nil {
		t.Errorf("clearsign: %v", err)
	}
}

func TestLoadRefuses(t *testing.T) {
	weak, err := openpgp.NewEntity("w", "", "w@x", &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 2048, DefaultHash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, _ := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	weak.SerializePrivate(w, nil)
	w.Close()
	if _, err := sign.Load(buf.Bytes()); !errors.Is(err, sign.ErrWeakKey) {
		t.Errorf("RSA 2048 key: %v, want ErrWeakKey", err)
	}
	s, _ := sign.Generate(sign.Ed25519, "n", "e@x")
	if _, err := sign.Load(s.PublicArmored()); err == nil {
		t.Errorf("public key accepted as signing key")
	}
	if _, err := sign.Load([]byte("garbage")); err == nil {
		t.Errorf("garbage accepted")
	}
	if _, err := sign.Generate("dsa", "n", "e"); err == nil {
		t.Errorf("unknown algorithm accepted")
	}
}

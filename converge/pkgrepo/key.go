package pkgrepo

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
)

// CheckKey checks that b is an ASCII-armored OpenPGP public key block: the
// armor lines, a base64 body whose CRC-24 checksum (when present) matches,
// and a first packet that is a public key (tag 6).
func CheckKey(b []byte) error {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	const begin, end = "-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----END PGP PUBLIC KEY BLOCK-----"
	i := strings.Index(s, begin)
	if i < 0 {
		return fmt.Errorf("%w: not an ASCII-armored OpenPGP public key block", ErrBadKey)
	}
	body, _, ok := strings.Cut(s[i+len(begin):], end)
	if !ok {
		return fmt.Errorf("%w: not an ASCII-armored OpenPGP public key block", ErrBadKey)
	}
	// Armor headers end at the first empty line.
	if k := strings.Index(body, "\n\n"); k >= 0 {
		body = body[k+2:]
	}
	var data, crc strings.Builder
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "="):
			crc.WriteString(line[1:])
		default:
			data.WriteString(line)
		}
	}
	raw, err := base64.StdEncoding.DecodeString(data.String())
	if err != nil || len(raw) == 0 {
		return fmt.Errorf("%w: armored body does not decode", ErrBadKey)
	}
	if crc.Len() > 0 {
		want, err := base64.StdEncoding.DecodeString(crc.String())
		if err != nil || len(want) != 3 {
			return fmt.Errorf("%w: bad armor checksum line", ErrBadKey)
		}
		got := crc24(raw)
		if !bytes.Equal(want, []byte{byte(got >> 16), byte(got >> 8), byte(got)}) {
			return fmt.Errorf("%w: armor checksum mismatch (damaged key)", ErrBadKey)
		}
	}
	tag := -1
	switch h := raw[0]; {
	case h&0x80 == 0:
	case h&0x40 != 0:
		tag = int(h & 0x3f)
	default:
		tag = int(h>>2) & 0x0f
	}
	if tag != 6 {
		return fmt.Errorf("%w: first packet is not a public key (tag %d)", ErrBadKey, tag)
	}
	return nil
}

func crc24(d []byte) uint32 {
	const init, poly = 0xB704CE, 0x1864CFB
	crc := uint32(init)
	for _, b := range d {
		crc ^= uint32(b) << 16
		for range 8 {
			crc <<= 1
			if crc&0x1000000 != 0 {
				crc ^= poly
			}
		}
	}
	return crc & 0xFFFFFF
}

package pkgrepo

import (
	"fmt"

	"github.com/hivefleet/hive/site"
)

// CheckKey checks that b is an ASCII-armored OpenPGP public key block
// (site.CheckSigningKey, the check hivectl validate runs too).
func CheckKey(b []byte) error {
	if err := site.CheckSigningKey(b); err != nil {
		return fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return nil
}

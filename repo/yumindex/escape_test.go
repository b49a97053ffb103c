package yumindex

import (
	"bytes"
	"encoding/xml"
	"testing"
)

func FuzzText(f *testing.F) {
	for _, s := range []string{"plain", "a<b>&\"'\t\n\r", "ünïcödé", "\x01ctl", "\xff\xfe bad utf8", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b buf
		b.text(s)
		var want bytes.Buffer
		xml.EscapeText(&want, []byte(s))
		if b.String() != want.String() {
			t.Fatalf("text(%q) = %q, encoding/xml says %q", s, b.String(), want.String())
		}
	})
}

package repo

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestGenerationEncode: the hand-written generation file reads back as the
// generation, including paths that need JSON escaping.
func TestGenerationEncode(t *testing.T) {
	g := &Generation{N: 7, Date: time.Date(2026, 11, 22, 1, 2, 3, 0, time.UTC), Key: "ABCD",
		Files: map[string]string{"yum/packages/a-1.rpm": "00ff", "apt/pool/main/b_1_all.deb": "11", `odd/"quote"\<&>é` + "\n": "22"},
		Root:  map[string][]byte{"yum/repodata/repomd.xml": []byte("<repomd/>\x00\xff")}}
	b, err := g.encode()
	if err != nil {
		t.Fatal(err)
	}
	var got Generation
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(&got, g) {
		t.Errorf("read back %+v, want %+v", got, *g)
	}
	g.Files = map[string]string{}
	b, _ = g.encode()
	var empty Generation
	if err := json.Unmarshal(b, &empty); err != nil || empty.Files == nil || len(empty.Files) != 0 {
		t.Errorf("empty files: %v %s", err, b)
	}
}

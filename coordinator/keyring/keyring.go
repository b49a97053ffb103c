// Package keyring seals and opens secret values with AES-256-GCM. The keys
// live in a keyring file on each coordinator (by default keyring.json in
// the data directory), never in the raft log: the log and snapshots carry
// only sealed values and the id of the key that sealed them.
//
// Coordinators share keys among themselves: a server that meets a value
// sealed with a key it lacks fetches that key from another coordinator
// over mutual TLS (ClusterService.GetKeys) and adds it to its file, so
// servers that each created their own keyring still open every secret.
// Distributing one keyring file to every server beforehand is equally
// fine. Rotation: `Rotate`
// adds a new primary key; new values are sealed with it, older values stay
// readable with the older keys, which are kept until every secret sealed
// with them has been set again (hive-coordinator keyring rotate, then
// re-set the secrets, then drop the old key with keyring remove). See
// docs/operations.md.
//
// A Keyring is safe for concurrent use; Seal and Open never block on I/O.
package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/hivefleet/hive/internal/atomicfile"
)

// ErrUnknownKey is returned by Open when the value was sealed with a key
// this keyring does not hold (the keyring files of the coordinators
// differ).
var ErrUnknownKey = errors.New("secret sealed with a key not in this keyring")

// ErrOpen is returned by Open when a value fails authentication (wrong
// name or corrupted value).
var ErrOpen = errors.New("sealed value does not authenticate")

// Key is one AES-256 key.
type Key struct {
	ID  string `json:"id"`
	Key []byte `json:"key"`
}

type file struct {
	Primary string `json:"primary"`
	Keys    []Key  `json:"keys"`
}

// Keyring holds keys by id; one of them is primary (used to seal).
type Keyring struct {
	mu      sync.RWMutex
	primary string
	keys    map[string]cipher.AEAD
	raw     []Key
}

// New returns a keyring with one freshly generated key.
func New() (*Keyring, error) {
	k := &Keyring{keys: map[string]cipher.AEAD{}}
	if _, err := k.Rotate(); err != nil {
		return nil, err
	}
	return k, nil
}

// keyID is the id of a key: the first 4 bytes of its sha256, in hex.
func keyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}

// Has reports whether the keyring holds key id.
func (k *Keyring) Has(id string) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	_, ok := k.keys[id]
	return ok
}

// Export returns the keys with the given ids that the keyring holds.
func (k *Keyring) Export(ids []string) []Key {
	k.mu.RLock()
	defer k.mu.RUnlock()
	var out []Key
	for _, id := range ids {
		for _, r := range k.raw {
			if r.ID == id {
				out = append(out, Key{ID: r.ID, Key: append([]byte(nil), r.Key...)})
			}
		}
	}
	return out
}

// Import adds a key received from another coordinator (not as primary).
// The id must match the key. A key already held is ignored.
func (k *Keyring) Import(key Key) error {
	if len(key.Key) != 32 {
		return fmt.Errorf("key %q: %d bytes, want 32", key.ID, len(key.Key))
	}
	if id := keyID(key.Key); id != key.ID {
		return fmt.Errorf("key %q does not match its id (%s)", key.ID, id)
	}
	if k.Has(key.ID) {
		return nil
	}
	return k.add(key)
}

// Rotate adds a new random key and makes it primary. It returns its id.
func (k *Keyring) Rotate() (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	id := keyID(key)
	if err := k.add(Key{ID: id, Key: key}); err != nil {
		return "", err
	}
	k.mu.Lock()
	k.primary = id
	k.mu.Unlock()
	return id, nil
}

func (k *Keyring) add(key Key) error {
	if len(key.Key) != 32 {
		return fmt.Errorf("key %q: %d bytes, want 32", key.ID, len(key.Key))
	}
	if key.ID == "" {
		return errors.New("key without an id")
	}
	block, err := aes.NewCipher(key.Key)
	if err != nil {
		return fmt.Errorf("key %q: %w", key.ID, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return fmt.Errorf("key %q: %w", key.ID, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, dup := k.keys[key.ID]; dup {
		return fmt.Errorf("duplicate key id %q", key.ID)
	}
	k.keys[key.ID] = aead
	k.raw = append(k.raw, key)
	return nil
}

// Remove drops a non-primary key.
func (k *Keyring) Remove(id string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if id == k.primary {
		return fmt.Errorf("key %q is primary: rotate first", id)
	}
	if _, ok := k.keys[id]; !ok {
		return fmt.Errorf("key %q: %w", id, ErrUnknownKey)
	}
	delete(k.keys, id)
	for i, r := range k.raw {
		if r.ID == id {
			k.raw = append(k.raw[:i], k.raw[i+1:]...)
			break
		}
	}
	return nil
}

// Primary returns the id of the key Seal uses.
func (k *Keyring) Primary() string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.primary
}

// IDs returns the ids of all keys.
func (k *Keyring) IDs() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]string, 0, len(k.raw))
	for _, r := range k.raw {
		out = append(out, r.ID)
	}
	return out
}

// Seal encrypts value with the primary key, binding it to name (a value
// sealed for one name does not open under another). It returns
// nonce||ciphertext and the key id.
func (k *Keyring) Seal(name string, value []byte) ([]byte, string, error) {
	k.mu.RLock()
	id := k.primary
	aead := k.keys[id]
	k.mu.RUnlock()
	if aead == nil {
		return nil, "", errors.New("keyring has no primary key")
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(value)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, "", fmt.Errorf("generate nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, value, []byte(name)), id, nil
}

// Open decrypts a value sealed for name with key id.
func (k *Keyring) Open(name string, sealed []byte, id string) ([]byte, error) {
	k.mu.RLock()
	aead := k.keys[id]
	k.mu.RUnlock()
	if aead == nil {
		return nil, fmt.Errorf("secret %q key %q: %w", name, id, ErrUnknownKey)
	}
	if len(sealed) < aead.NonceSize() {
		return nil, fmt.Errorf("secret %q: %w", name, ErrOpen)
	}
	out, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, ErrOpen)
	}
	return out, nil
}

// Load reads a keyring file.
func Load(path string) (*Keyring, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read keyring: %w", err)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse keyring %s: %w", path, err)
	}
	k := &Keyring{keys: map[string]cipher.AEAD{}}
	for _, key := range f.Keys {
		if err := k.add(key); err != nil {
			return nil, fmt.Errorf("keyring %s: %w", path, err)
		}
	}
	if _, ok := k.keys[f.Primary]; !ok {
		return nil, fmt.Errorf("keyring %s: primary key %q not among its keys", path, f.Primary)
	}
	k.primary = f.Primary
	return k, nil
}

// Save writes the keyring to path atomically with mode 0600.
func (k *Keyring) Save(path string) error {
	k.mu.RLock()
	data, err := json.MarshalIndent(file{Primary: k.primary, Keys: k.raw}, "", "  ")
	k.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("encode keyring: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	return nil
}

// LoadOrCreate loads the keyring at path, or creates and saves a new one
// when the file does not exist. created reports the latter.
func LoadOrCreate(path string) (k *Keyring, created bool, err error) {
	k, err = Load(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	k, err = New()
	if err != nil {
		return nil, false, err
	}
	if err := k.Save(path); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// Package soft is the development key-encryption back end: AES-256-GCM
// KEK versions kept in a local key file (0600). It is for the dev stack and
// tests; production wraps data keys in Vault Transit.
package soft

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/custody-dev/custody/services/publisher/internal/kek"
)

// File is the key file's format: every KEK version still held, newest
// highest.
type File struct {
	Versions map[string][]byte `json:"versions"` // "1", "2", … → 32-byte AES key
}

// KEK is a soft key file. Safe for concurrent use; Rotate and Forget
// rewrite the file atomically.
type KEK struct {
	path string

	mu       sync.RWMutex
	versions map[int]cipher.AEAD
	newest   int
}

var _ kek.KEK = (*KEK)(nil)

// Open loads path, creating it with one fresh version if it does not exist.
func Open(path string) (*KEK, error) {
	k := &KEK{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := k.Rotate(); err != nil {
			return nil, err
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("soft kek: %w", err)
	}
	var f File
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("soft kek: parse %s: %w", path, err)
	}
	if err := k.load(f); err != nil {
		return nil, fmt.Errorf("soft kek: %s: %w", path, err)
	}
	return k, nil
}

func (k *KEK) load(f File) error {
	versions := map[int]cipher.AEAD{}
	newest := 0
	for s, key := range f.Versions {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || strconv.Itoa(v) != s {
			return fmt.Errorf("version %q: want a positive integer", s)
		}
		if len(key) != 32 {
			return fmt.Errorf("version %d: key of %d bytes, want 32", v, len(key))
		}
		block, _ := aes.NewCipher(key)
		versions[v], _ = cipher.NewGCM(block)
		newest = max(newest, v)
	}
	if newest == 0 {
		return errors.New("no key versions")
	}
	k.versions, k.newest = versions, newest
	return nil
}

// Rotate adds a new newest version; existing versions stay for unwrapping.
func (k *KEK) Rotate() error {
	return k.rewrite(func(f *File) {
		newest := 0
		for s := range f.Versions {
			v, _ := strconv.Atoi(s)
			newest = max(newest, v)
		}
		key := make([]byte, 32)
		rand.Read(key)
		f.Versions[strconv.Itoa(newest+1)] = key
	})
}

// Forget deletes every version older than the newest: keys still wrapped
// by them can no longer be unwrapped (rewrap first).
func (k *KEK) Forget() error {
	return k.rewrite(func(f *File) {
		newest := 0
		for s := range f.Versions {
			v, _ := strconv.Atoi(s)
			newest = max(newest, v)
		}
		for s := range f.Versions {
			if s != strconv.Itoa(newest) {
				delete(f.Versions, s)
			}
		}
	})
}

func (k *KEK) rewrite(change func(*File)) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	f := File{Versions: map[string][]byte{}}
	if b, err := os.ReadFile(k.path); err == nil {
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("soft kek: parse %s: %w", k.path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("soft kek: %w", err)
	}
	change(&f)
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.path), ".kek-*")
	if err != nil {
		return fmt.Errorf("soft kek: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err == nil {
		err = tmp.Sync()
	}
	tmp.Close()
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		return fmt.Errorf("soft kek: %w", err)
	}
	return k.load(f)
}

// Name implements kek.KEK.
func (k *KEK) Name() string { return "soft" }

// Wrap implements kek.KEK: "soft:v<N>:" + base64(nonce ‖ AES-GCM(key)).
func (k *KEK) Wrap(ctx context.Context, dataKey []byte) (string, error) {
	k.mu.RLock()
	v, aead := k.newest, k.versions[k.newest]
	k.mu.RUnlock()
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(dataKey)+aead.Overhead())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return "", fmt.Errorf("soft kek: %w", err)
	}
	ct := aead.Seal(nonce, nonce, dataKey, []byte("custody kek v"+strconv.Itoa(v)))
	return "soft:v" + strconv.Itoa(v) + ":" + base64.RawStdEncoding.EncodeToString(ct), nil
}

// Unwrap implements kek.KEK.
func (k *KEK) Unwrap(ctx context.Context, wrapped string) ([]byte, error) {
	rest, ok := strings.CutPrefix(wrapped, "soft:v")
	vs, b64, ok2 := strings.Cut(rest, ":")
	v, err := strconv.Atoi(vs)
	if !ok || !ok2 || err != nil {
		return nil, fmt.Errorf("%w: not a soft-wrapped key", kek.ErrUnwrap)
	}
	k.mu.RLock()
	aead := k.versions[v]
	k.mu.RUnlock()
	if aead == nil {
		return nil, fmt.Errorf("%w: soft KEK version %d is not held (it was forgotten, or the key comes from another key file)", kek.ErrUnwrap, v)
	}
	ct, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil || len(ct) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: malformed soft-wrapped key", kek.ErrUnwrap)
	}
	dk, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], []byte("custody kek v"+vs))
	if err != nil {
		return nil, fmt.Errorf("%w: soft KEK version %d: authentication failed", kek.ErrUnwrap, v)
	}
	return dk, nil
}

// Rewrap implements kek.KEK.
func (k *KEK) Rewrap(ctx context.Context, wrapped string) (string, error) {
	dk, err := k.Unwrap(ctx, wrapped)
	if err != nil {
		return "", err
	}
	defer clear(dk)
	return k.Wrap(ctx, dk)
}

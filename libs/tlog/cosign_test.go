package tlog_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/custody-dev/custody/libs/tlog"
)

const cosignerName = "custody.test/signer"

// cosigned returns a checkpoint signed by a fresh log key and cosigned by a
// fresh cosigner key, with the log's and the cosigner's verifier keys.
func cosigned(t testing.TB, cp tlog.Checkpoint) (signed []byte, logKey, cosignerKey, cosignerSigner string) {
	t.Helper()
	skey, vkey := newKey(t, cp.Origin)
	cskey, cvkey, err := tlog.GenerateCosignerKey(cosignerName)
	if err != nil {
		t.Fatal(err)
	}
	signed, err = tlog.CosignCheckpoint(sign(t, skey, cp), cskey)
	if err != nil {
		t.Fatal(err)
	}
	return signed, vkey, cvkey, cskey
}

func TestOpenCosigned(t *testing.T) {
	want := tlog.Checkpoint{Origin: origin, Size: 9, Hash: bytes.Repeat([]byte{2}, 32)}
	before := time.Now().Add(-time.Second)
	signed, logKey, cosignerKey, _ := cosigned(t, want)

	got, err := tlog.OpenCosigned(signed, origin, cosignerKey)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != want.Size || !bytes.Equal(got.Hash, want.Hash) || got.Origin != origin {
		t.Errorf("OpenCosigned = %+v, want %+v", got, want)
	}
	if got.CosignedAt.Before(before.Truncate(time.Second)) || got.CosignedAt.After(time.Now()) {
		t.Errorf("CosignedAt = %s, want about now", got.CosignedAt)
	}
	// The log's own key still opens it, with no cosignature time.
	if cp, err := tlog.OpenCosigned(signed, origin, logKey); err != nil || !cp.CosignedAt.IsZero() {
		t.Errorf("OpenCosigned with the log key = %+v, %v", cp, err)
	}
	// Standard verifiers accept what CosignCheckpoint makes.
	v, err := fnote.NewVerifierForCosignatureV1(cosignerKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(signed, note.VerifierList(v)); err != nil {
		t.Errorf("formats cosignature/v1 verifier: %v", err)
	}
}

// TestCosignatureMessage checks that a signature over CosignatureMessage,
// the way the signer signs with a key in its back end, verifies with the
// standard cosignature/v1 verifier of transparency-dev/formats.
func TestCosignatureMessage(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := tlog.CosignatureVerifierKey(cosignerName, pub)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	// The formats verifier ignores the hash in the text; check it too.
	ed, err := note.NewEd25519VerifierKey(cosignerName, pub)
	if err != nil {
		t.Fatal(err)
	}
	if conv, err := fnote.VKeyToCosignatureV1(ed); err != nil || conv != vkey {
		t.Fatalf("CosignatureVerifierKey = %q, formats converts to %q (%v)", vkey, conv, err)
	}
	body := []byte(origin + "\n3\n" + strings.Repeat("A", 43) + "=\n")
	const ts = 1767225600
	sig := binary.BigEndian.AppendUint64(nil, ts)
	sig = append(sig, ed25519.Sign(priv, tlog.CosignatureMessage(ts, body))...)
	if len(sig) != tlog.CosignatureSize {
		t.Fatalf("signature is %d bytes", len(sig))
	}
	if !v.Verify(body, sig) {
		t.Fatal("formats verifier rejects a signature over CosignatureMessage")
	}
	sig[3] ^= 1 // another timestamp
	if v.Verify(body, sig) {
		t.Fatal("formats verifier accepts a changed timestamp")
	}
}

func TestOpenCosignedRejects(t *testing.T) {
	cp := tlog.Checkpoint{Origin: origin, Size: 9, Hash: bytes.Repeat([]byte{2}, 32)}
	signed, logKey, cosignerKey, _ := cosigned(t, cp)
	_, otherCosigner, err := tlog.GenerateCosignerKey(cosignerName)
	if err != nil {
		t.Fatal(err)
	}
	_, sameName, err := tlog.GenerateCosignerKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	skey, _ := newKey(t, origin)
	logOnly := sign(t, skey, cp)
	tampered := bytes.Replace(signed, []byte("\n9\n"), []byte("\n8\n"), 1)
	badHash := cosignerKey[:len(cosignerName)+1] + "00000000" + cosignerKey[len(cosignerName)+9:]
	for _, tt := range []struct {
		name   string
		signed []byte
		origin string
		key    string
		want   error
	}{
		{"not cosigned", logOnly, origin, cosignerKey, tlog.ErrUnknownKey},
		{"another cosigner", signed, origin, otherCosigner, tlog.ErrUnknownKey},
		{"tampered body", tampered, origin, cosignerKey, tlog.ErrBadSignature},
		{"other origin", signed, "other.test/log", cosignerKey, tlog.ErrOriginMismatch},
		{"log key of another origin", signed, "other.test/log", logKey, tlog.ErrOriginMismatch},
		{"cosigner named like the log", signed, origin, sameName, tlog.ErrBadKey},
		{"key hash does not match", signed, origin, badHash, tlog.ErrBadKey},
		{"garbage key", signed, origin, "nope", tlog.ErrBadKey},
		{"oversized", append(bytes.Repeat([]byte("x"), tlog.MaxCheckpointSize), signed...), origin, cosignerKey, tlog.ErrMalformedCheckpoint},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tlog.OpenCosigned(tt.signed, tt.origin, tt.key); !errors.Is(err, tt.want) {
				t.Errorf("OpenCosigned: got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCheckVerifierKey(t *testing.T) {
	_, logKey := newKey(t, origin)
	_, cosignerKey, _ := tlog.GenerateCosignerKey(cosignerName)
	_, sameName, _ := tlog.GenerateCosignerKey(origin)
	for _, tt := range []struct {
		key string
		ok  bool
	}{{logKey, true}, {cosignerKey, true}, {sameName, false}, {"x+00000000+AAAA", false}} {
		if err := tlog.CheckVerifierKey(origin, tt.key); (err == nil) != tt.ok {
			t.Errorf("CheckVerifierKey(%q) = %v, want ok %v", tt.key, err, tt.ok)
		}
	}
}

func FuzzOpenCosigned(f *testing.F) {
	cp := tlog.Checkpoint{Origin: origin, Size: 7, Hash: bytes.Repeat([]byte{1}, 32)}
	signed, _, cosignerKey, _ := cosigned(f, cp)
	f.Add(signed)
	f.Add([]byte(origin + "\n1\n\n— " + cosignerName + " AAAAAAAA\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := tlog.OpenCosigned(b, origin, cosignerKey)
		if err != nil {
			return
		}
		if got.Origin != origin || len(got.Hash) != 32 || got.CosignedAt.IsZero() {
			t.Fatalf("accepted %+v", got)
		}
	})
}

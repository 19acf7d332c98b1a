package lifecycle

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writePub(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "token.pub.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestParseEdgeTokenKey(t *testing.T) {
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ed, p256 := writePub(t, edPub), writePub(t, &ec.PublicKey)
	k, err := ParseEdgeTokenKey(ed)
	if err != nil || k.ValidFrom != nil || k.ValidUntil != nil || k.Algorithm != "ed25519" {
		t.Fatalf("plain file = %+v, %v; want an open window", k, err)
	}
	k, err = ParseEdgeTokenKey(ed + ",valid-until=2026-12-04T10:00:00+01:00,valid-from=2026-12-01T00:00:00Z")
	if err != nil {
		t.Fatal(err)
	}
	if !k.ValidUntil.Equal(time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)) || !k.ValidFrom.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) || k.ValidUntil.Location() != time.UTC {
		t.Fatalf("window %v..%v", k.ValidFrom, k.ValidUntil)
	}
	for _, tc := range []struct{ v, want string }{
		{"", "want FILE"},
		{ed + ",valid-until=tomorrow", "RFC 3339"},
		{ed + ",until=2026-12-04T00:00:00Z", "option"},
		{ed + ",valid-until=2026-12-04T00:00:00Z,valid-until=2026-12-05T00:00:00Z", "at most once"},
		{ed + ",valid-from=2026-12-04T00:00:00Z,valid-until=2026-12-04T00:00:00Z", "not after valid-from"},
		{p256, "edge tokens are ed25519"},
		{filepath.Join(t.TempDir(), "missing.pem"), "no such file"},
	} {
		if _, err := ParseEdgeTokenKey(tc.v); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseEdgeTokenKey(%q) = %v, want an error with %q", tc.v, err, tc.want)
		}
	}
}

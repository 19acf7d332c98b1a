package vault

import (
	"testing"

	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// Vault's responses are parsed, not trusted: these never panic and only
// accept well-formed values.

func FuzzParseSignature(f *testing.F) {
	f.Add("vault:v1:MEUCIQ==", 1)
	f.Add("vault:v12:", 12)
	f.Add("vault:v1:not base64!", 1)
	f.Fuzz(func(t *testing.T, s string, version int) {
		sig, err := parseSignature(s, version)
		if err == nil && sig == nil {
			t.Fatal("no error and no signature")
		}
	})
}

func FuzzPublicDER(f *testing.F) {
	f.Add(keys.Ed25519, "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
	f.Add(keys.ECDSAP256, "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n")
	f.Fuzz(func(t *testing.T, alg, text string) {
		publicDER(alg, text)
	})
}

func TestParseSignatureChecksVersion(t *testing.T) {
	if _, err := parseSignature("vault:v2:AAAA", 1); err == nil {
		t.Fatal("a signature by version 2 accepted as version 1")
	}
	if sig, err := parseSignature("vault:v1:AAAA", 1); err != nil || len(sig) != 3 {
		t.Fatalf("parseSignature = %x, %v", sig, err)
	}
	if _, err := publicDER(keys.Ed25519, "AAAA"); err == nil {
		t.Fatal("a 3-byte Ed25519 key accepted")
	}
}

func FuzzParseBatch(f *testing.F) {
	f.Add([]byte(`{"data":{"batch_results":[{"signature":"vault:v1:AAAA"}]}}`), 1)
	f.Add([]byte(`{"data":{"batch_results":[{"error":"bad input"}]}}`), 1)
	f.Add([]byte(`{"data":{"batch_results":[]}}`), 0)
	f.Add([]byte(`{"data":null}`), 2)
	f.Fuzz(func(t *testing.T, body []byte, n int) {
		sigs, err := parseBatch(body, n, 1)
		if err == nil && len(sigs) != n {
			t.Fatalf("%d signatures for %d messages", len(sigs), n)
		}
	})
}

func TestParseBatch(t *testing.T) {
	sigs, err := parseBatch([]byte(`{"data":{"batch_results":[{"signature":"vault:v2:AQI="},{"signature":"vault:v2:AwQ="}]}}`), 2, 2)
	if err != nil || len(sigs) != 2 || sigs[1][0] != 3 {
		t.Fatalf("parseBatch = %v, %v", sigs, err)
	}
	for _, body := range []string{
		`{"data":{"batch_results":[{"signature":"vault:v1:AQI="}]}}`,     // another version
		`{"data":{"batch_results":[{"error":"invalid input"}]}}`,         // a per-item error
		`{"data":{"batch_results":[{"signature":"vault:v2:AQI="}, {}]}}`, // count mismatch
		`not json`,
	} {
		if _, err := parseBatch([]byte(body), 1, 2); err == nil {
			t.Errorf("parseBatch(%s) succeeded", body)
		}
	}
}

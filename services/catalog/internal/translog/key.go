package translog

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// verifierKey derives the note verifier key from an Ed25519 note signer key
// ("PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>"), so that the catalog
// checks its own checkpoints with exactly what clients will use.
func verifierKey(signerKey string) (string, error) {
	parts := strings.SplitN(strings.TrimSpace(signerKey), "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", fmt.Errorf("log signer key: not a note signer key (want PRIVATE+KEY+<name>+<hash>+<key>)")
	}
	key, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(key) != 1+ed25519.SeedSize || key[0] != 1 {
		return "", fmt.Errorf("log signer key: want an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(key[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(parts[2], pub)
	if err != nil {
		return "", fmt.Errorf("log signer key: %w", err)
	}
	if _, err := note.NewVerifier(vkey); err != nil {
		return "", fmt.Errorf("log signer key: derived verifier key: %w", err)
	}
	return vkey, nil
}

// VerifierKey returns the note verifier key of an Ed25519 note signer key:
// what a catalog that does not open the log (a follower, 0070) checks
// stored checkpoints with.
func VerifierKey(signerKey string) (string, error) { return verifierKey(signerKey) }

// Package softhsmtest makes a private SoftHSM2 token for tests and
// benchmarks: its own SOFTHSM2_CONF and token directory under a temporary
// directory, initialized with softhsm2-util.
package softhsmtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// RequireEnv set to anything makes a missing SoftHSM2 a failure, not a skip.
const RequireEnv = "CUSTODY_TEST_REQUIRE_SOFTHSM"

// Token is an initialized token.
type Token struct {
	Module, Label, PIN string
	// TokenDir is the token's own directory (move it away to make the
	// token vanish).
	TokenDir string
	dir      string
}

// ErrMissing means SoftHSM2 is not installed.
var ErrMissing = errors.New("SoftHSM2 is not installed; run scripts/install-softhsm.sh")

// New sets SOFTHSM2_CONF for this process and initializes a token labelled
// label. The module path comes from CUSTODY_TEST_PKCS11_MODULE or the
// Debian default. Call Close to remove the token.
func New(label string) (*Token, error) {
	t := &Token{Module: os.Getenv("CUSTODY_TEST_PKCS11_MODULE"), Label: label, PIN: "test-pin-" + randomHex(4)}
	if t.Module == "" {
		t.Module = "/usr/lib/softhsm/libsofthsm2.so"
	}
	util, err := exec.LookPath("softhsm2-util")
	if _, serr := os.Stat(t.Module); err != nil || serr != nil {
		return nil, fmt.Errorf("%w (need %s and softhsm2-util on PATH)", ErrMissing, t.Module)
	}
	t.dir, err = os.MkdirTemp("", "custody-softhsm-")
	if err != nil {
		return nil, err
	}
	tokens := filepath.Join(t.dir, "tokens")
	conf := filepath.Join(t.dir, "softhsm2.conf")
	err = errors.Join(
		os.Mkdir(tokens, 0o700),
		os.WriteFile(conf, fmt.Appendf(nil, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens), 0o600),
		os.Setenv("SOFTHSM2_CONF", conf),
	)
	if err != nil {
		t.Close()
		return nil, err
	}
	out, err := exec.Command(util, "--init-token", "--free", "--label", label,
		"--pin", t.PIN, "--so-pin", randomHex(8)).CombinedOutput()
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("softhsm2-util --init-token: %v: %s", err, out)
	}
	ds, err := filepath.Glob(filepath.Join(tokens, "*"))
	if err != nil || len(ds) != 1 {
		t.Close()
		return nil, fmt.Errorf("want one token directory in %s, got %v (%v)", tokens, ds, err)
	}
	t.TokenDir = ds[0]
	return t, nil
}

// Close removes the token.
func (t *Token) Close() error { return os.RemoveAll(t.dir) }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

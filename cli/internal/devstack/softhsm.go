package devstack

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// SoftHSMModule is the Debian path of the SoftHSM2 PKCS#11 module.
const SoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

const hsmLabel = "custody-dev"

// mintSoftHSM makes the dev stack's SoftHSM2 token under keys/softhsm once:
// its own configuration, token directory and user PIN file. A token made
// before is kept, so keys and KEK versions survive restarts.
func mintSoftHSM(l Layout) error {
	dir := l.path("keys", "softhsm")
	conf := filepath.Join(dir, "softhsm2.conf")
	if _, err := os.Stat(filepath.Join(dir, "pin")); err == nil {
		return nil
	}
	util, err := exec.LookPath("softhsm2-util")
	if _, serr := os.Stat(SoftHSMModule); err != nil || serr != nil {
		return errors.New("custody dev up --hsm needs SoftHSM2 (softhsm2-util and " + SoftHSMModule + "): run scripts/install-softhsm.sh")
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(conf, fmt.Appendf(nil, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens), 0o600); err != nil {
		return err
	}
	pin, so := randomHex(8), randomHex(8)
	cmd := exec.Command(util, "--init-token", "--free", "--label", hsmLabel, "--pin", pin, "--so-pin", so)
	cmd.Env = append(cleanEnv(), "SOFTHSM2_CONF="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("softhsm2-util --init-token: %v: %s", err, out)
	}
	// Written last: its presence says the token is ready.
	return os.WriteFile(filepath.Join(dir, "pin"), []byte(pin+"\n"), 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

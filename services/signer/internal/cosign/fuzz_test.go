package cosign_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/custody-dev/custody/services/signer/internal/cosign"
)

// FuzzCosign feeds arbitrary checkpoint and proof bytes to a co-signer that
// has co-signed size 5 of a log: it must never panic, refuse what it cannot
// parse, and accept only checkpoints of that log's tree.
func FuzzCosign(f *testing.F) {
	l := newTestLog(f)
	l.grow(9)
	base := l.checkpoint(5)
	var valid [][]byte // the log's checkpoints a co-signer at size 5 may accept
	for size := uint64(5); size <= 9; size++ {
		valid = append(valid, l.checkpoint(size))
	}
	f.Add(l.checkpoint(9), uint64(5), bytes.Join(l.proof(5, 9), nil))
	f.Add(l.checkpoint(5), uint64(5), []byte(nil))
	f.Add(l.checkpoint(3), uint64(5), []byte(nil))
	f.Add([]byte("custody.test/log\n9\nAAAA\n\n— custody.test/log AAAAAAAA\n"), uint64(5), []byte{0})
	f.Add([]byte{}, uint64(0), []byte{})
	backend, dir := newBackend(f), f.TempDir()
	var c *cosign.Cosigner
	f.Fuzz(func(t *testing.T, checkpoint []byte, from uint64, proofBytes []byte) {
		if c == nil {
			// A fresh state at size 5.
			if err := os.Remove(filepath.Join(dir, cosign.StateFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			var err error
			if c, err = cosign.New(cosign.Config{Origin: origin, Name: cosignerName, Backend: backend, KeyName: "log", StateDir: dir}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Cosign(t.Context(), base, 0, nil); err != nil {
				t.Fatal(err)
			}
		}
		var proof [][]byte
		for len(proofBytes) >= 32 {
			proof, proofBytes = append(proof, proofBytes[:32]), proofBytes[32:]
		}
		if len(proofBytes) > 0 {
			proof = append(proof, proofBytes)
		}
		out, err := c.Cosign(t.Context(), checkpoint, from, proof)
		if err != nil {
			if !errors.Is(err, cosign.ErrRefused) {
				t.Fatalf("Cosign: %v, want a refusal", err)
			}
			return
		}
		// Accepted: the body must be one of the log's own checkpoints at
		// size 5 or more.
		text := out[:bytes.Index(out, []byte("\n\n"))+1]
		found := false
		for _, cp := range valid {
			found = found || bytes.HasPrefix(cp, text)
		}
		if !found {
			t.Fatalf("co-signed %q, not a checkpoint of the log", out)
		}
		c = nil
	})
}

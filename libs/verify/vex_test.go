package verify

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/custody-dev/custody/libs/tlog"
)

// vexEntryFor logs a vex.added entry of typ by actor about digest holding
// document, as entry 0 of a two-entry log signed by w's log key and, if
// cosign, co-signed.
func vexEntryFor(t *testing.T, w *world, typ, actor, digest string, document []byte, cosign bool) LogEntry {
	t.Helper()
	details, err := json.Marshal(map[string]any{"name": "app", "version": "1.0.0", "digest": digest, "document": json.RawMessage(document)})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := tlog.Entry{Type: typ, Time: w.logged, Actor: actor, Subject: tlog.Subject{Digest: digest}, Details: details}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	other := tlog.LeafHash([]byte("another entry"))
	root := sha256.Sum256(append(append([]byte{1}, tlog.LeafHash(leaf)...), other...))
	cp, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: logOrigin, Size: 2, Hash: root[:]}, w.by.logKey)
	if err != nil {
		t.Fatal(err)
	}
	if cosign {
		if cp, err = tlog.CosignCheckpoint(cp, w.by.witness); err != nil {
			t.Fatal(err)
		}
	}
	return LogEntry{Index: 0, Leaf: leaf, InclusionProof: [][]byte{other}, Checkpoint: cp}
}

func vexDocument(digest string) []byte {
	return []byte(`{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://x/vex/1","author":"sec","timestamp":"2026-12-03T10:00:00Z","version":1,
"statements":[{"vulnerability":{"name":"GHSA-1"},"products":[{"@id":"` + digest + `"}],"status":"not_affected","justification":"component_not_present"}]}`)
}

// TestVEX is the table of VEX entries: the genuine one verifies; each
// forgery or mismatch fails naming it.
func TestVEX(t *testing.T) {
	w := build(t)
	a := w.ev.Artifact
	const sec = "spiffe://custody.test/security/triage"
	other := "sha256:" + strings.Repeat("2", 64)
	good := vexEntryFor(t, w, tlog.TypeVEXAdded, sec, a.Digest, vexDocument(a.Digest), true)
	got, err := VEX([]LogEntry{good}, a, w.root)
	if err != nil || len(got) != 1 || got[0].Actor != sec || got[0].Document.Statements[0].Vulnerability.Name != "GHSA-1" || len(got[0].LeafSHA256) != 64 {
		t.Fatalf("genuine entry: %+v, %v", got, err)
	}
	tampered := good
	tampered.Leaf = []byte(strings.Replace(string(good.Leaf), "component_not_present", "vulnerable_code_not_present", 1))
	for _, tc := range []struct {
		name  string
		entry LogEntry
		want  string
	}{
		{"tampered leaf", tampered, "inclusion proof"},
		{"not co-signed", vexEntryFor(t, w, tlog.TypeVEXAdded, sec, a.Digest, vexDocument(a.Digest), false), "checkpoint"},
		{"by an admin", vexEntryFor(t, w, tlog.TypeVEXAdded, "spiffe://custody.test/admin/ops", a.Digest, vexDocument(a.Digest), true), "may not say"},
		{"by another trust domain", vexEntryFor(t, w, tlog.TypeVEXAdded, "spiffe://other.test/security/triage", a.Digest, vexDocument(a.Digest), true), "may not say"},
		{"another type", vexEntryFor(t, w, "vex.withdrawn", sec, a.Digest, vexDocument(a.Digest), true), "want vex.added"},
		{"about another digest", vexEntryFor(t, w, tlog.TypeVEXAdded, sec, other, vexDocument(other), true), "not the artifact's digest"},
		{"a document about another artifact", vexEntryFor(t, w, tlog.TypeVEXAdded, sec, a.Digest, vexDocument(other), true), "names no product"},
		{"not OpenVEX", vexEntryFor(t, w, tlog.TypeVEXAdded, sec, a.Digest, []byte(`{"statements":[]}`), true), "invalid VEX"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One bad entry fails them all, the good one included.
			_, err := VEX([]LogEntry{good, tc.entry}, a, w.root)
			if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("VEX = %v, want ErrVerification containing %q", err, tc.want)
			}
		})
	}
	if _, err := VEX([]LogEntry{good}, a, nil); !errors.Is(err, ErrVerification) {
		t.Errorf("no trust root: %v", err)
	}
}

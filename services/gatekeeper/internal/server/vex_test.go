package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const security = "spiffe://custody.test/security/triage"

// vexStatement is an OpenVEX document of one statement about digest d and
// vulnerability name, with status.
func vexStatement(d, name, status string) []byte {
	extra := ""
	switch status {
	case "not_affected":
		extra = `,"justification":"vulnerable_code_not_in_execute_path"`
	case "affected":
		extra = `,"action_statement":"upgrade lodash"`
	}
	return []byte(fmt.Sprintf(`{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://custody.example/vex/%s","author":"security",
"timestamp":"2026-12-03T10:00:00Z","version":1,"statements":[{"vulnerability":{"name":%q},"products":[{"@id":%q}],"status":%q%s}]}`,
		name, name, d, status, extra))
}

// TestVEXSuppression: a verified not_affected VEX from a security identity
// suppresses one advisory for one artifact, and the decision names the
// entry; an artifact with the same component, a VEX about another
// advisory, or a later affected statement do not admit.
func TestVEXSuppression(t *testing.T) {
	s := newStack(t)
	real, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "libs", "advisory", "testdata", "osv", "GHSA-jf85-cpcp-j695.json"))
	if err != nil {
		t.Fatal(err)
	}
	s.storeAdvisories(real)
	lodash := map[string]string{"pkg:npm/lodash@4.17.11": "MIT"}
	vexed := s.publish(t, "vexed", "1.0.0", "prod")
	s.attachSBOM(t, vexed, cdx(t, lodash), s.artifactKey)
	same := s.publish(t, "same-component", "1.0.0", "prod")
	s.attachSBOM(t, same, cdx(t, lodash), s.artifactKey)
	const denied = "component pkg:npm/lodash@4.17.11 is affected by GHSA-jf85-cpcp-j695 (CRITICAL), denied in prod at HIGH and above"
	wantDecision(t, s.admitAs(t, "vexed", "1.0.0", "prod"), deny, denied)

	// About another advisory: nothing suppressed.
	s.catalog.addVEX(t, vexed.artifact, security, vexStatement(vexed.artifact.GetDigest(), "GHSA-other-0000-0001", "not_affected"))
	wantDecision(t, s.admitAs(t, "vexed", "1.0.0", "prod"), deny, denied)

	// By the advisory's alias: suppressed, and the decision says by which entry.
	index := s.catalog.addVEX(t, vexed.artifact, security, vexStatement(vexed.artifact.GetDigest(), "CVE-2019-10744", "not_affected"))
	resp := s.admitAs(t, "vexed", "1.0.0", "prod")
	wantDecision(t, resp, allow,
		fmt.Sprintf("suppressed: GHSA-jf85-cpcp-j695 affecting component pkg:npm/lodash@4.17.11 is not_affected for vexed@1.0.0 (vulnerable_code_not_in_execute_path) by VEX log entry %d, statement 1, from %s", index, security))
	// The decision record lists the VEX entry it relied on, by index and
	// leaf digest.
	s.catalog.mu.Lock()
	leafSum := sha256.Sum256(s.catalog.leaves[index])
	s.catalog.mu.Unlock()
	var listed bool
	for _, in := range resp.GetInputAttestations() {
		if in.GetUri() == fmt.Sprintf("custody:vexed@1.0.0?attestation=vex&log_index=%d", index) && in.GetDigest()["sha256"] == hex.EncodeToString(leafSum[:]) {
			listed = true
		}
	}
	if !listed {
		t.Errorf("input attestations %v do not list VEX entry %d", resp.GetInputAttestations(), index)
	}

	// Another artifact with the same component is still denied.
	wantDecision(t, s.admitAs(t, "same-component", "1.0.0", "prod"), deny, denied)

	// A later affected statement takes the suppression back.
	s.catalog.addVEX(t, vexed.artifact, security, vexStatement(vexed.artifact.GetDigest(), "GHSA-jf85-cpcp-j695", "affected"))
	wantDecision(t, s.admitAs(t, "vexed", "1.0.0", "prod"), deny, denied)
	s.catalog.addVEX(t, vexed.artifact, security, vexStatement(vexed.artifact.GetDigest(), "GHSA-jf85-cpcp-j695", "not_affected"))
	wantDecision(t, s.admitAs(t, "vexed", "1.0.0", "prod"), allow, "suppressed: GHSA-jf85-cpcp-j695")
}

// TestVEXFailsClosed: a VEX entry that does not verify (tampered leaf, an
// actor that is no security identity, a document about another digest)
// suppresses nothing and denies naming the failure; a truncated listing
// denies; a catalog that cannot list VEX gets no decision.
func TestVEXFailsClosed(t *testing.T) {
	s := newStack(t)
	s.storeAdvisories(osvDoc(t, "GHSA-high-0000-0001", "high", "2.0.0", vecHigh))
	comps := map[string]string{"pkg:npm/high@1.0.0": "MIT"}
	setup := func(name string) *record {
		r := s.publish(t, name, "1.0.0", "prod")
		s.attachSBOM(t, r, cdx(t, comps), s.artifactKey)
		s.catalog.addVEX(t, r.artifact, security, vexStatement(r.artifact.GetDigest(), "GHSA-high-0000-0001", "not_affected"))
		return r
	}
	r := setup("vex-ok")
	wantDecision(t, s.admitAs(t, "vex-ok", "1.0.0", "prod"), allow, "suppressed: GHSA-high-0000-0001")

	// The stored leaf altered: its inclusion proof fails.
	s.catalog.mu.Lock()
	s.catalog.tamperVEX = func(leaf []byte) []byte {
		return bytes.Replace(leaf, []byte("vulnerable_code_not_in_execute_path"), []byte("vulnerable_code_not_present"), 1)
	}
	s.catalog.mu.Unlock()
	resp := s.admitAs(t, "vex-ok", "1.0.0", "prod")
	wantDecision(t, resp, deny, "the VEX statements about vex-ok@1.0.0 failed verification, so none is used and the gatekeeper denies")
	wantDecision(t, resp, deny, "inclusion proof")
	wantDecision(t, resp, deny, "component pkg:npm/high@1.0.0 is affected by GHSA-high-0000-0001 (HIGH)")
	s.catalog.mu.Lock()
	s.catalog.tamperVEX = nil
	s.catalog.mu.Unlock()

	// Logged by an admin (the catalog refuses that; a compromised one
	// might not).
	r2 := s.publish(t, "vex-admin", "1.0.0", "prod")
	s.attachSBOM(t, r2, cdx(t, comps), s.artifactKey)
	s.catalog.addVEX(t, r2.artifact, "spiffe://custody.test/admin/ops", vexStatement(r2.artifact.GetDigest(), "GHSA-high-0000-0001", "not_affected"))
	wantDecision(t, s.admitAs(t, "vex-admin", "1.0.0", "prod"), deny, "may not say what affects an artifact")

	// A document about another artifact, served for this one.
	r3 := s.publish(t, "vex-other", "1.0.0", "prod")
	s.attachSBOM(t, r3, cdx(t, comps), s.artifactKey)
	s.catalog.addVEX(t, r3.artifact, security, vexStatement(r.artifact.GetDigest(), "GHSA-high-0000-0001", "not_affected"))
	wantDecision(t, s.admitAs(t, "vex-other", "1.0.0", "prod"), deny, "names no product with digest "+r3.artifact.GetDigest())

	s.catalog.mu.Lock()
	s.catalog.truncateVEX = true
	s.catalog.mu.Unlock()
	wantDecision(t, s.admitAs(t, "vex-ok", "1.0.0", "prod"), deny, "the VEX statements about vex-ok@1.0.0 could not all be read")

	s.catalog.mu.Lock()
	s.catalog.truncateVEX = false
	s.catalog.failVEX = status.Error(codes.Unavailable, "database down")
	s.catalog.mu.Unlock()
	wantAdmitCode(t, s, "vex-ok", "prod", codes.Unavailable)
	// Without an advisory affecting it, VEX is not read at all.
	clean := s.publish(t, "vex-clean", "1.0.0", "prod")
	s.attachSBOM(t, clean, cdx(t, map[string]string{"pkg:npm/ok@1.0.0": "MIT"}), s.artifactKey)
	wantDecision(t, s.admitAs(t, "vex-clean", "1.0.0", "prod"), allow, "")
}

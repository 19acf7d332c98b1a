package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/sbom"
)

// cdx is a CycloneDX 1.6 document listing one component per purl, each
// with its SPDX licence expression.
func cdx(t testing.TB, licences map[string]string) []byte {
	t.Helper()
	var comps []map[string]any
	for purl, expr := range licences {
		name := strings.TrimPrefix(purl, "pkg:npm/")
		name, version, _ := strings.Cut(name, "@")
		comps = append(comps, map[string]any{"type": "library", "name": name, "version": version, "purl": purl,
			"licenses": []map[string]any{{"expression": expr}}})
	}
	b, err := json.Marshal(map[string]any{"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": comps})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// attachSBOM signs an SBOM statement about r's artifact with key and has
// the catalog log it and serve doc with the components it parses to.
func (s *stack) attachSBOM(t testing.TB, r *record, doc []byte, key *signingKey) *catalogv1.SBOM {
	t.Helper()
	a := r.artifact
	comps, err := sbom.ParseCycloneDX(doc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := attest.SBOMStatement(attest.SBOMRef{ArtifactName: a.GetName(), ArtifactDigest: a.GetDigest(), Format: sbom.FormatCycloneDX, DocumentDigest: digest.Of(doc)})
	if err != nil {
		t.Fatal(err)
	}
	listed := make([]*catalogv1.Component, len(comps))
	for i, c := range comps {
		listed[i] = &catalogv1.Component{Purl: c.PURL, Name: c.Name, Version: c.Version, License: c.License}
	}
	return s.catalog.attachSBOM(t, a, key.mustSign(t, st), doc, sbom.FormatCycloneDX, listed)
}

func (s *stack) admitAs(t testing.TB, name, version, env string) *gatekeeperv1.AdmitResponse {
	t.Helper()
	resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: name, Version: version, Environment: env})
	if err != nil {
		t.Fatalf("admit %s@%s to %s: %v", name, version, env, err)
	}
	return resp
}

func wantDecision(t testing.TB, resp *gatekeeperv1.AdmitResponse, want gatekeeperv1.Decision, reason string) {
	t.Helper()
	if resp.GetDecision() != want || (reason != "" && !containsReason(resp.GetReasons(), reason)) {
		t.Fatalf("decision %v, reasons %q; want %v with %q", resp.GetDecision(), resp.GetReasons(), want, reason)
	}
}

const (
	allow = gatekeeperv1.Decision_DECISION_ALLOW
	deny  = gatekeeperv1.Decision_DECISION_DENY
)

// TestLicences: the default policy's licence rules over a verified SBOM
// read from the catalog (decision 0092): a GPL component is denied in prod
// naming it, its licence and the environment, and allowed in staging and
// dev; OR passes on either side, AND needs both; an unknown licence is
// denied in prod, a warning in staging, nothing in dev.
func TestLicences(t *testing.T) {
	s := newStack(t)
	for _, tc := range []struct {
		name     string
		licences map[string]string
		env      string
		want     gatekeeperv1.Decision
		reason   string
	}{
		{"gpl in prod", map[string]string{"pkg:npm/x@1.0.0": "GPL-3.0-only", "pkg:npm/ok@1.0.0": "MIT"}, "prod", deny,
			"component pkg:npm/x@1.0.0 has licence GPL-3.0-only, denied in prod (deny list: GPL-3.0-only)"},
		{"gpl in staging", map[string]string{"pkg:npm/x@1.0.0": "GPL-3.0-only"}, "staging", allow, ""},
		{"gpl in dev", map[string]string{"pkg:npm/x@1.0.0": "GPL-3.0-only"}, "dev", allow, ""},
		{"agpl in staging", map[string]string{"pkg:npm/x@1.0.0": "AGPL-3.0-only"}, "staging", deny, "denied in staging"},
		{"or with one side allowed", map[string]string{"pkg:npm/x@1.0.0": "MIT OR GPL-3.0-only"}, "prod", allow, ""},
		{"and with one side denied", map[string]string{"pkg:npm/x@1.0.0": "MIT AND GPL-2.0-or-later"}, "prod", deny,
			"component pkg:npm/x@1.0.0 has licence MIT AND GPL-2.0-or-later, denied in prod"},
		{"with an exception", map[string]string{"pkg:npm/x@1.0.0": "GPL-2.0-only WITH Classpath-exception-2.0"}, "prod", allow, ""},
		{"unknown in prod", map[string]string{"pkg:npm/x@1.0.0": "Frobnicate-1.0"}, "prod", deny,
			"component pkg:npm/x@1.0.0 has an unknown licence in prod"},
		{"unknown in staging", map[string]string{"pkg:npm/x@1.0.0": "Frobnicate-1.0"}, "staging", allow,
			"warning: component pkg:npm/x@1.0.0 has an unknown licence in staging"},
		{"unknown in dev", map[string]string{"pkg:npm/x@1.0.0": "Frobnicate-1.0"}, "dev", allow, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "lic-" + strings.ReplaceAll(tc.name, " ", "-")
			r := s.publish(t, name, "1.0.0", "prod")
			s.attachSBOM(t, r, cdx(t, tc.licences), s.artifactKey)
			resp := s.admitAs(t, name, "1.0.0", tc.env)
			wantDecision(t, resp, tc.want, tc.reason)
			if tc.want == allow && tc.env == "dev" && len(resp.GetReasons()) > 0 && containsReason(resp.GetReasons(), "warning:") {
				t.Errorf("dev reasons %q: want no warning", resp.GetReasons())
			}
		})
	}
}

// TestNoSBOM: without an SBOM the default policy warns in prod and
// staging and says nothing in dev. The catalog's GetArtifact says there
// is none, so GetSBOM is not asked (decision 0108); a catalog that does
// not say (one from before) is asked, with the same decisions.
func TestNoSBOM(t *testing.T) {
	for _, old := range []bool{false, true} {
		t.Run(fmt.Sprintf("catalog without presence=%v", old), func(t *testing.T) {
			s := newStack(t)
			s.catalog.mu.Lock()
			s.catalog.noPresence = old
			s.catalog.mu.Unlock()
			s.publish(t, "bare", "1.0.0", "prod")
			wantDecision(t, s.admitAs(t, "bare", "1.0.0", "prod"), allow, "warning: artifact has no verified SBOM, so its licences were not checked for prod")
			if resp := s.admitAs(t, "bare", "1.0.0", "dev"); containsReason(resp.GetReasons(), "SBOM") {
				t.Errorf("dev: reasons %q, want no SBOM warning", resp.GetReasons())
			}
			s.catalog.mu.Lock()
			reads := s.catalog.sbomReads
			s.catalog.mu.Unlock()
			if want := map[bool]int{false: 0, true: 2}[old]; reads != want {
				t.Errorf("GetSBOM called %d times for two admissions, want %d", reads, want)
			}
		})
	}
}

// TestForgedSBOMIsNotUsed: an SBOM whose statement another key signed,
// or whose served document the statement does not name, is not read for
// the licence rules: the admission is denied for the forgery, even where
// its components would pass.
func TestForgedSBOMIsNotUsed(t *testing.T) {
	s := newStack(t)
	other := newSigningKey(t)
	r := s.publish(t, "forged", "1.0.0", "prod")
	s.attachSBOM(t, r, cdx(t, map[string]string{"pkg:npm/x@1.0.0": "MIT"}), other)
	wantDecision(t, s.admitAs(t, "forged", "1.0.0", "dev"), deny, "the SBOM of forged@1.0.0 failed verification, so it is not used")

	// A genuine attestation of a GPL document, served with an MIT one in
	// its place: the MIT document is not believed.
	r = s.publish(t, "swapped", "1.0.0", "prod")
	b := s.attachSBOM(t, r, cdx(t, map[string]string{"pkg:npm/x@1.0.0": "GPL-3.0-only"}), s.artifactKey)
	s.catalog.mu.Lock()
	b.Document = cdx(t, map[string]string{"pkg:npm/x@1.0.0": "MIT"})
	b.Components[0].License = "MIT"
	s.catalog.mu.Unlock()
	resp := s.admitAs(t, "swapped", "1.0.0", "prod")
	wantDecision(t, resp, deny, "failed verification")
	if containsReason(resp.GetReasons(), "GPL") {
		t.Errorf("reasons %q: the forged document's components were judged", resp.GetReasons())
	}
}

// TestSBOMUnavailableFailsClosed: a catalog that cannot serve the SBOM
// gets no decision (Unavailable), never an admission without the check:
// an artifact it says has one, and any artifact when it does not say.
func TestSBOMUnavailableFailsClosed(t *testing.T) {
	s := newStack(t)
	r := s.publish(t, "down", "1.0.0", "prod")
	s.attachSBOM(t, r, cdx(t, map[string]string{"pkg:npm/x@1.0.0": "MIT"}), s.artifactKey)
	s.publish(t, "bare", "1.0.0", "prod")
	s.catalog.mu.Lock()
	s.catalog.failSBOM = status.Error(codes.Unavailable, "database down")
	s.catalog.mu.Unlock()
	_, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "down", Version: "1.0.0", Environment: "prod"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("admit with the SBOM unreadable: %v, want Unavailable", err)
	}
	s.catalog.mu.Lock()
	s.catalog.noPresence = true
	s.catalog.mu.Unlock()
	_, err = s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "bare", Version: "1.0.0", Environment: "prod"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("admit with the SBOM unreadable and its presence unknown: %v, want Unavailable", err)
	}
}

// TestSBOMSignedAfterRevocation: with --accept-before-revocation, an
// artifact signed before its key was revoked still verifies, but an SBOM
// that key signed after the revocation does not: the signer's live
// revocations apply to the SBOM as to the artifact.
func TestSBOMSignedAfterRevocation(t *testing.T) {
	s := newStackWith(t, stackOptions{acceptBeforeRevocation: true})
	r := s.publish(t, "late", "1.0.0", "prod")
	time.Sleep(1100 * time.Millisecond) // log times are to the second
	revokedAt := time.Now().UTC()
	time.Sleep(1100 * time.Millisecond)
	s.attachSBOM(t, r, cdx(t, map[string]string{"pkg:npm/x@1.0.0": "MIT"}), s.artifactKey)
	wantDecision(t, s.admitAs(t, "late", "1.0.0", "dev"), allow, "")
	s.revokeLive(s.artifactKey, revokedAt)
	wantDecision(t, s.admitAs(t, "late", "1.0.0", "dev"), deny, "the SBOM of late@1.0.0 failed verification")
}

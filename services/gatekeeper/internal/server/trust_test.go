package server

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/attest"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
)

const admissionDecided = "admission.decided"

// nextRoot returns the next version after the newest, changed by mutate.
func (s *stack) nextRoot(mutate func(*trustroot.Root)) *trustroot.Root {
	last := s.roots[len(s.roots)-1]
	next := *last
	next.Version++
	next.SigningKeys = slices.Clone(last.SigningKeys)
	next.RootKeys = slices.Clone(last.RootKeys)
	if mutate != nil {
		mutate(&next)
	}
	return &next
}

// publishRoot signs the next version with the ceremony's keys and has the
// signer serve it after the earlier ones.
func (s *stack) publishRoot(t *testing.T, mutate func(*trustroot.Root)) {
	t.Helper()
	next := s.nextRoot(mutate)
	s.serveNext(t, next, s.ceremony.Sign(t, next))
}

func (s *stack) serveNext(t *testing.T, next *trustroot.Root, envelope []byte) {
	t.Helper()
	s.roots = append(s.roots, next)
	s.signer.mu.Lock()
	s.signer.roots = append(s.signer.roots, envelope)
	s.signer.mu.Unlock()
}

// admit asks to deploy app@1.0.0 to prod after refreshing the trust.
func (s *stack) admit(t *testing.T) *gatekeeperv1.AdmitResponse {
	t.Helper()
	_ = s.gate.RefreshTrust(t.Context()) // failures are the tests' subject
	resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestAdmitTrustRoot(t *testing.T) {
	var (
		logged  = time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
		before  = logged.Add(-time.Minute)
		after   = logged.Add(time.Minute)
		revoke  = revokeArtifactKey
		allowed = gatekeeperv1.Decision_DECISION_ALLOW
		denied  = gatekeeperv1.Decision_DECISION_DENY
	)
	tests := []struct {
		name   string
		opts   stackOptions
		root   func(*trustroot.Root) // the change v2 makes, if any
		live   *time.Time            // revocation time the signer reports live
		want   gatekeeperv1.Decision
		reason string
	}{
		{name: "valid key", want: allowed, reason: "valid in trust root v1 when logged"},
		{name: "revoked in the root after the signature: denied by default", root: revoke(after), want: denied,
			reason: "was revoked at " + after.Format(time.RFC3339) + " (per trust root v2); its signatures are denied even when logged before"},
		{name: "revoked in the root after the signature, --accept-before-revocation", opts: stackOptions{acceptBeforeRevocation: true},
			root: revoke(after), want: allowed},
		{name: "revoked in the root before the signature", opts: stackOptions{acceptBeforeRevocation: true}, root: revoke(before), want: denied,
			reason: "was revoked at " + before.Format(time.RFC3339) + "; the signature was logged at " + logged.Format(time.RFC3339)},
		{name: "revoked live by the signer", live: &after, want: denied, reason: "(per the signer); its signatures are denied"},
		{name: "revoked live by the signer before the signature", opts: stackOptions{acceptBeforeRevocation: true}, live: &before, want: denied,
			reason: "(per the signer); the signature was logged at"},
		{name: "revoked live after the signature, --accept-before-revocation", opts: stackOptions{acceptBeforeRevocation: true}, live: &after, want: allowed},
		{name: "window ended before the signature", root: func(r *trustroot.Root) {
			r.SigningKeys[0].Status, r.SigningKeys[0].ValidUntil = trustroot.StatusRetired, &before
		}, want: denied, reason: "was valid until " + before.Format(time.RFC3339) + "; the signature was logged later"},
		{name: "window starts after the signature", root: func(r *trustroot.Root) { r.SigningKeys[0].ValidFrom = after }, want: denied,
			reason: "is valid from " + after.Format(time.RFC3339)},
		{name: "key dropped from the root", root: func(r *trustroot.Root) { r.SigningKeys = r.SigningKeys[1:] }, want: denied,
			reason: "is not an artifact key in trust root v2"},
		{name: "key limited to other channels", root: func(r *trustroot.Root) { r.SigningKeys[0].Channels = []string{"dev"} }, want: denied,
			reason: `signs channels dev, not "prod"`},
		{name: "key limited to this channel", root: func(r *trustroot.Root) { r.SigningKeys[0].Channels = []string{"dev", "prod"} }, want: allowed},
		{name: "default key on a channel with a key of its own", root: func(r *trustroot.Root) {
			other := newSigningKey(t).rootKey(attest.PurposeArtifact, "artifact-prod", 1)
			other.Channels = []string{"prod"}
			r.SigningKeys = append(r.SigningKeys, other)
		}, want: denied, reason: `channel "prod" has a key of its own`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStackWith(t, tt.opts)
			a := newArtifact("app", "1.0.0", "prod")
			s.catalog.addEntry(t, a, s.artifactKey.mustSign(t, provenance(t, a)), tlog.TypeArtifactPublished, logged)
			s.publisher.set(a.GetDigest(), codes.OK)
			if tt.root != nil {
				s.publishRoot(t, tt.root)
			}
			if tt.live != nil {
				s.revokeLive(s.artifactKey, *tt.live)
			}
			resp := s.admit(t)
			if resp.GetDecision() != tt.want {
				t.Fatalf("decision %v, reasons %q; want %v", resp.GetDecision(), resp.GetReasons(), tt.want)
			}
			if tt.reason != "" && !containsReason(resp.GetReasons(), tt.reason) {
				t.Errorf("reasons %q: none contains %q", resp.GetReasons(), tt.reason)
			}
			s.checkRecorded(t, resp, map[gatekeeperv1.Decision]string{allowed: "allow", denied: "deny"}[tt.want], "prod")
		})
	}
}

// TestLiveRevocationTakesEffectAtOnce: a revocation the signer reports
// denies the very next admission, without waiting for a trust refresh.
func TestLiveRevocationTakesEffectAtOnce(t *testing.T) {
	s := newStackWith(t, stackOptions{})
	a := newArtifact("app", "1.0.0", "prod")
	s.catalog.addEntry(t, a, s.artifactKey.mustSign(t, provenance(t, a)), tlog.TypeArtifactPublished, time.Now().UTC().Add(-time.Minute))
	s.publisher.set(a.GetDigest(), codes.OK)
	if resp := s.admit(t); resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("before the revocation: %v %q", resp.GetDecision(), resp.GetReasons())
	}
	s.revokeLive(s.artifactKey, time.Now().UTC().Add(-time.Hour))
	// No RefreshTrust here, unlike s.admit.
	resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !containsReason(resp.GetReasons(), "(per the signer)") {
		t.Fatalf("right after the revocation: %v %q", resp.GetDecision(), resp.GetReasons())
	}
}

func revokeArtifactKey(at time.Time) func(*trustroot.Root) {
	return func(r *trustroot.Root) {
		r.SigningKeys[0].Status, r.SigningKeys[0].RevokedAt = trustroot.StatusRevoked, &at
	}
}

// revokeLive has the signer report k revoked at at.
func (s *stack) revokeLive(k *signingKey, at time.Time) {
	s.signer.mu.Lock()
	defer s.signer.mu.Unlock()
	for _, pk := range s.signer.keys {
		if pk.GetKeyId() == k.id {
			pk.Status, pk.RevokedAt = signerv1.KeyStatus_KEY_STATUS_REVOKED, timestamppb.New(at)
		}
	}
}

// TestAdmitResignedByCurrentKey is the key-compromise drill: the artifact
// key is revoked, the catalog records a re-signature by its successor, and
// the artifact is admitted again.
func TestAdmitResignedByCurrentKey(t *testing.T) {
	s := newStack(t)
	r := s.publish(t, "app", "1.0.0", "prod")
	successor := newSigningKey(t)
	s.publishRoot(t, func(root *trustroot.Root) {
		revokeArtifactKey(time.Now().UTC().Add(-time.Hour))(root)
		root.SigningKeys = append(root.SigningKeys, successor.rootKey(attest.PurposeArtifact, "artifact", 2))
	})
	if resp := s.admit(t); resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !containsReason(resp.GetReasons(), "was revoked at") {
		t.Fatalf("before re-signing: %v %q, want a deny for the revocation", resp.GetDecision(), resp.GetReasons())
	}
	s.catalog.addEntry(t, r.artifact, successor.mustSign(t, provenance(t, r.artifact)), tlog.TypeArtifactResigned, time.Now().UTC())
	resp := s.admit(t)
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW || !containsReason(resp.GetReasons(), "signed by artifact key "+successor.id) {
		t.Fatalf("after re-signing: %v %q, want an allow by the successor", resp.GetDecision(), resp.GetReasons())
	}
	s.checkRecorded(t, resp, "allow", "prod")
}

func TestAdmitFrozenWhenTrustRootExpired(t *testing.T) {
	s := newStack(t)
	s.publish(t, "app", "1.0.0", "prod")
	expires := s.roots[0].Expires
	s.clock.Store(int64(time.Until(expires) + time.Second))
	resp := s.admit(t)
	want := "no usable trust root, so the gatekeeper denies every admission: trust root expired: trust root v1 expired at " + expires.Format(time.RFC3339)
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !containsReason(resp.GetReasons(), want) {
		t.Fatalf("decision %v, reasons %q; want a deny saying %q", resp.GetDecision(), resp.GetReasons(), want)
	}
	if e := s.catalog.lastEvent(); e == nil || e.Type != admissionDecided {
		t.Errorf("the deny was not logged: last entry %+v", e)
	}

	// A fresh root ends the freeze: a frozen gatekeeper asks for one at
	// the next admission.
	s.publishRoot(t, func(r *trustroot.Root) { r.Expires = expires.Add(24 * time.Hour) })
	resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if err != nil || resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("after a fresh root: %v %q %v", resp.GetDecision(), resp.GetReasons(), err)
	}
}

// TestAdmitWalksRootKeyRotation pins v1, while the signer has v2 (new
// signing key) and v3 (root keys rotated, signed by the old and the new
// threshold): the gatekeeper reaches v3 and trusts what it lists.
func TestAdmitWalksRootKeyRotation(t *testing.T) {
	s := newStack(t)
	newer := newSigningKey(t)
	s.publishRoot(t, func(r *trustroot.Root) {
		r.SigningKeys = append(r.SigningKeys, newer.rootKey(attest.PurposeArtifact, "artifact", 2))
	})
	next := trustroottest.New(t, 3)
	v3 := s.nextRoot(func(r *trustroot.Root) { r.RootKeys, r.Threshold = next.Keys, 2 })
	env := s.ceremony.SignAfter(t, v3, s.roots[1])
	for _, k := range next.Signers[:2] {
		var err error
		if env, err = trustroot.Sign(env, k); err != nil {
			t.Fatal(err)
		}
	}
	s.serveNext(t, v3, env)
	a := newArtifact("app", "1.0.0", "prod")
	s.publishSigned(t, a, newer)
	if resp := s.admit(t); resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW || !containsReason(resp.GetReasons(), "valid in trust root v3") {
		t.Fatalf("decision %v, reasons %q; want an allow under v3", resp.GetDecision(), resp.GetReasons())
	}
	if v := s.gate.TrustVersion(); v != 3 {
		t.Errorf("gatekeeper at trust root v%d, want v3", v)
	}
}

// TestAdmitRefusesRootsThatDoNotChain checks that what a compromised or
// confused signer serves cannot move the gatekeeper off its trust root.
func TestAdmitRefusesRootsThatDoNotChain(t *testing.T) {
	s := newStack(t)
	s.publishRoot(t, nil) // v2, signed properly
	s.publish(t, "app", "1.0.0", "prod")
	if resp := s.admit(t); resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW || s.gate.TrustVersion() != 2 {
		t.Fatalf("at v%d: %v %q", s.gate.TrustVersion(), resp.GetDecision(), resp.GetReasons())
	}
	// A v3 by other root keys, listing a rogue artifact key.
	rogueRoots, rogueKey := trustroottest.New(t, 1), newSigningKey(t)
	forged := s.nextRoot(func(r *trustroot.Root) {
		r.RootKeys, r.Threshold = rogueRoots.Keys, 1
		r.SigningKeys = []trustroot.SigningKey{rogueKey.rootKey(attest.PurposeArtifact, "artifact", 9)}
	})
	s.signer.mu.Lock()
	s.signer.roots = [][]byte{s.signer.roots[0], rogueRoots.Sign(t, forged)}
	s.signer.ignoreAfter = true // and it offers v1 again: a rollback
	s.signer.mu.Unlock()
	a := newArtifact("app", "2.0.0", "prod")
	s.publishSigned(t, a, rogueKey)
	if err := s.gate.RefreshTrust(t.Context()); err == nil {
		t.Error("refresh accepted roots that do not chain")
	}
	resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "2.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !containsReason(resp.GetReasons(), "is not an artifact key in trust root v2") {
		t.Fatalf("forged key: %v %q, want a deny under v2", resp.GetDecision(), resp.GetReasons())
	}
	if v := s.gate.TrustVersion(); v != 2 {
		t.Errorf("gatekeeper at trust root v%d, want v2 kept", v)
	}
	if resp := s.admit(t); resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Errorf("artifact signed by the v2 key: %v %q", resp.GetDecision(), resp.GetReasons())
	}
}

// TestAdmitLogKeyFromTrustRoot checks that the checkpoint must be signed by
// the key the trust root lists for its origin.
func TestAdmitLogKeyFromTrustRoot(t *testing.T) {
	s := newStack(t)
	s.publish(t, "app", "1.0.0", "prod")
	_, otherKey, err := tlog.GenerateKey(logOrigin)
	if err != nil {
		t.Fatal(err)
	}
	s.publishRoot(t, func(r *trustroot.Root) { r.LogKeys = []trustroot.LogKey{{Origin: logOrigin, VerifierKey: otherKey}} })
	if resp := s.admit(t); resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !containsReason(resp.GetReasons(), "log checkpoint rejected: checkpoint not signed by the log's key") {
		t.Fatalf("log key replaced: %v %q", resp.GetDecision(), resp.GetReasons())
	}
	s.publishRoot(t, func(r *trustroot.Root) {
		r.LogKeys = []trustroot.LogKey{{Origin: "other.test/log", VerifierKey: otherKey}}
	})
	if resp := s.admit(t); resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !containsReason(resp.GetReasons(), `trust root v3 lists no key for log "custody.test/log"`) {
		t.Fatalf("log not listed: %v %q", resp.GetDecision(), resp.GetReasons())
	}
}

package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
	"github.com/custody-dev/custody/services/gatekeeper/internal/finding"
	"github.com/custody-dev/custody/services/gatekeeper/internal/loghead"
	"github.com/custody-dev/custody/services/gatekeeper/internal/policy"
	"github.com/custody-dev/custody/services/gatekeeper/internal/purge"
	"github.com/custody-dev/custody/services/gatekeeper/internal/remote"
	"github.com/custody-dev/custody/services/gatekeeper/internal/rollback"
	"github.com/custody-dev/custody/services/gatekeeper/internal/stop"
	defaultpolicy "github.com/custody-dev/custody/services/gatekeeper/policy"
)

const (
	trustDomain = "custody.test"
	logOrigin   = "custody.test/log"
	builderID   = "spiffe://custody.test/builder/ci"
)

// stack is a gatekeeper served like in production, with fake catalog,
// signer and publisher holding real evidence, and a real trust root.
type stack struct {
	td          *identitytest.TrustDomain
	artifactKey *signingKey
	// ceremony holds the root keys; roots are the versions published so
	// far, roots[i] being v(i+1), the gatekeeper pinning v1.
	ceremony *trustroottest.Ceremony
	roots    []*trustroot.Root
	gate     *admission.Gate
	// clock shifts the gatekeeper's clock, in nanoseconds.
	clock      atomic.Int64
	catalog    *fakeCatalog
	signer     *fakeSigner
	publisher  *fakePublisher
	stopSigner func()
	metrics    *telemetry.Metrics
	policy     *policy.Policy
	addr       string
	deployer   gatekeeperv1.GatekeeperServiceClient
	stops      *stop.Store
	stopFile   string
	rollbacks  *rollback.Store
	findings   *finding.Store
	registry   *prometheus.Registry
	// rollbackClock shifts the rollback store's clock, in nanoseconds.
	rollbackClock atomic.Int64
	// head is the gate's log head tracker (stackOptions.logHead).
	head *loghead.Tracker
}

// newStack starts a stack with the default policy, or with the Rego
// source policySrc if given.
func newStack(t testing.TB, policySrc ...string) *stack {
	t.Helper()
	o := stackOptions{}
	if len(policySrc) > 0 {
		o.policy = policySrc[0]
	}
	return newStackWith(t, o)
}

type stackOptions struct {
	policy                 string // Rego source; empty: the default policy
	acceptBeforeRevocation bool
	stopFile               string // stop state file; empty: a new one
	purges                 *purge.Queue
	timeout                time.Duration // of one admission; zero: 1s
	dryRun                 []string      // environments in dry-run mode
	// logHead has the catalog's checkpoints co-signed by a witness the
	// trust root lists, and the gate check every admission against a
	// loghead.Tracker of them, as cmd/gatekeeper wires it.
	logHead bool
}

func newStackWith(t testing.TB, o stackOptions) *stack {
	t.Helper()
	td := identitytest.New(t, trustDomain)
	logSigner, logVerifier, err := tlog.GenerateKey(logOrigin)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{
		td:          td,
		artifactKey: newSigningKey(t),
		catalog:     newFakeCatalog(t, logOrigin, logSigner),
		signer:      &fakeSigner{decision: newSigningKey(t)},
		publisher:   &fakePublisher{blobs: map[string]codes.Code{}},
	}
	s.signer.publish(s.artifactKey.public(signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT))
	s.signer.publish(s.signer.decision.public(signerv1.KeyPurpose_KEY_PURPOSE_DECISION))
	if o.logHead {
		var witnessV string
		if s.catalog.witness, witnessV, err = tlog.GenerateCosignerKey("custody.test/signer"); err != nil {
			t.Fatal(err)
		}
		logVerifier = witnessV
	}
	s.ceremony = trustroottest.New(t, 2)
	v1 := s.ceremony.Root(1, 2, time.Now(), []trustroot.SigningKey{
		s.artifactKey.rootKey(attest.PurposeArtifact, "artifact", 1),
		s.signer.decision.rootKey(attest.PurposeDecision, "decision", 1),
	}, []trustroot.LogKey{{Origin: logOrigin, VerifierKey: logVerifier}})
	s.roots = []*trustroot.Root{v1}
	pinned, err := trustroot.Pin(s.ceremony.Sign(t, v1))
	if err != nil {
		t.Fatal(err)
	}
	s.signer.serveRoots(pinned.Envelope())
	// A first entry, so that every inclusion proof has hashes in it.
	s.publish(t, "base", "0.1.0", "prod")

	catalogAddr, _ := serve(t, td, "/service/catalog", s.catalog.policy(td.TD), func(srv *rpc.Server) {
		catalogv1.RegisterCatalogServiceServer(srv, s.catalog)
	})
	var signerAddr string
	signerAddr, s.stopSigner = serve(t, td, "/service/signer", s.signer.policy(td.TD), func(srv *rpc.Server) {
		signerv1.RegisterSignerServiceServer(srv, s.signer)
	})
	publisherAddr, _ := serve(t, td, "/service/publisher", s.publisher.policy(td.TD), func(srv *rpc.Server) {
		publisherv1.RegisterPublisherServiceServer(srv, s.publisher)
	})

	logger := slog.New(slog.DiscardHandler)
	tel := telemetry.Discard("gatekeeper")
	s.metrics = tel.Metrics
	src := td.Source(t, "/service/gatekeeper")
	dial := func(addr, path string) *grpc.ClientConn {
		conn, err := rpc.Dial(addr, td.ID(path), src, tel)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	if o.policy != "" {
		s.policy, err = policy.New(t.Context(), "custom.rego", []byte(o.policy))
	} else {
		// The built-in bundle, as the gatekeeper loads it by default.
		s.policy, err = policy.LoadBundleFS(t.Context(), defaultpolicy.BundleName, defaultpolicy.Bundle(), policy.BundleOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	catalog := remote.NewCatalog(catalogv1.NewCatalogServiceClient(dial(catalogAddr, "/service/catalog")))
	if o.stopFile == "" {
		o.stopFile = filepath.Join(t.TempDir(), "stops.json")
	}
	s.stopFile = o.stopFile
	s.stops, err = stop.Open(stop.Config{File: o.stopFile, Quorum: map[string]int{"prod": 2}, DefaultQuorum: 1, KillSwitchQuorum: 2,
		Log: catalog, Logger: logger, Registry: tel.Registry})
	if err != nil {
		t.Fatal(err)
	}
	s.rollbacks, err = rollback.Open(rollback.Config{File: filepath.Join(t.TempDir(), "rollbacks.json"), Quorum: 2, TTL: time.Hour,
		Log: catalog, Logger: logger, Now: func() time.Time { return time.Now().Add(time.Duration(s.rollbackClock.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	if o.timeout == 0 {
		o.timeout = time.Second
	}
	var head *loghead.Tracker
	var gate *admission.Gate
	if o.logHead {
		head, err = loghead.New(loghead.Config{Source: catalog, Root: func() (*trustroot.Root, error) { return gate.TrustRoot() },
			MaxAge: loghead.DefaultMaxAge, Refresh: loghead.DefaultRefresh, Registerer: tel.Registry, Logger: logger,
			Now: func() time.Time { return time.Now().Add(time.Duration(s.clock.Load())) }})
		if err != nil {
			t.Fatal(err)
		}
		s.head = head
	}
	var logHead admission.LogHead
	if head != nil {
		logHead = head
	}
	gate, err = admission.New(admission.Config{
		LogHead:                logHead,
		Stops:                  s.stops,
		Rollbacks:              s.rollbacks,
		Deployments:            catalog,
		Catalog:                catalog,
		SBOMs:                  catalog,
		Advisories:             catalog,
		VEX:                    catalog,
		Signer:                 remote.NewSigner(signerv1.NewSignerServiceClient(dial(signerAddr, "/service/signer")), logger),
		Publisher:              remote.NewPublisher(publisherv1.NewPublisherServiceClient(dial(publisherAddr, "/service/publisher"))),
		Policy:                 s.policy,
		TrustRoot:              pinned,
		AcceptBeforeRevocation: o.acceptBeforeRevocation,
		VerifierID:             td.ID("/service/gatekeeper").String(),
		TrustDomain:            trustDomain,
		Metrics:                tel.Metrics,
		Logger:                 logger,
		Timeout:                o.timeout,
		DryRun:                 o.dryRun,
		Now:                    func() time.Time { return time.Now().Add(time.Duration(s.clock.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := gate.RefreshTrust(t.Context()); err != nil {
		t.Fatal(err)
	}
	s.gate = gate
	if head != nil {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { head.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	// The re-evaluation proves the entries it reads against co-signed
	// checkpoints that a log head holds consistent (decision 0119): with
	// logHead, the gate's, as cmd/gatekeeper wires it; without, one of its
	// own, which gets no checkpoint from the fake (no witness), so that
	// its steps fail closed.
	findingsHead := head
	if findingsHead == nil {
		if findingsHead, err = loghead.New(loghead.Config{Source: catalog, Root: gate.TrustRoot, MaxAge: loghead.DefaultMaxAge, Logger: logger}); err != nil {
			t.Fatal(err)
		}
	}
	s.findings, err = finding.Open(finding.Config{File: filepath.Join(t.TempDir(), "findings.json"), Log: catalog, Events: catalog, Evaluator: gate,
		Root: gate.TrustRoot, Head: findingsHead, TrustDomain: td.TD, Logger: logger, Registry: tel.Registry})
	if err != nil {
		t.Fatal(err)
	}
	s.registry = tel.Registry
	srv := rpc.NewServer(rpc.ServerConfig{Source: src, TrustDomain: td.TD, Policy: Policy(td.TD), Logger: logger, Telemetry: tel, StreamWorkers: StreamWorkers})
	gs := New(gate, logger).WithStops(s.stops, gate).WithRollbacks(s.rollbacks).WithFindings(s.findings)
	if o.purges != nil {
		gs.WithPurges(o.purges)
	}
	gs.now = func() time.Time { return time.Now().Add(time.Duration(s.clock.Load())) }
	gatekeeperv1.RegisterGatekeeperServiceServer(srv, gs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	s.addr = l.Addr().String()
	s.deployer = s.client(t, "/deployer/pipeline")
	return s
}

// client returns a gatekeeper client with the SVID of path.
func (s *stack) client(t testing.TB, path string) gatekeeperv1.GatekeeperServiceClient {
	t.Helper()
	conn, err := rpc.Dial(s.addr, s.td.ID("/service/gatekeeper"), s.td.Source(t, path), telemetry.Discard("client"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return gatekeeperv1.NewGatekeeperServiceClient(conn)
}

func newArtifact(name, version, channel string) *catalogv1.Artifact {
	content := name + "@" + version + " contents"
	return &catalogv1.Artifact{
		Name: name, Version: version, Digest: digestOf(content), Size: int64(len(content)), Channel: channel,
		BuilderId: builderID, SourceRepo: "https://git.example/" + name, SourceCommit: "3f2a9c1",
		CreatedAt: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
	}
}

// publish records an artifact signed with the published artifact key, with
// its blob intact at the publisher.
func (s *stack) publish(t testing.TB, name, version, channel string) *record {
	t.Helper()
	return s.publishSigned(t, newArtifact(name, version, channel), s.artifactKey)
}

func (s *stack) publishSigned(t testing.TB, a *catalogv1.Artifact, key *signingKey) *record {
	t.Helper()
	r := s.catalog.add(t, a, key.mustSign(t, provenance(t, a)))
	s.publisher.set(a.GetDigest(), codes.OK)
	return r
}

func (s *stack) tamper(r *record, f func(*catalogv1.GetArtifactResponse)) {
	s.catalog.mu.Lock()
	defer s.catalog.mu.Unlock()
	r.tamper = f
}

func TestAdmitAllows(t *testing.T) {
	s := newStack(t)
	r := s.publish(t, "app", "1.4.0", "staging")
	for _, tt := range []struct {
		name string
		req  *gatekeeperv1.AdmitRequest
	}{
		{"by name and version", &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.4.0", Environment: "staging"}},
		{"by digest, to a lower environment", &gatekeeperv1.AdmitRequest{Digest: r.artifact.GetDigest(), Environment: "dev"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.deployer.Admit(t.Context(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
				t.Fatalf("decision = %v, reasons %q; want allow", resp.GetDecision(), resp.GetReasons())
			}
			if resp.GetDigest() != r.artifact.GetDigest() || resp.GetPolicyDigest() != s.policy.Digest() {
				t.Errorf("digest %s, policy digest %s; want %s, %s", resp.GetDigest(), resp.GetPolicyDigest(), r.artifact.GetDigest(), s.policy.Digest())
			}
			for _, want := range []string{"signed by artifact key " + s.artifactKey.id, "matches the catalog record", "included in the checkpoint",
				"signed by the log's key", "intact", "admits channel"} {
				if !containsReason(resp.GetReasons(), want) {
					t.Errorf("reasons %q: none mentions %q", resp.GetReasons(), want)
				}
			}
			s.checkRecorded(t, resp, "allow", tt.req.GetEnvironment())
		})
	}
}

func TestAdmitDenies(t *testing.T) {
	type metric struct {
		kind, label string
	}
	tests := []struct {
		name string
		// prepare publishes what the case needs and returns the request.
		prepare func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest
		want    string
		metric  *metric
	}{{
		name: "channel not permitted for the environment",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			s.publish(t, "app", "1.0.0", "staging")
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want: `channel "staging" may not deploy to "prod": "prod" accepts channels prod`,
	}, {
		name: "unknown environment",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			s.publish(t, "app", "1.0.0", "prod")
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "qa"}
		},
		want: `environment "qa" is unknown`,
	}, {
		name: "unknown version",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			s.publish(t, "app", "1.0.0", "prod")
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "9.9.9", Environment: "prod"}
		},
		want: "artifact app@9.9.9 is not in the catalog",
	}, {
		name: "unknown digest",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			return &gatekeeperv1.AdmitRequest{Digest: digestOf("nothing"), Environment: "prod"}
		},
		want: "artifact " + digestOf("nothing") + " is not in the catalog",
	}, {
		name: "tampered envelope",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			r := s.publish(t, "app", "1.0.0", "dev")
			s.tamper(r, func(resp *catalogv1.GetArtifactResponse) {
				resp.Envelope = rewritePayload(t, resp.Envelope, `"channel":"dev"`, `"channel":"prod"`)
				resp.Artifact.Channel = "prod"
			})
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want:   "artifact envelope signature does not verify",
		metric: &metric{"signature", "envelope"},
	}, {
		name: "envelope of another artifact (mix-and-match)",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			good := s.publish(t, "app", "1.0.0", "prod")
			bad := s.publish(t, "app", "2.0.0", "prod")
			s.tamper(bad, func(resp *catalogv1.GetArtifactResponse) { resp.Envelope = good.envelope })
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "2.0.0", Environment: "prod"}
		},
		want:   `signed version "1.0.0", catalog record has "2.0.0"`,
		metric: &metric{"integrity", "evidence"},
	}, {
		name: "record promoted to another channel after signing",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			r := s.publish(t, "app", "1.0.0", "dev")
			s.tamper(r, func(resp *catalogv1.GetArtifactResponse) { resp.Artifact.Channel = "prod" })
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want:   `signed channel "dev", catalog record has "prod"`,
		metric: &metric{"integrity", "evidence"},
	}, {
		name: "signed by a key that is not in the trust root",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			rogue := newSigningKey(t)
			// The signer listing a key does not make it trusted.
			s.signer.publish(rogue.public(signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT))
			s.publishSigned(t, newArtifact("app", "1.0.0", "prod"), rogue)
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want:   "artifact envelope signature does not verify against the artifact keys of trust root v1: key ",
		metric: &metric{"signature", "envelope"},
	}, {
		name: "signed by the decision key",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			s.publishSigned(t, newArtifact("app", "1.0.0", "prod"), s.signer.decision)
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want:   "artifact envelope signature does not verify",
		metric: &metric{"signature", "envelope"},
	}, {
		name: "inclusion proof does not match the checkpoint",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			r := s.publish(t, "app", "1.0.0", "prod")
			s.tamper(r, func(resp *catalogv1.GetArtifactResponse) { resp.Entry.InclusionProof[0][0] ^= 1 })
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want:   "log inclusion proof rejected: proof does not match checkpoint",
		metric: &metric{"integrity", "log"},
	}, {
		name: "log entry of another artifact",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			r := s.publish(t, "app", "1.0.0", "prod")
			// A valid entry and proof, but for another artifact.
			other, err := s.catalog.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "base", Version: "0.1.0"})
			if err != nil {
				t.Fatal(err)
			}
			s.tamper(r, func(resp *catalogv1.GetArtifactResponse) { resp.Entry = other.GetEntry() })
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want:   "is for base@0.1.0",
		metric: &metric{"integrity", "evidence"},
	}, {
		name: "checkpoint signed by an unknown key",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			r := s.publish(t, "app", "1.0.0", "prod")
			rogue, _, err := tlog.GenerateKey(logOrigin)
			if err != nil {
				t.Fatal(err)
			}
			s.tamper(r, func(resp *catalogv1.GetArtifactResponse) {
				size := s.catalog.tree.Size()
				cp, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: logOrigin, Size: size, Hash: s.catalog.tree.Hash()}, rogue)
				if err != nil {
					t.Error(err)
				}
				resp.Entry.Checkpoint = cp
			})
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want:   "log checkpoint rejected: checkpoint not signed by the log's key",
		metric: &metric{"signature", "checkpoint"},
	}, {
		name: "blob corrupted at the publisher",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			r := s.publish(t, "app", "1.0.0", "prod")
			s.publisher.set(r.artifact.GetDigest(), codes.DataLoss)
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want:   "no longer matches its digest (corrupted at rest)",
		metric: &metric{"integrity", "store"},
	}, {
		name: "blob missing at the publisher",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			r := s.publish(t, "app", "1.0.0", "prod")
			s.publisher.set(r.artifact.GetDigest(), codes.NotFound)
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want:   "is missing from the publisher",
		metric: &metric{"integrity", "store"},
	}, {
		name: "catalog record with a malformed digest",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			r := s.publish(t, "app", "1.0.0", "prod")
			s.tamper(r, func(resp *catalogv1.GetArtifactResponse) { resp.Artifact.Digest = "sha256:NOT-HEX" })
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want:   `catalog record of app@1.0.0 has a malformed digest "sha256:NOT-HEX"`,
		metric: &metric{"integrity", "evidence"},
	}, {
		name: "builder of another trust domain",
		prepare: func(t *testing.T, s *stack) *gatekeeperv1.AdmitRequest {
			a := newArtifact("app", "1.0.0", "prod")
			a.BuilderId = "spiffe://elsewhere.test/builder/ci"
			s.publishSigned(t, a, s.artifactKey)
			return &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
		},
		want: `builder "spiffe://elsewhere.test/builder/ci" is not a builder of trust domain "custody.test"`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t)
			req := tt.prepare(t, s)
			resp, err := s.deployer.Admit(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY {
				t.Fatalf("decision = %v, reasons %q; want deny", resp.GetDecision(), resp.GetReasons())
			}
			t.Logf("reasons: %q", resp.GetReasons())
			if !containsReason(resp.GetReasons(), tt.want) {
				t.Errorf("reasons %q: none contains %q", resp.GetReasons(), tt.want)
			}
			if tt.metric != nil {
				c := s.metrics.SignatureFailures
				if tt.metric.kind == "integrity" {
					c = s.metrics.IntegrityFailures
				}
				if got := testutil.ToFloat64(c.WithLabelValues(tt.metric.label)); got < 1 {
					t.Errorf("%s failures{%s} = %v, want at least 1", tt.metric.kind, tt.metric.label, got)
				}
			}
			s.checkRecorded(t, resp, "deny", req.GetEnvironment())
		})
	}
}

// checkRecorded checks that the decision was signed by the signer's
// decision key as a VSA and logged at the index returned.
func (s *stack) checkRecorded(t *testing.T, resp *gatekeeperv1.AdmitResponse, verdict, env string) {
	t.Helper()
	if len(resp.GetDecisionId()) != 32 {
		t.Errorf("decision id %q: want 32 hex digits", resp.GetDecisionId())
	}
	e := s.catalog.lastEvent()
	if e == nil {
		t.Fatal("no decision was logged")
	}
	if e.Type != "admission.decided" || e.Actor != "spiffe://custody.test/service/gatekeeper" || e.Subject.Digest != resp.GetDigest() {
		t.Errorf("logged entry type %q actor %q subject %q; want admission.decided by the gatekeeper about %q", e.Type, e.Actor, e.Subject.Digest, resp.GetDigest())
	}
	if want := int64(s.catalog.tree.Size() - 1); resp.GetLogIndex() != want {
		t.Errorf("log index %d, want %d", resp.GetLogIndex(), want)
	}
	var details struct {
		Decision       string                      `json:"decision"`
		DecisionID     string                      `json:"decision_id"`
		Environment    string                      `json:"environment"`
		PolicyDigest   string                      `json:"policy_digest"`
		Name           string                      `json:"name"`
		Version        string                      `json:"version"`
		EnvelopeSHA256 string                      `json:"envelope_sha256"`
		RequestedBy    string                      `json:"requested_by"`
		Reasons        []string                    `json:"reasons"`
		PolicyRevision string                      `json:"policy_revision"`
		DryRun         *bool                       `json:"dry_run"`
		RealDecision   string                      `json:"real_decision"`
		Inputs         []attest.ResourceDescriptor `json:"input_attestations"`
	}
	if err := json.Unmarshal(e.Details, &details); err != nil {
		t.Fatalf("details %s: %v", e.Details, err)
	}
	if details.Decision != verdict || details.DecisionID != resp.GetDecisionId() || details.Environment != env ||
		details.PolicyDigest != resp.GetPolicyDigest() || details.RequestedBy != "spiffe://custody.test/deployer/pipeline" ||
		strings.Join(details.Reasons, "\n") != strings.Join(resp.GetReasons(), "\n") ||
		details.PolicyRevision != resp.GetPolicyRevision() || details.DryRun == nil || *details.DryRun != resp.GetDryRun() ||
		details.RealDecision != strings.ToLower(strings.TrimPrefix(resp.GetRealDecision().String(), "DECISION_")) {
		t.Errorf("logged details %s do not match the response %v", e.Details, resp)
	}
	if resp.GetPolicyRevision() != s.policy.Revision() || resp.GetPolicyDigest() != s.policy.Digest() {
		t.Errorf("policy %s at revision %q, want the bundle's %s at %q", resp.GetPolicyDigest(), resp.GetPolicyRevision(), s.policy.Digest(), s.policy.Revision())
	}
	var inputs []attest.ResourceDescriptor
	for _, a := range resp.GetInputAttestations() {
		inputs = append(inputs, attest.ResourceDescriptor{URI: a.GetUri(), Digest: a.GetDigest()})
	}
	if diff := cmp.Diff(inputs, details.Inputs, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("logged input attestations differ from the response's (-response +logged):\n%s", diff)
	}
	if details.Name != "" && resp.GetDigest() != "" {
		if len(inputs) == 0 || inputs[0].URI != attest.AttestationURI(details.Name, details.Version, attest.AttestationProvenance) || len(inputs[0].Digest["sha256"]) != 64 {
			t.Errorf("input attestations %v: want the provenance of %s@%s first", inputs, details.Name, details.Version)
		}
	}
	if resp.GetDigest() == "" || details.Name == "" || details.Version == "" {
		// Nothing a VSA could name: an unknown artifact. Only a deny may
		// go unsigned.
		if len(resp.GetDecisionEnvelope()) != 0 || details.EnvelopeSHA256 != "" || verdict != "deny" {
			t.Errorf("%s decision about an unknown artifact: envelope %q, logged envelope hash %q; want an unsigned deny",
				verdict, resp.GetDecisionEnvelope(), details.EnvelopeSHA256)
		}
		return
	}
	sum := sha256Hex(resp.GetDecisionEnvelope())
	if details.EnvelopeSHA256 != sum {
		t.Errorf("logged envelope_sha256 %q, the returned envelope's is %s", details.EnvelopeSHA256, sum)
	}
	stmt, err := attest.ParseStatement(s.signer.decision.open(t, resp.GetDecisionEnvelope()))
	if err != nil {
		t.Fatal(err)
	}
	vsa, err := stmt.Decision()
	if err != nil {
		t.Fatalf("decision record: %v", err)
	}
	want := &attest.Decision{
		VerifierID: "spiffe://custody.test/service/gatekeeper", Name: details.Name, Version: details.Version,
		Digest: resp.GetDigest(), Environment: env, PolicyURI: "custody:policy/admission", PolicyDigest: resp.GetPolicyDigest(),
		PolicyRevision: resp.GetPolicyRevision(), DryRun: resp.GetDryRun(),
		DecisionID: resp.GetDecisionId(), Passed: verdict == "allow", Reasons: resp.GetReasons(), InputAttestations: inputs,
	}
	if diff := cmp.Diff(want, vsa, cmpopts.IgnoreFields(attest.Decision{}, "Time"), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("decision record (-want +got):\n%s", diff)
	}
	if time.Since(vsa.Time) > time.Minute {
		t.Errorf("decision record time %v is not now", vsa.Time)
	}
}

func TestAdmitAuthorization(t *testing.T) {
	s := newStack(t)
	s.publish(t, "app", "1.0.0", "prod")
	req := &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
	for _, tt := range []struct {
		path string
		want codes.Code
	}{
		{"/admin/ops", codes.OK},
		{"/deployer/pipeline", codes.OK},
		{"/builder/ci", codes.PermissionDenied},
		{"/approver/alice", codes.PermissionDenied},
		{"/service/cdn-broker", codes.PermissionDenied},
	} {
		t.Run(tt.path, func(t *testing.T) {
			before := s.catalog.eventCount()
			_, err := s.client(t, tt.path).Admit(t.Context(), req)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("Admit as %s: %v, want %v", tt.path, err, tt.want)
			}
			if tt.want != codes.PermissionDenied {
				return
			}
			msg := status.Convert(err).Message()
			for _, want := range []string{"/custody.gatekeeper.v1.GatekeeperService/Admit", "spiffe://custody.test" + tt.path} {
				if !strings.Contains(msg, want) {
					t.Errorf("PermissionDenied message %q does not name %s", msg, want)
				}
			}
			if s.catalog.eventCount() != before {
				t.Error("a refused call produced a decision")
			}
		})
	}
}

func TestAdmitInvalidArgument(t *testing.T) {
	s := newStack(t)
	for _, req := range []*gatekeeperv1.AdmitRequest{
		{Name: "app", Version: "1.0.0"},
		{Name: "app", Environment: "prod"},
		{Digest: "sha256:ABC", Environment: "prod"},
		{Name: "app", Version: "1.0.0", Digest: digestOf("x"), Environment: "prod"},
		{Name: "app", Version: "1.0.0", Environment: "prod\n"},
		{Name: "app\x00", Version: "1.0.0", Environment: "prod"},
		{Name: strings.Repeat("a", 2000), Version: "1.0.0", Environment: "prod"},
	} {
		_, err := s.deployer.Admit(t.Context(), req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Admit(%v) = %v, want InvalidArgument", req, err)
		}
	}
	if n := s.catalog.eventCount(); n != 0 {
		t.Errorf("%d decisions logged for invalid requests", n)
	}
}

// TestAdmitFailsClosed checks that when a dependency fails no decision is
// returned, and in particular no unsigned or unlogged one.
func TestAdmitFailsClosed(t *testing.T) {
	req := &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
	for _, tt := range []struct {
		name  string
		fault func(t *testing.T, s *stack)
	}{
		{"signer down before any key was fetched", func(t *testing.T, s *stack) { s.stopSigner() }},
		{"signer down after keys were cached", func(t *testing.T, s *stack) {
			if _, err := s.deployer.Admit(t.Context(), req); err != nil {
				t.Fatal(err)
			}
			s.stopSigner()
		}},
		{"catalog cannot log the decision", func(t *testing.T, s *stack) {
			s.catalog.mu.Lock()
			s.catalog.failNext = status.Error(codes.Unavailable, "log storage down")
			s.catalog.mu.Unlock()
		}},
		{"publisher unavailable", func(t *testing.T, s *stack) {
			s.publisher.set(digestOf("app@1.0.0 contents"), codes.Unavailable)
		}},
		{"publisher hangs", func(t *testing.T, s *stack) {
			s.publisher.set(digestOf("app@1.0.0 contents"), hang)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t)
			s.publish(t, "app", "1.0.0", "prod")
			tt.fault(t, s)
			before := s.catalog.eventCount()
			resp, err := s.deployer.Admit(t.Context(), req)
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("Admit = %v, %v; want Unavailable", resp, err)
			}
			if !strings.Contains(status.Convert(err).Message(), "retry later") {
				t.Errorf("message %q does not say what to do", status.Convert(err).Message())
			}
			if s.catalog.eventCount() != before {
				t.Error("a decision was logged although none was returned")
			}
		})
	}
}

// TestAdmitFetchesRotatedKeys checks that an envelope signed by a key that
// a trust root published after start lists verifies: every admission asks
// the signer for newer roots.
func TestAdmitFetchesRotatedKeys(t *testing.T) {
	s := newStack(t)
	s.publish(t, "app", "1.0.0", "prod")
	if resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}); err != nil || resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("before rotation: %v %v", resp, err)
	}
	rotated := newSigningKey(t)
	s.publishRoot(t, func(r *trustroot.Root) {
		r.SigningKeys = append(r.SigningKeys, rotated.rootKey(attest.PurposeArtifact, "artifact", 2))
	})
	s.publishSigned(t, newArtifact("app", "2.0.0", "prod"), rotated)
	for range 2 {
		resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "2.0.0", Environment: "prod"})
		if err != nil || resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
			t.Fatalf("after rotation: %v %v", resp, err)
		}
		if !containsReason(resp.GetReasons(), "valid in trust root v2") {
			t.Errorf("reasons %q do not name trust root v2", resp.GetReasons())
		}
	}
	// At start, then once per admission: new roots and revocations take
	// effect at once.
	if fetches, _ := s.signer.counts(); fetches != 4 {
		t.Errorf("GetTrustRoot called %d times, want 4 (at start, then once per admission)", fetches)
	}
}

func TestAdmitConcurrently(t *testing.T) {
	s := newStack(t)
	s.publish(t, "app", "1.0.0", "prod")
	s.publish(t, "lib", "1.0.0", "dev")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			req := &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
			want := gatekeeperv1.Decision_DECISION_ALLOW
			if i%2 == 1 {
				req.Name, want = "lib", gatekeeperv1.Decision_DECISION_DENY
			}
			resp, err := s.deployer.Admit(t.Context(), req)
			if err != nil || resp.GetDecision() != want {
				t.Errorf("Admit(%v) = %v, %v; want %v", req, resp, err, want)
			}
		})
	}
	wg.Wait()
	// Concurrent admissions may share a trust sync (each one started after
	// they called), never skip it.
	if fetches, signs := s.signer.counts(); fetches < 2 || fetches > 9 || signs != 8 {
		t.Errorf("signer saw %d trust-root fetches and %d signatures, want 2 to 9 (at start, then at most one per admission) and 8", fetches, signs)
	}
}

// TestAdmitPolicyCannotOverrideVerification checks that failed
// verification denies even under a policy that admits everything.
func TestAdmitPolicyCannotOverrideVerification(t *testing.T) {
	s := newStack(t, "package custody.admission\n\ndeny contains msg if {\n\tmsg := \"never\"\n\tfalse\n}\n")
	r := s.publish(t, "app", "1.0.0", "dev")
	s.tamper(r, func(resp *catalogv1.GetArtifactResponse) {
		resp.Envelope = rewritePayload(t, resp.Envelope, `"channel":"dev"`, `"channel":"prod"`)
	})
	resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !containsReason(resp.GetReasons(), "signature does not verify") {
		t.Fatalf("decision %v, reasons %q; want deny for the signature", resp.GetDecision(), resp.GetReasons())
	}
	s.checkRecorded(t, resp, "deny", "prod")
}

// TestAdmitPolicyErrorDenies checks that a policy that fails at evaluation
// denies good artifacts rather than admitting them.
func TestAdmitPolicyErrorDenies(t *testing.T) {
	s := newStack(t, "package custody.admission\n\ndeny contains msg if {\n\tmsg := sprintf(\"%d\", [to_number(input.environment)])\n}\n")
	s.publish(t, "app", "1.0.0", "prod")
	resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !containsReason(resp.GetReasons(), "custom.rego could not be evaluated") {
		t.Fatalf("decision %v, reasons %q; want deny because the policy failed", resp.GetDecision(), resp.GetReasons())
	}
	s.checkRecorded(t, resp, "deny", "prod")
}

func containsReason(reasons []string, want string) bool {
	for _, r := range reasons {
		if strings.Contains(r, want) {
			return true
		}
	}
	return false
}

// rewritePayload replaces old by new in an envelope's payload and keeps its
// signature, as someone editing a signed statement would.
func rewritePayload(t *testing.T, envelope []byte, old, new string) []byte {
	var env dsseEnvelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		t.Error(err)
		return envelope
	}
	p, _ := base64.StdEncoding.DecodeString(env.Payload)
	if !bytes.Contains(p, []byte(old)) {
		t.Errorf("payload %s has no %s", p, old)
	}
	env.Payload = base64.StdEncoding.EncodeToString(bytes.ReplaceAll(p, []byte(old), []byte(new)))
	b, err := json.Marshal(env)
	if err != nil {
		t.Error(err)
	}
	return b
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/advisory"
	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/verify"
)

// This file holds hand-written fakes of the catalog, signer and publisher,
// served in-process with the production interceptors, and the helpers that
// make real evidence for them: in-toto statements from libs/attest in DSSE
// envelopes signed with ECDSA P-256 (the DSSE encoding and signing are
// written here independently of libs/attest, so that the two cross-check),
// a Merkle tree with RFC 6962 proofs, and checkpoints signed with a note
// key.

const payloadType = "application/vnd.in-toto+json"

// signingKey is an ECDSA P-256 key with its DSSE key id.
type signingKey struct {
	priv *ecdsa.PrivateKey
	id   string
	der  []byte
}

func newSigningKey(t testing.TB) *signingKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return &signingKey{priv: priv, id: hex.EncodeToString(sum[:]), der: der}
}

func (k *signingKey) public(purpose signerv1.KeyPurpose) *signerv1.PublicKey {
	return &signerv1.PublicKey{KeyId: k.id, Purpose: purpose, Algorithm: "ecdsa-p256-sha256", PublicKeyDer: k.der,
		ValidFrom: timestamppb.New(time.Unix(1600000000, 0))}
}

// rootKey lists k in a trust root as version v of key name, valid since
// the time public gives.
func (k *signingKey) rootKey(purpose, name string, v int) trustroot.SigningKey {
	return trustroot.SigningKey{
		Key:     trustroot.Key{ID: k.id, Algorithm: "ecdsa-p256-sha256", PublicKey: k.der},
		Purpose: purpose, Name: name, Version: v, ValidFrom: time.Unix(1600000000, 0).UTC(), Status: trustroot.StatusActive,
	}
}

// pae is DSSE's pre-authentication encoding.
func pae(typ string, payload []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(typ), typ, len(payload), payload)
}

type dsseSignature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

type dsseEnvelope struct {
	PayloadType string          `json:"payloadType"`
	Payload     string          `json:"payload"`
	Signatures  []dsseSignature `json:"signatures"`
}

// sign returns a DSSE envelope over payload, signed by k.
func (k *signingKey) sign(payload []byte) ([]byte, error) {
	h := sha256.Sum256(pae(payloadType, payload))
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, h[:])
	if err != nil {
		return nil, err
	}
	return json.Marshal(dsseEnvelope{PayloadType: payloadType, Payload: base64.StdEncoding.EncodeToString(payload),
		Signatures: []dsseSignature{{KeyID: k.id, Sig: base64.StdEncoding.EncodeToString(sig)}}})
}

func (k *signingKey) mustSign(t testing.TB, payload []byte) []byte {
	t.Helper()
	b, err := k.sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openEnvelope returns an envelope's payload after checking its signature
// by k, as an independent verifier would.
func (k *signingKey) open(t testing.TB, envelope []byte) []byte {
	t.Helper()
	var env dsseEnvelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		t.Fatalf("decision envelope: %v", err)
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil || len(env.Signatures) != 1 || env.Signatures[0].KeyID != k.id {
		t.Fatalf("decision envelope: payload error %v, signatures %+v; want one by %s", err, env.Signatures, k.id)
	}
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	h := sha256.Sum256(pae(env.PayloadType, payload))
	if !ecdsa.VerifyASN1(&k.priv.PublicKey, h[:], sig) {
		t.Fatal("decision envelope signature does not verify")
	}
	return payload
}

// provenance returns the in-toto statement the publisher has signed for a.
func provenance(t testing.TB, a *catalogv1.Artifact) []byte {
	t.Helper()
	b, err := attest.NewProvenance(attest.Artifact{
		Name: a.GetName(), Version: a.GetVersion(), Digest: a.GetDigest(), Channel: a.GetChannel(),
		BuilderID: a.GetBuilderId(), SourceRepo: a.GetSourceRepo(), SourceCommit: a.GetSourceCommit(),
		StartedOn: a.GetCreatedAt().AsTime().Add(-time.Minute), FinishedOn: a.GetCreatedAt().AsTime(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func digestOf(content string) string {
	sum := sha256.Sum256([]byte(content))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// serve runs svc on a production rpc.Server for the SPIFFE ID path on a
// loopback port and returns its address and a function that stops it.
func serve(t testing.TB, td *identitytest.TrustDomain, path string, policy rpc.Policy, register func(*rpc.Server)) (string, func()) {
	t.Helper()
	srv := rpc.NewServer(rpc.ServerConfig{
		Source: td.Source(t, path), TrustDomain: td.TD, Policy: policy,
		Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("test"),
	})
	register(srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	var once sync.Once
	stop := func() { once.Do(srv.Stop) }
	t.Cleanup(stop)
	return l.Addr().String(), stop
}

// fakeCatalog keeps records and a real Merkle tree. Like the real catalog,
// it proves each entry against a checkpoint of the current tree, and logs
// appended events as entries with the caller as actor.
type fakeCatalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	origin string
	// logSigner signs the checkpoints, parsed once: parsing a note key
	// derives the Ed25519 key, which is not what a catalog pays per read.
	logSigner note.Signer

	mu   sync.Mutex
	tree *testonly.Tree
	// leaves holds the entries' bytes: tree keeps only their hashes.
	leaves   [][]byte
	records  map[string]*record
	events   []*tlog.Entry
	failNext error // returned by the next AppendEvent
	failGet  error // returned by GetArtifact while set
	// deployments are the RecordDeployment requests received.
	deployments []*catalogv1.RecordDeploymentRequest
	failSearch  error // returned by SearchArtifacts
	// sboms are the attached SBOMs by name@version; failSBOM fails GetSBOM.
	sboms    map[string]*catalogv1.SBOM
	failSBOM error
	// sbomReads counts GetSBOM calls; noPresence makes GetArtifact leave
	// the SBOM presence unspecified, as a catalog from before the field.
	sbomReads  int
	noPresence bool
	// advisories are the stored OSV documents by id. ListFindings matches
	// them against the stored SBOM components with libs/advisory, as the
	// real catalog does; failAdvisories fails ListFindings and
	// GetAdvisory, truncate marks the findings truncated, and
	// lieFindings, if set, rewrites the findings served (a compromised
	// catalog).
	advisories     map[string][]byte
	failAdvisories error
	truncate       bool
	lieFindings    func([]*catalogv1.Finding) []*catalogv1.Finding
	// vex are the indices of the vex.added entries by artifact digest;
	// failVEX fails ListVex, truncateVEX marks it truncated, and
	// tamperVEX, if set, rewrites each leaf served.
	vex         map[string][]int64
	failVEX     error
	truncateVEX bool
	tamperVEX   func([]byte) []byte
	// witness, if set, is a cosignature/v1 signer key: checkpoints are
	// co-signed with it, and an artifact's entry is served with the
	// checkpoint and proof of when it was logged, as the real catalog
	// stores them (stackOptions.logHead).
	witness string
	// checkpointReads counts GetCheckpoint calls.
	checkpointReads int
}

type record struct {
	artifact *catalogv1.Artifact
	envelope []byte
	index    int64
	// tamper, if set, alters the evidence served, as a compromised
	// catalog or storage would.
	tamper func(*catalogv1.GetArtifactResponse)
	// checkpoint and proof are the entry's as logged (witness mode).
	checkpoint []byte
	proof      [][]byte
}

func newFakeCatalog(t testing.TB, origin, logSigner string) *fakeCatalog {
	t.Helper()
	s, err := note.NewSigner(logSigner)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeCatalog{origin: origin, logSigner: s, tree: testonly.New(rfc6962.DefaultHasher), records: map[string]*record{}}
}

func (c *fakeCatalog) policy(td spiffeid.TrustDomain) rpc.Policy {
	sd := catalogv1.CatalogService_ServiceDesc
	return rpc.Policy{
		rpc.Method(sd, "AppendEvent"):         {rpc.Under{TrustDomain: td, Prefix: "/service"}},
		rpc.Method(sd, "AppendEvents"):        {rpc.Under{TrustDomain: td, Prefix: "/service"}},
		rpc.Method(sd, "GetArtifact"):         {rpc.Member(td)},
		rpc.Method(sd, "RecordDeployment"):    {rpc.ID(spiffeid.RequireFromPath(td, "/service/gatekeeper"))},
		rpc.Method(sd, "SearchArtifacts"):     {rpc.Member(td)},
		rpc.Method(sd, "GetSBOM"):             {rpc.Member(td)},
		rpc.Method(sd, "GetInclusionProof"):   {rpc.Member(td)},
		rpc.Method(sd, "ListFindings"):        {rpc.Member(td)},
		rpc.Method(sd, "GetAdvisory"):         {rpc.Member(td)},
		rpc.Method(sd, "GetEntries"):          {rpc.Member(td)},
		rpc.Method(sd, "ListVex"):             {rpc.Member(td)},
		rpc.Method(sd, "GetCheckpoint"):       {rpc.Member(td)},
		rpc.Method(sd, "GetConsistencyProof"): {rpc.Member(td)},
	}
}

// cosigned returns the checkpoint of the tree at its current size, signed
// by the log and co-signed by the witness now. c.mu is held.
func (c *fakeCatalog) cosigned(t testing.TB) ([]byte, error) {
	cp, err := tlog.SignCheckpointWith(tlog.Checkpoint{Origin: c.origin, Size: c.tree.Size(), Hash: c.tree.Hash()}, c.logSigner)
	if err != nil {
		return nil, err
	}
	return tlog.CosignCheckpoint(cp, c.witness)
}

// servedCheckpoint is the tree's checkpoint as proofs are served with
// it: co-signed now in witness mode, else signed by the log's key only.
// c.mu is held.
func (c *fakeCatalog) servedCheckpoint() ([]byte, error) {
	if c.witness != "" {
		return c.cosigned(nil)
	}
	return tlog.SignCheckpointWith(tlog.Checkpoint{Origin: c.origin, Size: c.tree.Size(), Hash: c.tree.Hash()}, c.logSigner)
}

// GetCheckpoint serves the tree's checkpoint, co-signed now (witness
// mode only).
func (c *fakeCatalog) GetCheckpoint(context.Context, *catalogv1.GetCheckpointRequest) (*catalogv1.GetCheckpointResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkpointReads++
	if c.witness == "" {
		return nil, status.Error(codes.Unimplemented, "no witness")
	}
	cp, err := c.cosigned(nil)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &catalogv1.GetCheckpointResponse{Checkpoint: cp}, nil
}

// GetConsistencyProof proves the tree of first_size a prefix of the tree
// of second_size.
func (c *fakeCatalog) GetConsistencyProof(_ context.Context, req *catalogv1.GetConsistencyProofRequest) (*catalogv1.GetConsistencyProofResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	second := req.GetSecondSize()
	if second == 0 {
		second = c.tree.Size()
	}
	if req.GetFirstSize() > second || second > c.tree.Size() {
		return nil, status.Errorf(codes.InvalidArgument, "sizes %d → %d: the tree has %d entries", req.GetFirstSize(), second, c.tree.Size())
	}
	var proof [][]byte
	if req.GetFirstSize() != 0 && req.GetFirstSize() != second {
		var err error
		if proof, err = c.tree.ConsistencyProof(req.GetFirstSize(), second); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return &catalogv1.GetConsistencyProofResponse{FirstSize: req.GetFirstSize(), SecondSize: second, ConsistencyProof: proof}, nil
}

// GetEntries serves the leaves from start, at most page_size, with the
// tree's checkpoint co-signed now (witness mode only: without a witness
// there is no co-signed checkpoint to serve, and the re-evaluation, which
// proves the entries against it, fails closed); like the real catalog, a
// start at or past the tree's size is InvalidArgument.
func (c *fakeCatalog) GetEntries(_ context.Context, req *catalogv1.GetEntriesRequest) (*catalogv1.GetEntriesResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.GetStart() >= uint64(len(c.leaves)) {
		return nil, status.Errorf(codes.InvalidArgument, "start %d: the co-signed tree has %d entries", req.GetStart(), len(c.leaves))
	}
	end := min(uint64(len(c.leaves)), req.GetStart()+uint64(max(req.GetPageSize(), 1)))
	var cp []byte
	if c.witness != "" {
		var err error
		if cp, err = c.cosigned(nil); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return &catalogv1.GetEntriesResponse{Entries: c.leaves[req.GetStart():end], Checkpoint: cp}, nil
}

// importAdvisories stores docs and logs an advisories.imported entry by a
// security identity, as the catalog's ImportAdvisories does.
func (c *fakeCatalog) importAdvisories(t testing.TB, td spiffeid.TrustDomain, docs ...[]byte) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.advisories == nil {
		c.advisories = map[string][]byte{}
	}
	var ids []string
	for _, d := range docs {
		var v struct{ ID string }
		if err := json.Unmarshal(d, &v); err != nil {
			t.Fatal(err)
		}
		c.advisories[v.ID] = d
		ids = append(ids, v.ID)
	}
	details, _ := json.Marshal(map[string]any{"count": len(ids), "ids": ids})
	e := &tlog.Entry{Type: tlog.TypeAdvisoriesImported, Time: time.Now().UTC(), Actor: spiffeid.RequireFromPath(td, "/security/osv").String(), Details: details}
	leaf, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c.tree.AppendData(leaf)
	c.leaves = append(c.leaves, leaf)
	c.events = append(c.events, e)
}

// eventsOf returns the logged entries of type typ.
func (c *fakeCatalog) eventsOf(typ string) []*tlog.Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tlog.Entry
	for _, e := range c.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// SearchArtifacts serves the deployments of one name to one environment,
// from the RecordDeployment requests received, one deployment a page so
// that paging is exercised; failSearch fails it.
func (c *fakeCatalog) SearchArtifacts(_ context.Context, req *catalogv1.SearchArtifactsRequest) (*catalogv1.SearchArtifactsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failSearch != nil {
		return nil, c.failSearch
	}
	var match []*catalogv1.Deployment
	for _, d := range c.deployments {
		if d.GetName() == req.GetName() && d.GetEnvironment() == req.GetDeployedEnvironment() {
			match = append(match, &catalogv1.Deployment{Name: d.GetName(), Version: d.GetVersion(), Digest: d.GetDigest(), Environment: d.GetEnvironment()})
		}
	}
	i := 0
	if req.GetPageToken() != "" {
		i, _ = strconv.Atoi(req.GetPageToken())
	}
	if i >= len(match) {
		return &catalogv1.SearchArtifactsResponse{}, nil
	}
	resp := &catalogv1.SearchArtifactsResponse{Deployments: match[i : i+1]}
	if i+1 < len(match) {
		resp.NextPageToken = strconv.Itoa(i + 1)
	}
	return resp, nil
}

// RecordDeployment logs a deployment.recorded entry and keeps the request,
// checking only what the gatekeeper must send (the real catalog's checks
// are tested in the catalog).
func (c *fakeCatalog) RecordDeployment(ctx context.Context, req *catalogv1.RecordDeploymentRequest) (*catalogv1.RecordDeploymentResponse, error) {
	id, _ := rpc.CallerID(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failNext; err != nil {
		c.failNext = nil
		return nil, err
	}
	details, _ := json.Marshal(req)
	e := &tlog.Entry{Type: tlog.TypeDeploymentRecorded, Time: time.Now().UTC(), Actor: id.String(),
		Subject: tlog.Subject{Digest: req.GetDigest()}, Details: details}
	leaf, err := e.Marshal()
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c.tree.AppendData(leaf)
	c.leaves = append(c.leaves, leaf)
	c.events = append(c.events, e)
	c.deployments = append(c.deployments, req)
	return &catalogv1.RecordDeploymentResponse{Entry: &catalogv1.LogEntry{Index: int64(c.tree.Size() - 1), Leaf: leaf}}, nil
}

// add records a published artifact and logs it now.
func (c *fakeCatalog) add(t testing.TB, a *catalogv1.Artifact, envelope []byte) *record {
	t.Helper()
	return c.addEntry(t, a, envelope, tlog.TypeArtifactPublished, time.Now().UTC())
}

// addEntry records an artifact's envelope, replacing any earlier record,
// and logs it with an entry of type typ at time at, as the catalog does
// when it records a publication or a re-signature.
func (c *fakeCatalog) addEntry(t testing.TB, a *catalogv1.Artifact, envelope []byte, typ string, at time.Time) *record {
	t.Helper()
	sum := sha256.Sum256(envelope)
	leaf, err := tlog.Entry{
		Type: typ, Time: at, Actor: "spiffe://custody.test/service/publisher",
		Subject:        tlog.Subject{Name: a.GetName(), Version: a.GetVersion(), Digest: a.GetDigest()},
		EnvelopeSHA256: hex.EncodeToString(sum[:]),
	}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tree.AppendData(leaf)
	c.leaves = append(c.leaves, leaf)
	r := &record{artifact: a, envelope: envelope, index: int64(c.tree.Size() - 1)}
	if c.witness != "" {
		if r.checkpoint, err = c.cosigned(t); err != nil {
			t.Fatal(err)
		}
		if r.proof, err = c.tree.InclusionProof(uint64(r.index), c.tree.Size()); err != nil {
			t.Fatal(err)
		}
	}
	c.records[a.GetName()+"@"+a.GetVersion()] = r
	c.records[a.GetDigest()] = r
	return r
}

func (c *fakeCatalog) GetArtifact(_ context.Context, req *catalogv1.GetArtifactRequest) (*catalogv1.GetArtifactResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failGet != nil {
		return nil, c.failGet
	}
	key := req.GetDigest()
	if key == "" {
		key = req.GetName() + "@" + req.GetVersion()
	}
	r, ok := c.records[key]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "artifact %s not found", key)
	}
	size := c.tree.Size()
	proof, err := c.tree.InclusionProof(uint64(r.index), size)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	cp, err := tlog.SignCheckpointWith(tlog.Checkpoint{Origin: c.origin, Size: size, Hash: c.tree.Hash()}, c.logSigner)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if r.checkpoint != nil {
		proof, cp = r.proof, r.checkpoint
	}
	resp := &catalogv1.GetArtifactResponse{
		Artifact: proto.Clone(r.artifact).(*catalogv1.Artifact),
		Envelope: append([]byte(nil), r.envelope...),
		Entry:    &catalogv1.LogEntry{Index: r.index, Leaf: c.leaves[r.index], InclusionProof: proof, Checkpoint: cp},
	}
	if !c.noPresence {
		resp.Sbom = catalogv1.SBOMPresence_SBOM_PRESENCE_NONE
		if _, ok := c.sboms[r.artifact.GetName()+"@"+r.artifact.GetVersion()]; ok {
			resp.Sbom = catalogv1.SBOMPresence_SBOM_PRESENCE_ATTACHED
		}
	}
	if r.tamper != nil {
		r.tamper(resp)
	}
	return resp, nil
}

func (c *fakeCatalog) AppendEvent(ctx context.Context, req *catalogv1.AppendEventRequest) (*catalogv1.AppendEventResponse, error) {
	id, _ := rpc.CallerID(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failNext; err != nil {
		c.failNext = nil
		return nil, err
	}
	// A decision needs to be on the record, not proved, before it is
	// returned: waiting for a proof would add a checkpoint interval to every
	// admission.
	if req.GetWait() != catalogv1.AppendWait_APPEND_WAIT_SEQUENCED {
		return nil, status.Errorf(codes.InvalidArgument, "fake catalog: the gatekeeper waited for %v, want APPEND_WAIT_SEQUENCED", req.GetWait())
	}
	e := &tlog.Entry{Type: req.GetType(), Time: time.Now().UTC(), Actor: id.String(),
		Subject: tlog.Subject{Digest: req.GetSubjectDigest()}, Details: req.GetDetails()}
	leaf, err := e.Marshal()
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c.tree.AppendData(leaf)
	c.leaves = append(c.leaves, leaf)
	c.events = append(c.events, e)
	return &catalogv1.AppendEventResponse{Entry: &catalogv1.LogEntry{Index: int64(c.tree.Size() - 1), Leaf: leaf}}, nil
}

// AppendEvents appends each event as AppendEvent does, one result each.
func (c *fakeCatalog) AppendEvents(ctx context.Context, req *catalogv1.AppendEventsRequest) (*catalogv1.AppendEventsResponse, error) {
	out := &catalogv1.AppendEventsResponse{}
	for _, e := range req.GetEvents() {
		resp, err := c.AppendEvent(ctx, e)
		if err != nil {
			st := status.Convert(err)
			out.Results = append(out.Results, &catalogv1.AppendEventResult{Code: uint32(st.Code()), Message: st.Message()})
			continue
		}
		out.Results = append(out.Results, &catalogv1.AppendEventResult{Entry: resp.GetEntry()})
	}
	return out, nil
}

// attachSBOM logs an sbom.attached entry by the publisher for envelope and
// keeps the SBOM the catalog would serve: the artifact's name, the
// document and its components as listed.
func (c *fakeCatalog) attachSBOM(t testing.TB, a *catalogv1.Artifact, envelope, document []byte, format string, comps []*catalogv1.Component) *catalogv1.SBOM {
	t.Helper()
	sum := sha256.Sum256(envelope)
	details, err := json.Marshal(map[string]any{"name": a.GetName(), "version": a.GetVersion(), "digest": a.GetDigest(), "format": format,
		"document": digest.Of(document), "components": len(comps), "by": a.GetBuilderId(), "envelope_sha256": hex.EncodeToString(sum[:])})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := tlog.Entry{Type: tlog.TypeSBOMAttached, Time: time.Now().UTC(), Actor: "spiffe://custody.test/service/publisher",
		Subject: tlog.Subject{Digest: a.GetDigest()}, Details: details}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tree.AppendData(leaf)
	c.leaves = append(c.leaves, leaf)
	b := &catalogv1.SBOM{Name: a.GetName(), Version: a.GetVersion(), Digest: a.GetDigest(), Format: format, DocumentDigest: digest.Of(document),
		Components: comps, Envelope: envelope, LogIndex: int64(c.tree.Size() - 1), Document: document}
	if c.sboms == nil {
		c.sboms = map[string]*catalogv1.SBOM{}
	}
	c.sboms[a.GetName()+"@"+a.GetVersion()] = b
	return b
}

func (c *fakeCatalog) GetSBOM(_ context.Context, req *catalogv1.GetSBOMRequest) (*catalogv1.GetSBOMResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sbomReads++
	if c.failSBOM != nil {
		return nil, c.failSBOM
	}
	b, ok := c.sboms[req.GetName()+"@"+req.GetVersion()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%s@%s has no SBOM", req.GetName(), req.GetVersion())
	}
	b = proto.Clone(b).(*catalogv1.SBOM)
	if !req.GetIncludeDocument() {
		b.Document = nil
	}
	return &catalogv1.GetSBOMResponse{Sbom: b}, nil
}

func (c *fakeCatalog) ListFindings(_ context.Context, req *catalogv1.ListFindingsRequest) (*catalogv1.ListFindingsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failAdvisories != nil {
		return nil, c.failAdvisories
	}
	b, ok := c.sboms[req.GetName()+"@"+req.GetVersion()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%s@%s has no SBOM", req.GetName(), req.GetVersion())
	}
	var advs []*advisory.Advisory
	for _, doc := range c.advisories {
		a, err := advisory.Parse(doc)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		advs = append(advs, a)
	}
	resp := &catalogv1.ListFindingsResponse{Truncated: c.truncate}
	for _, m := range advisory.NewIndex(advs).MatchAll(verify.ComponentsFromProto(b.GetComponents())) {
		resp.Findings = append(resp.Findings, &catalogv1.Finding{Name: b.GetName(), Version: b.GetVersion(), Digest: b.GetDigest(),
			AdvisoryId: m.Advisory, Severity: m.Severity.String(), Reason: m.Reason, Uncertain: m.Uncertain,
			Component: &catalogv1.Component{Purl: m.Component.PURL, Name: m.Component.Name, Version: m.Component.Version, License: m.Component.License}})
	}
	if c.lieFindings != nil {
		resp.Findings = c.lieFindings(resp.Findings)
	}
	return resp, nil
}

func (c *fakeCatalog) GetAdvisory(_ context.Context, req *catalogv1.GetAdvisoryRequest) (*catalogv1.GetAdvisoryResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failAdvisories != nil {
		return nil, c.failAdvisories
	}
	doc, ok := c.advisories[req.GetId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no advisory %s", req.GetId())
	}
	return &catalogv1.GetAdvisoryResponse{Document: doc, Digest: digest.Of(doc)}, nil
}

func (c *fakeCatalog) GetInclusionProof(_ context.Context, req *catalogv1.GetInclusionProofRequest) (*catalogv1.GetInclusionProofResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	size := c.tree.Size()
	if req.GetIndex() >= size {
		return nil, status.Errorf(codes.NotFound, "no entry %d", req.GetIndex())
	}
	proof, err := c.tree.InclusionProof(req.GetIndex(), size)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	cp, err := c.servedCheckpoint()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &catalogv1.GetInclusionProofResponse{Leaf: c.leaves[req.GetIndex()], TreeSize: size, InclusionProof: proof, Checkpoint: cp}, nil
}

func (c *fakeCatalog) lastEvent() *tlog.Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.events) == 0 {
		return nil
	}
	return c.events[len(c.events)-1]
}

func (c *fakeCatalog) eventCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}

// fakeSigner serves trust roots and its keys' status, and signs decisions
// with its decision key.
type fakeSigner struct {
	signerv1.UnimplementedSignerServiceServer
	decision *signingKey

	mu sync.Mutex
	// roots are the trust-root envelopes served, in order; GetTrustRoot
	// returns those whose version is above after_version, as the signer
	// does (unless ignoreAfter, as a rolling-back signer might).
	roots       [][]byte
	ignoreAfter bool
	keys        []*signerv1.PublicKey
	rootCalls   int
	statements  [][]byte
}

func (s *fakeSigner) policy(td spiffeid.TrustDomain) rpc.Policy {
	sd := signerv1.SignerService_ServiceDesc
	return rpc.Policy{
		rpc.Method(sd, "SignDecision"):   {rpc.ID(spiffeid.RequireFromPath(td, "/service/gatekeeper"))},
		rpc.Method(sd, "ListPublicKeys"): {rpc.Member(td)},
		rpc.Method(sd, "GetTrustRoot"):   {rpc.Member(td)},
	}
}

// publish lists k in ListPublicKeys.
func (s *fakeSigner) publish(k *signerv1.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
}

// serveRoots replaces the trust roots served.
func (s *fakeSigner) serveRoots(roots ...[]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roots = roots
}

func (s *fakeSigner) ListPublicKeys(context.Context, *signerv1.ListPublicKeysRequest) (*signerv1.ListPublicKeysResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &signerv1.ListPublicKeysResponse{Keys: s.keys}, nil
}

func (s *fakeSigner) GetTrustRoot(_ context.Context, req *signerv1.GetTrustRootRequest) (*signerv1.GetTrustRootResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rootCalls++
	resp := &signerv1.GetTrustRootResponse{}
	for _, r := range s.roots {
		root, err := trustroot.Parse(r)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if s.ignoreAfter || root.Version > req.GetAfterVersion() {
			resp.Roots = append(resp.Roots, r)
		}
	}
	return resp, nil
}

func (s *fakeSigner) SignDecision(_ context.Context, req *signerv1.SignDecisionRequest) (*signerv1.SignDecisionResponse, error) {
	s.mu.Lock()
	s.statements = append(s.statements, req.GetStatement())
	s.mu.Unlock()
	env, err := s.decision.sign(req.GetStatement())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &signerv1.SignDecisionResponse{Envelope: env, KeyId: s.decision.id}, nil
}

func (s *fakeSigner) counts() (rootFetches, signs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rootCalls, len(s.statements)
}

// fakePublisher answers VerifyBlob from a table of outcomes by digest.
type fakePublisher struct {
	publisherv1.UnimplementedPublisherServiceServer

	mu    sync.Mutex
	blobs map[string]codes.Code
}

func (p *fakePublisher) policy(td spiffeid.TrustDomain) rpc.Policy {
	return rpc.Policy{
		rpc.Method(publisherv1.PublisherService_ServiceDesc, "VerifyBlob"): {rpc.ID(spiffeid.RequireFromPath(td, "/service/gatekeeper"))},
	}
}

func (p *fakePublisher) set(digest string, c codes.Code) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blobs[digest] = c
}

// hang is an outcome for fakePublisher.set: VerifyBlob never answers.
const hang = codes.Code(1000)

func (p *fakePublisher) VerifyBlob(ctx context.Context, req *publisherv1.VerifyBlobRequest) (*publisherv1.VerifyBlobResponse, error) {
	p.mu.Lock()
	c, ok := p.blobs[req.GetDigest()]
	p.mu.Unlock()
	switch {
	case c == hang:
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	case !ok:
		return nil, status.Errorf(codes.NotFound, "blob %s not found", req.GetDigest())
	case c == codes.OK:
		return &publisherv1.VerifyBlobResponse{Size: 4}, nil
	case c == codes.DataLoss:
		return nil, status.Errorf(codes.DataLoss, "blob %s: stored bytes hash to something else", req.GetDigest())
	default:
		return nil, status.Errorf(c, "publisher says %v", c)
	}
}

// addVEX logs a vex.added entry by actor about a holding document, as the
// catalog's AddVex does (without its checks, so that a test can log what
// the catalog would refuse), and returns its index.
func (c *fakeCatalog) addVEX(t testing.TB, a *catalogv1.Artifact, actor string, document []byte) int64 {
	t.Helper()
	details, err := json.Marshal(map[string]any{"name": a.GetName(), "version": a.GetVersion(), "digest": a.GetDigest(), "document": json.RawMessage(document)})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := tlog.Entry{Type: tlog.TypeVEXAdded, Time: time.Now().UTC(), Actor: actor,
		Subject: tlog.Subject{Digest: a.GetDigest()}, Details: details}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tree.AppendData(leaf)
	c.leaves = append(c.leaves, leaf)
	index := int64(c.tree.Size() - 1)
	if c.vex == nil {
		c.vex = map[string][]int64{}
	}
	c.vex[a.GetDigest()] = append(c.vex[a.GetDigest()], index)
	return index
}

// ListVex serves the vex.added entries about the artifact's digest, each
// proved against the current tree.
func (c *fakeCatalog) ListVex(_ context.Context, req *catalogv1.ListVexRequest) (*catalogv1.ListVexResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failVEX != nil {
		return nil, c.failVEX
	}
	r, ok := c.records[req.GetName()+"@"+req.GetVersion()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such artifact")
	}
	size := c.tree.Size()
	cp, err := c.servedCheckpoint()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp := &catalogv1.ListVexResponse{Truncated: c.truncateVEX}
	for _, i := range c.vex[r.artifact.GetDigest()] {
		proof, err := c.tree.InclusionProof(uint64(i), size)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		leaf := c.leaves[i]
		if c.tamperVEX != nil {
			leaf = c.tamperVEX(bytes.Clone(leaf))
		}
		resp.Entries = append(resp.Entries, &catalogv1.LogEntry{Index: i, Leaf: leaf, InclusionProof: proof, Checkpoint: cp})
	}
	return resp, nil
}

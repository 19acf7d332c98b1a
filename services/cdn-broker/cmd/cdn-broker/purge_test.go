package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/daemon"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/syncbuf"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purge/purgetest"
)

const (
	revoked = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	// issuedOnly was issued a CDN URL before the kill switch; nobody names
	// it in a PurgeDigests call.
	issuedOnly = "sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"

	cfAKID, cfSecret                       = "AKIDCUSTODYPURGE", "cf-purge-secret-for-tests"
	akClientToken, akClientSecret, akToken = "akab-client-token-test", "akamai-client-secret-test=", "akab-access-token-test"
	gcpToken                               = "ya29.custody-purge-test"
	saEmail                                = "purger@custody-prod.iam.gserviceaccount.com"
)

// vendors are the three loopback vendor APIs and what the broker's CDN
// configuration needs to reach them.
type vendors struct {
	cf      *purgetest.CloudFront
	compute *purgetest.Compute
	token   *purgetest.GoogleToken
	fast    *purgetest.FastPurge
	urls    struct{ cf, compute, token, fastHost string }
	caFile  string
	sa      *purgetest.ServiceAccount
}

func startVendors(t *testing.T, dir string) *vendors {
	t.Helper()
	sa, err := purgetest.NewServiceAccount(saEmail)
	if err != nil {
		t.Fatal(err)
	}
	v := &vendors{
		cf:      &purgetest.CloudFront{DistributionID: "EDFDVBD6EXAMPLE", AccessKeyID: cfAKID, SecretAccessKey: cfSecret},
		compute: &purgetest.Compute{Project: "custody-prod", URLMap: "custody-cdn", Token: gcpToken},
		fast:    &purgetest.FastPurge{ClientToken: akClientToken, ClientSecret: akClientSecret, AccessToken: akToken, Network: "staging"},
		sa:      sa,
	}
	cf := httptest.NewServer(v.cf)
	t.Cleanup(cf.Close)
	compute := httptest.NewServer(v.compute)
	t.Cleanup(compute.Close)
	tok := httptest.NewUnstartedServer(nil)
	tok.Start()
	t.Cleanup(tok.Close)
	v.token = &purgetest.GoogleToken{Account: &sa.Key.PublicKey, Email: saEmail, TokenURL: tok.URL + "/token",
		Scope: "https://www.googleapis.com/auth/compute", AccessToken: gcpToken}
	tok.Config.Handler = v.token
	fast := httptest.NewTLSServer(v.fast)
	t.Cleanup(fast.Close)
	v.urls.cf, v.urls.compute, v.urls.token, v.urls.fastHost = cf.URL, compute.URL+"/compute/v1/", tok.URL+"/token", strings.TrimPrefix(fast.URL, "https://")
	v.caFile = filepath.Join(dir, "akamai-ca.pem")
	writeTestFile(t, v.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fast.Certificate().Raw}))
	return v
}

func writeTestFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cdnConfig writes signing keys, purge credentials and the CDN
// configuration; wrong names the vendor whose credential is wrong.
func (v *vendors) cdnConfig(t *testing.T, dir, wrong string) string {
	t.Helper()
	w := func(name string, b []byte) string { return writeTestFile(t, filepath.Join(dir, name), b) }
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	gkey, akey := make([]byte, 16), make([]byte, 32)
	rand.Read(gkey)
	rand.Read(akey)
	cfSec, akSec, saJSON := cfSecret, akClientSecret, v.sa.JSON("custody-prod", v.urls.token)
	switch wrong {
	case "cloudfront":
		cfSec = "not-the-secret"
	case "akamai":
		akSec = "not-the-client-secret="
	case "cloud-cdn":
		other, err := purgetest.NewServiceAccount(saEmail)
		if err != nil {
			t.Fatal(err)
		}
		saJSON = other.JSON("custody-prod", v.urls.token)
	}
	cfg := fmt.Sprintf(`{"cdns": [
  {"name": "cf", "kind": "cloudfront", "base_url": "https://d111.cloudfront.net/cdn", "key": {"name": "K2JCJMDEHXQW5F", "file": %q},
   "purge": {"distribution_id": "EDFDVBD6EXAMPLE", "access_key_id": {"file": %q}, "secret_access_key": {"file": %q}, "endpoint": %q}},
  {"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://gcdn.example.com", "key": {"name": "gkey", "file": %q},
   "purge": {"project": "custody-prod", "url_map": "custody-cdn", "credentials": {"file": %q}, "endpoint": %q}},
  {"name": "ak", "kind": "akamai", "base_url": "https://dl.akamaized.example", "key": {"name": "ak1", "file": %q},
   "purge": {"host": %q, "client_token": {"file": %q}, "client_secret": {"file": %q}, "access_token": {"file": %q}, "network": "staging", "ca_file": %q}},
  {"name": "media", "kind": "media-cdn", "base_url": "https://media.example.com", "key": {"name": "mkey", "file": %q}}]}`,
		w("cf.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), w("cf-akid", []byte(cfAKID+"\n")), w("cf-secret", []byte(cfSec+"\n")), v.urls.cf,
		w("gcdn.key", []byte(base64.URLEncoding.EncodeToString(gkey))), w("sa.json", saJSON), v.urls.compute,
		w("ak.key", []byte(hex.EncodeToString(akey))), v.urls.fastHost, w("ak-ct", []byte(akClientToken)), w("ak-cs", []byte(akSec+"\n")), w("ak-at", []byte(akToken)), v.caFile,
		w("media.key", []byte(base64.URLEncoding.EncodeToString(make([]byte, 32)))))
	return w("cdns.json", []byte(cfg))
}

// syncBuffer is the output a test reads while it is written.
type syncBuffer = syncbuf.Buffer

// startBroker runs the real broker in-process with the CDN configuration
// and a purge queue in stateDir; signer, gatekeeper and catalog are
// addresses nothing listens on (purges do not need them: the purge events
// wait in the queue for the catalog).
func startBroker(t *testing.T, td *identitytest.TrustDomain, cdnConfig, stateDir string) (string, *syncBuffer) {
	t.Helper()
	return startBrokerWith(t, td, cdnConfig, stateDir, "")
}

// startBrokerWith is startBroker with the gatekeeper at gatekeeperAddr
// (empty: an address nothing listens on).
func startBrokerWith(t *testing.T, td *identitytest.TrustDomain, cdnConfig, stateDir, gatekeeperAddr string) (string, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	svid, err := td.CA.IssueSVID(td.ID("/service/cdn-broker"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, identity.SVIDFile), svid.CertPEM)
	writeTestFile(t, filepath.Join(dir, identity.SVIDKeyFile), svid.KeyPEM)
	writeTestFile(t, filepath.Join(dir, identity.BundleFile), td.CA.CertPEM())
	tokenKey, root := writeTokenKeyAndRoot(t, dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	if gatekeeperAddr == "" {
		gatekeeperAddr = dead
	}
	endpoints := filepath.Join(dir, "endpoints.json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stderr := &syncBuffer{}
	go func() {
		done <- run(ctx, []string{"--trust-domain", "custody.test", "--svid-dir", dir, "--endpoints-file", endpoints, "--metrics-listen", "",
			"--signer-addr", dead, "--gatekeeper-addr", gatekeeperAddr, "--catalog-addr", dead, "--state-dir", stateDir,
			"--token-private-key-file", tokenKey, "--trust-root", root, "--edge-url", "https://edge.example", "--cdn-config-file", cdnConfig}, func(string) string { return "" }, stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("broker did not stop")
		}
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var eps daemon.Endpoints
		if b, err := os.ReadFile(endpoints); err == nil && json.Unmarshal(b, &eps) == nil {
			return eps["grpc"], stderr
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoints file not written\n%s", stderr)
		}
	}
}

func writeTokenKey(t *testing.T, dir string) string {
	t.Helper()
	p, _ := writeTokenKeyAndRoot(t, dir)
	return p
}

// writeTokenKeyAndRoot writes a new edge token key to dir/token.pem and a
// trust root listing its public half to dir/root.json; it returns both
// paths.
func writeTokenKeyAndRoot(t *testing.T, dir string) (key, root string) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	c := trustroottest.New(t, 1)
	r := c.Root(1, 1, time.Now(), nil, nil)
	r.EdgeTokenKeys = []trustroot.EdgeTokenKey{trustroottest.EdgeTokenKey(t, pub, nil, nil)}
	return writeTestFile(t, filepath.Join(dir, "token.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		writeTestFile(t, filepath.Join(dir, "root.json"), c.Sign(t, r))
}

func brokerClient(t *testing.T, td *identitytest.TrustDomain, addr, as string) cdnbrokerv1.CdnBrokerServiceClient {
	t.Helper()
	conn, err := rpc.Dial(addr, spiffeid.RequireFromPath(td.TD, "/service/cdn-broker"), td.Source(t, as), telemetry.Discard("t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cdnbrokerv1.NewCdnBrokerServiceClient(conn)
}

// waitJobs polls GetPurgeStatus until ok accepts the jobs.
func waitJobs(t *testing.T, admin cdnbrokerv1.CdnBrokerServiceClient, stderr *syncBuffer, ok func([]*cdnbrokerv1.PurgeJob) bool) []*cdnbrokerv1.PurgeJob {
	t.Helper()
	var jobs []*cdnbrokerv1.PurgeJob
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := admin.GetPurgeStatus(t.Context(), &cdnbrokerv1.GetPurgeStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if jobs = resp.GetJobs(); ok(jobs) {
			return jobs
		}
	}
	t.Fatalf("purge jobs never got there: %v\n%s", jobs, stderr)
	return nil
}

func job(jobs []*cdnbrokerv1.PurgeJob, d, ref string) *cdnbrokerv1.PurgeJob {
	for _, j := range jobs {
		if j.GetDigest() == d && j.GetReference() == ref {
			return j
		}
	}
	return nil
}

func targetNames(j *cdnbrokerv1.PurgeJob) []string {
	var out []string
	for _, t := range j.GetTargets() {
		out = append(out, t.GetName())
	}
	slices.Sort(out)
	return out
}

var cdnTargetNames = []string{"cdn:ak", "cdn:cf", "cdn:gcdn"}

func blobPath(d string) string { return "/v1/blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }

// TestPurgesEveryConfiguredCDN: the real broker, started with a CDN
// configuration whose three purge sections point at loopback CloudFront,
// Compute Engine and Fast Purge APIs (each verifying SigV4, the OAuth
// bearer token from the service account's signed JWT, EdgeGrid), purges an
// artifact revocation on every one of them through the vendors' client
// libraries, exactly once with the digest's path, and confirms the job. A
// kill switch then also purges the digests issued CDN URLs on those CDNs.
func TestPurgesEveryConfiguredCDN(t *testing.T) {
	td := identitytest.New(t, "custody.test")
	dir := t.TempDir()
	v := startVendors(t, dir)
	stateDir := filepath.Join(dir, "state")
	os.Mkdir(stateDir, 0o700)
	writeTestFile(t, filepath.Join(stateDir, "issued-digests.json"),
		fmt.Appendf(nil, `{"version": 1, "digests": [{"digest": %q, "last_issued": %q}]}`, issuedOnly, time.Now().UTC().Format(time.RFC3339)))
	addr, stderr := startBroker(t, td, v.cdnConfig(t, dir, ""), stateDir)
	gk := brokerClient(t, td, addr, "/service/gatekeeper")
	admin := brokerClient(t, td, addr, "/admin/oncall")

	resp, err := gk.PurgeDigests(t.Context(), &cdnbrokerv1.PurgeDigestsRequest{Digests: []string{revoked}, Reason: "artifact-revoked", Reference: "rev-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetJobs()) != 1 || !slices.Equal(targetNames(resp.GetJobs()[0]), cdnTargetNames) {
		t.Fatalf("queued %v, want one job on %v", resp.GetJobs(), cdnTargetNames)
	}
	jobs := waitJobs(t, admin, stderr, func(js []*cdnbrokerv1.PurgeJob) bool { j := job(js, revoked, "rev-1"); return j != nil && j.GetDone() })
	for _, ts := range job(jobs, revoked, "rev-1").GetTargets() {
		if !ts.GetConfirmed() || ts.GetAttempts() != 1 {
			t.Errorf("target %v", ts)
		}
	}
	checkVendors(t, v, []string{revoked}, []string{"rev-1"})

	// The kill switch: the named digest and the one only the issued
	// record knows, on the CDN targets.
	if _, err := gk.PurgeDigests(t.Context(), &cdnbrokerv1.PurgeDigestsRequest{Digests: []string{revoked}, Reason: "kill-switch", Reference: "ks-1"}); err != nil {
		t.Fatal(err)
	}
	jobs = waitJobs(t, admin, stderr, func(js []*cdnbrokerv1.PurgeJob) bool {
		a, b := job(js, revoked, "ks-1"), job(js, issuedOnly, "ks-1")
		return a != nil && b != nil && a.GetDone() && b.GetDone()
	})
	if got := targetNames(job(jobs, issuedOnly, "ks-1")); !slices.Equal(got, cdnTargetNames) {
		t.Errorf("issued digest purged on %v, want %v", got, cdnTargetNames)
	}
	if strings.Contains(stderr.String(), "no CDN purge target is configured") {
		t.Error("the kill switch did not find the CDN purge targets")
	}
	checkVendors(t, v, []string{revoked, revoked, issuedOnly}, []string{"rev-1", "ks-1", "ks-1"})

	log := stderr.String()
	if !strings.Contains(log, `"targets":["cdn:cf","cdn:gcdn","cdn:ak"]`) || !strings.Contains(log, `"cdns":["media"]`) {
		t.Errorf("start-up log does not name the purged and unpurged CDNs:\n%s", log)
	}
	for _, secret := range []string{cfSecret, akClientSecret, akToken, akClientToken, gcpToken, "PRIVATE KEY"} {
		if strings.Contains(log, secret) {
			t.Errorf("the broker logged a credential %q", secret)
		}
	}
}

// checkVendors asserts each vendor accepted exactly one purge per digest
// of ds, in order, with its reference where the vendor carries one.
func checkVendors(t *testing.T, v *vendors, ds, refs []string) {
	t.Helper()
	inv := v.cf.Invalidations()
	rules := v.compute.Rules()
	objs := v.fast.Objects()
	if len(inv) != len(ds) || len(rules) != len(ds) || len(objs) != len(ds) {
		t.Fatalf("CloudFront %+v, Cloud CDN %+v, Akamai %v: want %d each (refused: %v %v %v %v)", inv, rules, objs, len(ds),
			v.cf.Problems(), v.compute.Problems(), v.token.Problems(), v.fast.Problems())
	}
	// Attempts run concurrently: compare as sets.
	var wantCF, gotCF, wantG, gotG, wantA, gotA []string
	for i, d := range ds {
		wantCF = append(wantCF, refs[i]+" /cdn"+blobPath(d))
		wantG = append(wantG, "gcdn.example.com "+blobPath(d))
		wantA = append(wantA, "https://dl.akamaized.example"+blobPath(d))
		gotCF = append(gotCF, inv[i].CallerReference+" "+strings.Join(inv[i].Paths, ","))
		gotG = append(gotG, rules[i].Host+" "+rules[i].Path)
		gotA = append(gotA, strings.Join(objs[i], ","))
	}
	for _, s := range [][]string{wantCF, gotCF, wantG, gotG, wantA, gotA} {
		slices.Sort(s)
	}
	if !slices.Equal(gotCF, wantCF) || !slices.Equal(gotG, wantG) || !slices.Equal(gotA, wantA) {
		t.Errorf("CloudFront %v want %v\nCloud CDN %v want %v\nAkamai %v want %v", gotCF, wantCF, gotG, wantG, gotA, wantA)
	}
	if n := len(v.cf.Problems()) + len(v.compute.Problems()) + len(v.token.Problems()) + len(v.fast.Problems()); n != 0 {
		t.Errorf("%d refused requests: %v %v %v %v", n, v.cf.Problems(), v.compute.Problems(), v.token.Problems(), v.fast.Problems())
	}
	if v.token.Issued() != 1 {
		t.Errorf("%d OAuth tokens issued, want 1 (cached by the token source)", v.token.Issued())
	}
}

// TestWrongCredentialsAtOneCDN: one vendor refuses the broker's
// credentials; its target stays pending with the vendor named in the
// error, the other CDNs confirm, and the refused vendor recorded nothing.
func TestWrongCredentialsAtOneCDN(t *testing.T) {
	td := identitytest.New(t, "custody.test")
	for _, tc := range []struct{ wrong, target, want string }{
		{"cloudfront", "cdn:cf", "CloudFront invalidation"},
		{"cloud-cdn", "cdn:gcdn", "Cloud CDN invalidation"},
		{"akamai", "cdn:ak", "Akamai Fast Purge"},
	} {
		t.Run(tc.wrong, func(t *testing.T) {
			dir := t.TempDir()
			v := startVendors(t, dir)
			addr, stderr := startBroker(t, td, v.cdnConfig(t, dir, tc.wrong), filepath.Join(dir, "state"))
			gk := brokerClient(t, td, addr, "/service/gatekeeper")
			admin := brokerClient(t, td, addr, "/admin/oncall")
			if _, err := gk.PurgeDigests(t.Context(), &cdnbrokerv1.PurgeDigestsRequest{Digests: []string{revoked}, Reason: "artifact-revoked", Reference: "rev-9"}); err != nil {
				t.Fatal(err)
			}
			jobs := waitJobs(t, admin, stderr, func(js []*cdnbrokerv1.PurgeJob) bool {
				j := job(js, revoked, "rev-9")
				if j == nil {
					return false
				}
				for _, ts := range j.GetTargets() {
					if ts.GetName() == tc.target && ts.GetLastError() == "" || ts.GetName() != tc.target && !ts.GetConfirmed() {
						return false
					}
				}
				return true
			})
			j := job(jobs, revoked, "rev-9")
			if j.GetDone() {
				t.Fatal("job done although one CDN refused")
			}
			for _, ts := range j.GetTargets() {
				if ts.GetName() != tc.target {
					continue
				}
				if ts.GetConfirmed() || !strings.HasPrefix(ts.GetLastError(), tc.target+": "+tc.want) || ts.GetNextAttemptAt() == nil {
					t.Errorf("refused target %v, want pending with %q", ts, tc.target+": "+tc.want)
				}
				for _, secret := range []string{cfSecret, akClientSecret, "not-the-"} {
					if strings.Contains(ts.GetLastError(), secret) {
						t.Errorf("error shows a credential: %s", ts.GetLastError())
					}
				}
			}
			accepted := map[string]int{"cloudfront": len(v.cf.Invalidations()), "cloud-cdn": len(v.compute.Rules()), "akamai": len(v.fast.Objects())}
			refused := map[string]int{"cloudfront": len(v.cf.Problems()), "cloud-cdn": len(v.token.Problems()), "akamai": len(v.fast.Problems())}
			for vendor, n := range accepted {
				want := 1
				if vendor == tc.wrong {
					want = 0
					if refused[vendor] == 0 {
						t.Errorf("%s refused nothing", vendor)
					}
				}
				if n != want {
					t.Errorf("%s accepted %d purges, want %d", vendor, n, want)
				}
			}
		})
	}
}

// killedGatekeeper serves a stop state whose kill switch is on at epoch.
type killedGatekeeper struct {
	gatekeeperv1.UnimplementedGatekeeperServiceServer
	epoch int64
}

func (g *killedGatekeeper) GetStopState(context.Context, *gatekeeperv1.GetStopStateRequest) (*gatekeeperv1.GetStopStateResponse, error) {
	return &gatekeeperv1.GetStopStateResponse{State: &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{
		Active: true, Epoch: g.epoch, EpochTime: timestamppb.New(time.Now().Add(-time.Minute)), Reason: "test"}}}, nil
}

// TestKillSwitchSeenByTheBrokerPurgesTheCDNs: the kill switch is on and the
// gatekeeper never calls PurgeDigests (nothing was deployed); the broker
// sees the switch in the stop state it polls and purges, on every
// configured CDN, the digests it issued CDN URLs for, under the
// gatekeeper's reference.
func TestKillSwitchSeenByTheBrokerPurgesTheCDNs(t *testing.T) {
	td := identitytest.New(t, "custody.test")
	dir := t.TempDir()
	v := startVendors(t, dir)
	stateDir := filepath.Join(dir, "state")
	os.Mkdir(stateDir, 0o700)
	writeTestFile(t, filepath.Join(stateDir, "issued-digests.json"),
		fmt.Appendf(nil, `{"version": 1, "digests": [{"digest": %q, "last_issued": %q}]}`, issuedOnly, time.Now().UTC().Format(time.RFC3339)))
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, "/service/gatekeeper"), TrustDomain: td.TD,
		Policy: rpc.Policy{rpc.Method(gatekeeperv1.GatekeeperService_ServiceDesc, "GetStopState"): {rpc.Member(td.TD)}},
		Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("gatekeeper")})
	gatekeeperv1.RegisterGatekeeperServiceServer(srv, &killedGatekeeper{epoch: 9})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	addr, stderr := startBrokerWith(t, td, v.cdnConfig(t, dir, ""), stateDir, l.Addr().String())
	admin := brokerClient(t, td, addr, "/admin/oncall")
	ref := "kill-switch-9"
	jobs := waitJobs(t, admin, stderr, func(js []*cdnbrokerv1.PurgeJob) bool { j := job(js, issuedOnly, ref); return j != nil && j.GetDone() })
	if j := job(jobs, issuedOnly, ref); !slices.Equal(targetNames(j), cdnTargetNames) {
		t.Fatalf("job %v, want one on %v", j, cdnTargetNames)
	}
	checkVendors(t, v, []string{issuedOnly}, []string{ref})
}

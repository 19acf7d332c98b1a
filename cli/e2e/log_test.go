package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"github.com/transparency-dev/tessera/client"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

// TestLogOverHTTPS checks the dev stack's log from outside: the catalog's
// HTTPS address is in stack.json, its co-signed checkpoint verifies with
// the trust root's key, the entry bundles fetched over HTTPS rebuild the
// checkpoint's root, and custody log verify keeps the checkpoint it saw and
// proves the next one consistent with it.
func TestLogOverHTTPS(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	l := devstack.Layout{Dir: s.dir}
	s.mustCustody("publish", randomFile(t, work, "app", 4<<10), "--name", "app", "--version", "1", "--channel", "staging")

	addr := s.info.Services["catalog"]["https"]
	if addr == "" {
		t.Fatalf("stack.json records no https address for the catalog: %+v", s.info.Services["catalog"])
	}
	ca, err := os.ReadFile(l.WebCA())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	u, _ := url.Parse("https://" + addr + "/")
	f, err := client.NewHTTPFetcher(u, hc)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := f.ReadCheckpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile(l.TrustRoot())
	if err != nil {
		t.Fatal(err)
	}
	root, err := trustroot.Parse(env)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := root.LogVerifier(devstack.LogOrigin)
	if !ok || !strings.HasPrefix(key, devstack.CosignerName+"+") {
		t.Fatalf("trust root log key for %s = %q, want the signer's cosignature key", devstack.LogOrigin, key)
	}
	cp, err := tlog.OpenCosigned(raw, devstack.LogOrigin, key)
	if err != nil {
		t.Fatalf("served checkpoint: %v", err)
	}
	if cp.Size == 0 || cp.CosignedAt.IsZero() {
		t.Fatalf("served checkpoint = %+v, want entries and a cosignature time", cp)
	}
	tree := testonly.New(rfc6962.DefaultHasher)
	for i := uint64(0); i*256 < cp.Size; i++ {
		b, err := client.GetEntryBundle(t.Context(), f.ReadEntryBundle, i, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		tree.AppendData(b.Entries...)
	}
	if string(tree.Hash()) != string(cp.Hash) {
		t.Fatal("the entry bundles served over HTTPS do not rebuild the co-signed checkpoint's root")
	}

	report := func(args ...string) map[string]any {
		t.Helper()
		var rep map[string]any
		out := s.mustCustody(append([]string{"log", "verify", "--json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("log verify --json: %v\n%s", err, out)
		}
		return rep
	}
	// In dev, log verify reads the catalog's HTTPS tiles: the checkpoint
	// and the consistency proof come from the tiles alone.
	tiles := "https://" + addr + "/"
	if rep := report(); rep["status"] != "first-use" || rep["source"] != tiles {
		t.Fatalf("first log verify = %v, want first-use from %s", rep, tiles)
	}
	for i := range 3 {
		s.mustCustody("publish", randomFile(t, work, fmt.Sprint("app-more-", i), 4<<10), "--name", "app", "--version", fmt.Sprint(2+i), "--channel", "staging")
	}
	if rep := report("--tiles", tiles, "--max-age", "10m"); rep["status"] != "consistent" || rep["source"] != tiles {
		t.Fatalf("log verify --tiles after three more entries = %v", rep)
	}
	s.mustCustody("publish", randomFile(t, work, "app-grpc", 4<<10), "--name", "app", "--version", "9", "--channel", "staging")
	if rep := report("--grpc"); rep["status"] != "consistent" || rep["source"] != "grpc" {
		t.Fatalf("log verify --grpc = %v", rep)
	}
	// The tiles and the gRPC API agree: the tiles verify the state the
	// gRPC check saved.
	if rep := report(); rep["status"] != "consistent" {
		t.Fatalf("log verify over the tiles after --grpc = %v", rep)
	}
	// A co-signed checkpoint older than --max-age is refused. Tessera
	// publishes its own checkpoint of the same tree up to a
	// CheckpointInterval after the last append, and the catalog has that
	// one co-signed too, so the last co-signature is not known from here:
	// once the log is idle, it must be refused within a few seconds.
	deadline := time.Now().Add(15 * time.Second)
	for {
		time.Sleep(500 * time.Millisecond)
		out, code := s.custody("log", "verify", "--max-age", "1s")
		if code != 0 {
			if !strings.Contains(out, "checkpoint too old") {
				t.Fatalf("log verify --max-age 1s on an idle log: exit %d, not for its age\n%s", code, out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log verify --max-age 1s on a log idle for 15 s still passes:\n%s", out)
		}
	}
}

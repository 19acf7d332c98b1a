package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
)

// syncBuffer is a bytes.Buffer safe to write from run's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setup is a data directory with the catalog's SVID files and log key.
type setup struct {
	td        *identitytest.TrustDomain
	dir       string
	vkey      string
	endpoints string
	args      []string
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	td := identitytest.New(t, "custody.test")
	dir := t.TempDir()
	svidDir := filepath.Join(dir, "svid")
	if err := os.MkdirAll(svidDir, 0o700); err != nil {
		t.Fatal(err)
	}
	issued, err := td.CA.IssueSVID(td.ID("/service/catalog"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		filepath.Join(svidDir, identity.SVIDFile):    issued.CertPEM,
		filepath.Join(svidDir, identity.SVIDKeyFile): issued.KeyPEM,
		filepath.Join(svidDir, identity.BundleFile):  td.CA.CertPEM(),
		filepath.Join(dir, "log.key"):                []byte(skey + "\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	endpoints := filepath.Join(dir, "run", "catalog.json")
	if err := os.MkdirAll(filepath.Dir(endpoints), 0o700); err != nil {
		t.Fatal(err)
	}
	return &setup{td: td, dir: dir, vkey: vkey, endpoints: endpoints, args: []string{
		"--trust-domain", "custody.test", "--svid-dir", svidDir, "--endpoints-file", endpoints,
		"--data-dir", filepath.Join(dir, "data"), "--log-private-key-file", filepath.Join(dir, "log.key"),
	}}
}

// waitEndpoints waits for the endpoints file and returns the gRPC address;
// it gives up when failed returns an error.
func (s *setup) waitEndpoints(t *testing.T, failed func() error, log func() string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var eps map[string]string
		b, err := os.ReadFile(s.endpoints)
		if err == nil && json.Unmarshal(b, &eps) == nil && eps["grpc"] != "" {
			return eps["grpc"]
		}
		if err := failed(); err != nil {
			t.Fatalf("catalog stopped early: %v\n%s", err, log())
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoints file not written; log:\n%s", log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRun(t *testing.T) {
	s := newSetup(t)
	td, dir, vkey, args := s.td, s.dir, s.vkey, s.args
	// The environment is read too; flags win over it.
	env := map[string]string{"CUSTODY_DATA_DIR": "/nonexistent", "CUSTODY_LOG_LEVEL": "debug"}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(k string) string { return env[k] }, &stderr) }()

	addr := s.waitEndpoints(t, func() error {
		select {
		case err := <-done:
			return fmt.Errorf("run returned %v", err)
		default:
			return nil
		}
	}, stderr.String)

	conn, err := rpc.Dial(addr, td.ID("/service/catalog"), td.Source(t, "/auditor/audit"), telemetry.Discard("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := catalogv1.NewCatalogServiceClient(conn).GetCheckpoint(ctx, &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatalf("GetCheckpoint: %v", err)
	}
	cp, err := tlog.OpenCheckpoint(resp.GetCheckpoint(), vkey)
	if err != nil {
		t.Fatalf("checkpoint does not verify with the log key: %v", err)
	}
	if cp.Origin != "custody.test/log" || cp.Size != 0 {
		t.Errorf("checkpoint = %+v, want the empty log custody.test/log", cp)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "catalog.db")); err != nil {
		t.Errorf("database not in --data-dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "log", "checkpoint")); err != nil {
		t.Errorf("log not under --data-dir/log: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("run did not stop; log:\n%s", stderr.String())
	}
	for _, want := range []string{`"msg":"transparency log open"`, `"msg":"stopped"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, stderr.String())
		}
	}
}

func TestRunReportsEveryConfigProblem(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.key")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"nothing", nil, []string{"--trust-domain", "no identity", "--data-dir", "--log-private-key-file is required"}},
		{"bad key", []string{"--trust-domain", "custody.test", "--svid-dir", "x", "--data-dir", "d", "--log-private-key-file", bad}, []string{"not a note signer key"}},
		{"missing key file", []string{"--trust-domain", "custody.test", "--svid-dir", "x", "--data-dir", "d", "--log-private-key-file", bad + ".missing"}, []string{"--log-private-key-file"}},
		{"unknown flag", []string{"--log-public-key-file", "x"}, []string{"log-public-key-file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr syncBuffer
			err := run(t.Context(), tt.args, func(string) string { return "" }, &stderr)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

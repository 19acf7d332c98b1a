package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/translog/mytest"
)

// TestRunOnMySQL runs the catalog with --log-mysql-dsn-file against a
// private MariaDB: an event is appended and covered by a co-signed
// checkpoint, and nothing of the log is written to --data-dir.
func TestRunOnMySQL(t *testing.T) {
	dsn := mytest.Database(t)
	s := newSetup(t)
	dsnFile := filepath.Join(s.dir, "mysql.dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append(s.args, "--log-mysql-dsn-file", dsnFile), func(string) string { return "" }, &stderr)
	}()
	addr := s.waitEndpoints(t, func() error {
		select {
		case err := <-done:
			return fmt.Errorf("run returned %v", err)
		default:
			return nil
		}
	}, stderr.String)
	conn, err := rpc.Dial(addr, s.td.ID("/service/catalog"), s.td.Source(t, "/service/gatekeeper"), telemetry.Discard("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := catalogv1.NewCatalogServiceClient(conn)
	resp, err := c.AppendEvent(ctx, &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided, Details: []byte(`{}`)})
	if err != nil {
		t.Fatalf("AppendEvent: %v\n%s", err, stderr.String())
	}
	cpResp, err := c.GetCheckpoint(ctx, &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tlog.OpenCosigned(cpResp.GetCheckpoint(), "custody.test/log", s.cosigner.VerifierKey())
	if err != nil || cp.Size != 1 || resp.GetEntry().GetIndex() != 0 {
		t.Fatalf("checkpoint %+v, %v; entry %v: want a co-signed checkpoint of the one event", cp, err, resp.GetEntry())
	}
	if _, err := os.Stat(filepath.Join(s.dir, "data", "log")); !os.IsNotExist(err) {
		t.Errorf("a POSIX log appeared in --data-dir with --log-mysql-dsn-file: %v", err)
	}
	if strings.Contains(stderr.String(), dsn) {
		t.Error("the catalog logged the MySQL DSN, which holds a password")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop")
	}
}

// TestLogDriverConfig: a DSN file that is missing, empty or of several
// lines, or the HTTPS tiles (served from the POSIX directory) with MySQL,
// are refused before anything starts; the DSN is never quoted.
func TestLogDriverConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "custody:s3cret@tcp(127.0.0.1:3306)/custody\n")
	for _, tt := range []struct {
		name string
		cfg  config
		want string
	}{
		{"missing", config{LogMySQLDSNFile: filepath.Join(dir, "nope")}, "--log-mysql-dsn-file"},
		{"empty", config{LogMySQLDSNFile: write("empty", "\n")}, "want one line"},
		{"two lines", config{LogMySQLDSNFile: write("two", "a@tcp(h:1)/d\nb@tcp(h:1)/d\n")}, "want one line"},
		{"with https", config{LogMySQLDSNFile: good, HTTPSListen: "127.0.0.1:0"}, "--https-listen"},
	} {
		err := tt.cfg.validateLogDriver()
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v, want an error mentioning %q and no password", tt.name, err, tt.want)
		}
	}
	if err := (&config{LogMySQLDSNFile: good}).validateLogDriver(); err != nil {
		t.Errorf("good DSN file: %v", err)
	}
	if err := (&config{}).validateLogDriver(); err != nil {
		t.Errorf("no MySQL: %v", err)
	}
}

package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/custody-dev/custody/libs/daemon"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
)

// Stack describes a running dev stack; it is written to stack.json.
type Stack struct {
	TrustDomain   string                      `json:"trust_domain"`
	Services      map[string]daemon.Endpoints `json:"services"`
	PIDs          map[string]int              `json:"pids"`
	SupervisorPID int                         `json:"supervisor_pid"`
}

// ReadStack reads stack.json of a running stack.
func ReadStack(l Layout) (*Stack, error) {
	b, err := os.ReadFile(l.StackFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no dev stack is running in %s: start one with `custody dev up --dir %s`", l.Dir, l.Dir)
	}
	if err != nil {
		return nil, err
	}
	var s Stack
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read %s: %w", l.StackFile(), err)
	}
	return &s, nil
}

// ServerID is the SPIFFE ID a client expects of a stack service.
func ServerID(td spiffeid.TrustDomain, service string) spiffeid.ID {
	for _, s := range Services {
		if s.Name == service {
			return spiffeid.RequireFromPath(td, s.IDPath)
		}
	}
	return spiffeid.RequireFromPath(td, "/service/"+service)
}

type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan error
	started time.Time
}

// Options configures Up.
type Options struct {
	// BinDir holds the service binaries; empty means next to the running
	// executable, then PATH.
	BinDir string
	Out    io.Writer
}

// Up mints the directory, starts every service in order, waits until each
// is healthy, writes trust.json and stack.json, and supervises until ctx is
// done: a service that exits is restarted on the addresses it had, with
// backoff (see supervise). It then stops every service in reverse order.
func Up(ctx context.Context, l Layout, opts Options) error {
	if s, err := ReadStack(l); err == nil && alive(s.SupervisorPID) {
		return fmt.Errorf("a dev stack is already running in %s (pid %d): stop it with `custody dev down --dir %s`", l.Dir, s.SupervisorPID, l.Dir)
	}
	os.Remove(l.StackFile())
	if err := Mint(l); err != nil {
		return err
	}
	if l.HSM {
		if err := mintSoftHSM(l); err != nil {
			return err
		}
	}
	td := spiffeid.RequireTrustDomainFromString(TrustDomain)
	admin, err := identity.OpenFiles(l.IdentityDir("admin"), td, nil)
	if err != nil {
		return err
	}
	tel := telemetry.Discard("custody")
	stack := &Stack{TrustDomain: TrustDomain, Services: map[string]daemon.Endpoints{}, PIDs: map[string]int{}, SupervisorPID: os.Getpid()}
	var procs []*proc
	defer func() { stopAll(procs, opts.Out) }()

	// The signer logs its events in the catalog and the catalog has the
	// signer co-sign its checkpoints: each must know the other's address
	// before either starts. The publisher asks the broker (started after
	// it) to purge what retention destroys.
	var planned map[string]string
	var exited chan *proc
	for attempt := 1; ; attempt++ {
		planned, err = reservePorts("signer", "catalog", "cdn-broker")
		if err != nil {
			return err
		}
		exited = make(chan *proc, len(Services))
		procs, err = startServices(ctx, l, opts, stack, planned, exited, admin, tel, td)
		if err == nil {
			break
		}
		// Another process took a planned port between its pick and the
		// service's bind: stop what started and pick again.
		if attempt < 3 && errors.Is(err, errAddrInUse) {
			fmt.Fprintln(opts.Out, "  another process took a planned port; picking new ports")
			stopAll(procs, opts.Out)
			procs = nil
			stack.Services, stack.PIDs = map[string]daemon.Endpoints{}, map[string]int{}
			continue
		}
		return err
	}
	b, _ := json.MarshalIndent(stack, "", "  ")
	if err := daemon.WriteFileAtomic(l.StackFile(), b, 0o644); err != nil {
		return err
	}
	defer os.Remove(l.StackFile())
	printNext(opts.Out, l, stack)

	sv := &supervisor{l: l, out: opts.Out, stack: stack, planned: planned, procs: procs, exited: exited, admin: admin, tel: tel, td: td}
	sv.run(ctx)
	fmt.Fprintln(opts.Out, "stopping the dev stack")
	return nil
}

// errAddrInUse marks a start that failed because a service could not bind
// its planned port.
var errAddrInUse = errors.New("address already in use")

// startServices starts every service in order on the planned addresses and
// waits until each is healthy. It returns what it started, also on error,
// for the caller to stop.
func startServices(ctx context.Context, l Layout, opts Options, stack *Stack, planned map[string]string, exited chan *proc, admin identity.Source, tel *telemetry.Telemetry, td spiffeid.TrustDomain) ([]*proc, error) {
	var procs []*proc
	for _, s := range Services {
		bin, err := findBinary(opts.BinDir, Binary(s.Name))
		if err != nil {
			return procs, err
		}
		if err := os.MkdirAll(l.DataDir(s.Name), 0o700); err != nil {
			return procs, err
		}
		p, err := startProc(l, s.Name, bin, args(l, s.Name, stack, planned), exited)
		if err != nil {
			return procs, err
		}
		procs = append(procs, p)
		stack.PIDs[s.Name] = p.cmd.Process.Pid

		eps, err := waitEndpoints(ctx, l, p)
		if err != nil {
			return procs, err
		}
		stack.Services[s.Name] = eps
		if err := waitHealthy(ctx, l, s.Name, eps["grpc"], ServerID(td, s.Name), admin, tel, p); err != nil {
			return procs, err
		}
		if s.Name == "signer" {
			if err := pinTrustRoot(ctx, l, eps["grpc"], td, admin, tel); err != nil {
				return procs, err
			}
		}
		fmt.Fprintf(opts.Out, "  %-11s grpc %s  metrics http://%s/metrics%s\n", s.Name, eps["grpc"], eps["metrics"], httpsNote(eps))
	}
	return procs, nil
}

// startProc starts one service with its output appended to its log file.
// When it exits, its Wait error goes to p.done and p to exited.
func startProc(l Layout, name, bin string, argv []string, exited chan<- *proc) (*proc, error) {
	os.Remove(l.EndpointsFile(name))
	logf, err := os.OpenFile(l.LogFile(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = cleanEnv()
	if l.HSM && name == "signer" {
		cmd.Env = append(cmd.Env, "SOFTHSM2_CONF="+l.path("keys", "softhsm", "softhsm2.conf"))
	}
	// Own process group: a terminal's Ctrl-C reaches only the
	// supervisor, which stops services in reverse order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1), started: time.Now()}
	go func() { p.done <- cmd.Wait(); exited <- p }()
	return p, nil
}

func httpsNote(eps daemon.Endpoints) string {
	if eps["https"] == "" {
		return ""
	}
	return "  https https://" + eps["https"]
}

func args(l Layout, name string, s *Stack, planned map[string]string) []string {
	a := []string{
		"--trust-domain", TrustDomain, "--svid-dir", l.SVIDDir(name),
		"--endpoints-file", l.EndpointsFile(name), "--trace-file", l.TraceFile(name),
	}
	if addr, ok := planned[name]; ok {
		a = append(a, "--listen", addr)
	}
	addr := func(svc string) string {
		if a, ok := planned[svc]; ok {
			return a
		}
		return s.Services[svc]["grpc"]
	}
	switch name {
	case "signer":
		if l.HSM {
			a = append(a, "--dev", "--key-backend", "pkcs11", "--pkcs11-module", SoftHSMModule, "--pkcs11-token-label", hsmLabel,
				"--pkcs11-pin-file", l.path("keys", "softhsm", "pin"), "--wrapping-key", "publisher")
		} else {
			a = append(a, "--dev", "--keystore", l.path("keys", "keystore.json"), "--keystore-passphrase-file", l.path("keys", "keystore.pass"))
		}
		a = append(a, "--state-dir", l.DataDir(name), "--catalog-addr", addr("catalog"), "--broker-addr", addr("cdn-broker"), "--log-origin", LogOrigin, "--cosigner-name", CosignerName,
			"--channel-key", "prod=artifact-prod", "--quorum", "prod=2", "--backup-key", "backup",
			"--edge-token-public-key-file", l.path("keys", "token.pub.pem"),
			"--dev-root-threshold", fmt.Sprint(RootThreshold))
		for _, k := range l.RootKeys() {
			a = append(a, "--dev-root-key", k)
		}
	case "catalog":
		signer := addr("signer")
		if l.CatalogSignerAddr != "" {
			signer = l.CatalogSignerAddr
		}
		a = append(a, "--data-dir", l.DataDir(name), "--log-private-key-file", l.path("keys", "log.key"), "--signer-addr", signer,
			"--https-listen", "127.0.0.1:0", "--tls-cert-file", l.path("web", "catalog.pem"), "--tls-key-file", l.path("web", "catalog_key.pem"))
		if l.CosignRefresh > 0 {
			a = append(a, "--cosign-refresh", l.CosignRefresh.String())
		}
	case "publisher":
		// Blobs are encrypted at rest; the dev stack wraps their keys with
		// the soft KEK, kept with the other dev keys, not beside the blobs.
		a = append(a, "--data-dir", l.DataDir(name), "--signer-addr", addr("signer"), "--catalog-addr", addr("catalog"), "--broker-addr", addr("cdn-broker"))
		if l.HSM {
			a = append(a, "--kek", "signer", "--signer-kek", "publisher")
		} else {
			a = append(a, "--kek", "soft", "--soft-kek-file", l.path("keys", "publisher-kek.json"))
		}
		if l.UploadProgressTimeout > 0 {
			a = append(a, "--upload-progress-timeout", l.UploadProgressTimeout.String())
		}
		// Nothing is ever deleted unless the dev directory holds a
		// retention policy.
		if _, err := os.Stat(l.RetentionPolicy()); err == nil {
			a = append(a, "--retention-policy", l.RetentionPolicy())
		}
	case "gatekeeper":
		a = append(a, "--catalog-addr", addr("catalog"), "--signer-addr", addr("signer"), "--publisher-addr", addr("publisher"),
			"--trust-root", l.TrustRoot(), "--stop-state-file", l.path("data", name, "stops.json"), "--broker-addr", addr("cdn-broker"),
			"--lift-quorum", "prod=2", "--default-lift-quorum", "1", "--killswitch-lift-quorum", "2")
		if l.PolicyBundle != "" {
			a = append(a, "--policy-bundle", l.PolicyBundle)
		}
		if l.DryRunEnv != "" {
			a = append(a, "--dry-run-env", l.DryRunEnv)
		}
		if l.MaxCheckpointAge > 0 {
			a = append(a, "--max-checkpoint-age", l.MaxCheckpointAge.String())
		}
		if l.LogHeadRefresh > 0 {
			a = append(a, "--log-head-refresh", l.LogHeadRefresh.String())
		}
	case "edge", "edge2":
		a = append(a, "--name", Edges[name], "--https-listen", "127.0.0.1:0", "--tls-cert-file", l.path("web", "edge.pem"),
			"--tls-key-file", l.path("web", "edge_key.pem"), "--publisher-addr", addr("publisher"),
			"--cache-dir", l.DataDir(name), "--trust-root", l.TrustRoot(), "--signer-addr", addr("signer"), "--gatekeeper-addr", addr("gatekeeper"))
	case "cdn-broker":
		a = append(a, "--signer-addr", addr("signer"), "--trust-root", l.TrustRoot(), "--gatekeeper-addr", addr("gatekeeper"), "--token-private-key-file", l.path("keys", "token.pem"))
		for _, u := range l.ExtraEdgeURLs {
			a = append(a, "--edge-url", u)
		}
		for _, e := range EdgeServices {
			a = append(a, "--edge-url", "https://"+s.Services[e]["https"])
		}
		a = append(a, "--state-dir", l.DataDir(name), "--catalog-addr", addr("catalog"))
		for _, e := range EdgeServices {
			a = append(a, "--edge-grpc", Edges[e]+"="+s.Services[e]["grpc"])
		}
	}
	return a
}

// cleanEnv passes the environment on without settings that would change
// where services get their identity or configuration.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CUSTODY_") || strings.HasPrefix(kv, identity.EndpointSocketEnv+"=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func findBinary(dir, name string) (string, error) {
	if dir == "" {
		if exe, err := os.Executable(); err == nil {
			dir = filepath.Dir(exe)
		}
	}
	if p := filepath.Join(dir, name); isExecutable(p) {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("service binary %q not found next to custody (%s) or on PATH: run `make build`", name, dir)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

func waitEndpoints(ctx context.Context, l Layout, p *proc) (daemon.Endpoints, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(l.EndpointsFile(p.name)); err == nil {
			var eps daemon.Endpoints
			if json.Unmarshal(b, &eps) == nil && eps["grpc"] != "" {
				return eps, nil
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			return nil, exitedErr(l, p.name, err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not start listening within 30s; see %s", p.name, l.LogFile(p.name))
		}
	}
}

func waitHealthy(ctx context.Context, l Layout, name, addr string, id spiffeid.ID, admin identity.Source, tel *telemetry.Telemetry, p *proc) error {
	conn, err := rpc.Dial(addr, id, admin, tel)
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		last = err
		select {
		case err := <-p.done:
			p.done <- err
			return exitedErr(l, name, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s is not healthy after 30s (%v); see %s", name, last, l.LogFile(name))
}

// exitedErr describes a service that exited during start-up, with the
// tail of its log; it wraps errAddrInUse when the service could not bind.
func exitedErr(l Layout, name string, waitErr error) error {
	t := tail(l.LogFile(name))
	err := fmt.Errorf("%s exited during start-up (%v); see %s:\n%s", name, waitErr, l.LogFile(name), t)
	if strings.Contains(t, "address already in use") {
		return fmt.Errorf("%w: %w", errAddrInUse, err)
	}
	return err
}

// reservePorts picks a distinct free loopback port for each service: every
// listener stays open until all are picked, so the kernel cannot hand the
// same port out twice. A process that takes a port after it is closed and
// before the service binds it makes the start fail with errAddrInUse, and
// Up picks again.
func reservePorts(services ...string) (map[string]string, error) {
	out := map[string]string{}
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	for _, s := range services {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a port for %s: %w", s, err)
		}
		held = append(held, ln)
		out[s] = ln.Addr().String()
	}
	return out, nil
}

// pinTrustRoot writes the signer's trust root to TrustRoot once: later
// starts keep the first pin, and verifiers walk forward from it.
func pinTrustRoot(ctx context.Context, l Layout, addr string, td spiffeid.TrustDomain, admin identity.Source, tel *telemetry.Telemetry) error {
	if _, err := os.Stat(l.TrustRoot()); err == nil {
		return nil
	}
	conn, err := rpc.Dial(addr, ServerID(td, "signer"), admin, tel)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := signerv1.NewSignerServiceClient(conn).GetTrustRoot(ctx, &signerv1.GetTrustRootRequest{})
	if err != nil {
		return fmt.Errorf("get the signer's trust root: %w; see %s", err, l.LogFile("signer"))
	}
	roots := resp.GetRoots()
	if len(roots) == 0 {
		return fmt.Errorf("the signer published no trust root; see %s", l.LogFile("signer"))
	}
	return daemon.WriteFileAtomic(l.TrustRoot(), roots[len(roots)-1], 0o644)
}

func stopAll(procs []*proc, out io.Writer) {
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		select {
		case err := <-p.done:
			p.done <- err
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			fmt.Fprintf(out, "%s did not stop within 15s: killing it\n", p.name)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// Down asks the supervisor of the stack in l to stop and waits until it has.
func Down(l Layout) error {
	s, err := ReadStack(l)
	if err != nil {
		return err
	}
	if !alive(s.SupervisorPID) {
		os.Remove(l.StackFile())
		return fmt.Errorf("the dev stack in %s is not running (stale stack.json removed)", l.Dir)
	}
	if err := syscall.Kill(s.SupervisorPID, syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal the dev stack (pid %d): %w", s.SupervisorPID, err)
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !alive(s.SupervisorPID) {
			return nil
		}
	}
	return fmt.Errorf("the dev stack (pid %d) did not stop within 60s", s.SupervisorPID)
}

func printNext(out io.Writer, l Layout, s *Stack) {
	fmt.Fprintf(out, `
Custody dev stack is up (trust domain %s). Try:

  export CUSTODY_DEV_DIR=%s
  custody publish FILE --name app --version 1.0.0 --channel staging
  custody admit app@1.0.0 --env staging
  custody fetch app@1.0.0 --env staging -o app.out --bundle app.bundle.json
  custody verify app.out --bundle app.bundle.json
  grpcurl -cacert %s/ca/ca.pem -cert %s/svid.pem -key %s/svid_key.pem -authority signer %s list

Stop with Ctrl-C or: custody dev down --dir %s
`, s.TrustDomain, l.Dir, l.Dir, l.IdentityDir("admin"), l.IdentityDir("admin"), s.Services["signer"]["grpc"], l.Dir)
}

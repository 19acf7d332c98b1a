package devstack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/telemetry"
)

// Restart backoff: the first restart of a service waits minBackoff, each
// further one twice as long up to maxBackoff; a service that ran for
// stableAfter before it exited starts again from minBackoff.
const (
	minBackoff  = 500 * time.Millisecond
	maxBackoff  = 30 * time.Second
	stableAfter = time.Minute
)

// supervisor restarts services of a running dev stack that exit, on the
// addresses they had, so that the services that call them need no restart.
type supervisor struct {
	l       Layout
	out     io.Writer
	stack   *Stack
	planned map[string]string
	procs   []*proc // shared with Up's deferred stopAll: elements are replaced in place
	exited  chan *proc
	admin   identity.Source
	tel     *telemetry.Telemetry
	td      spiffeid.TrustDomain
	backoff map[string]time.Duration
}

// run supervises until ctx is done.
func (sv *supervisor) run(ctx context.Context) {
	sv.backoff = map[string]time.Duration{}
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-sv.exited:
			err := <-p.done
			p.done <- err
			if !sv.current(p) {
				continue // a start-up attempt that was already handled
			}
			sv.restart(ctx, p, err)
		}
	}
}

func (sv *supervisor) current(p *proc) bool {
	for _, q := range sv.procs {
		if q == p {
			return true
		}
	}
	return false
}

// restart waits out the service's backoff and starts it again. If the new
// process exits, it reaches run through exited like any other.
func (sv *supervisor) restart(ctx context.Context, p *proc, exitErr error) {
	delay := sv.backoff[p.name]
	if delay == 0 || time.Since(p.started) >= stableAfter {
		delay = minBackoff
	}
	sv.backoff[p.name] = min(2*delay, maxBackoff)
	sv.log(p.name, slog.LevelWarn, "service exited; restarting it",
		slog.String("service", p.name), slog.String("exit", fmt.Sprint(exitErr)), slog.Duration("backoff", delay))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		bin, err := findBinary(sv.binDir(p), Binary(p.name))
		var np *proc
		if err == nil {
			np, err = startProc(sv.l, p.name, bin, sv.restartArgs(p.name), sv.exited)
		}
		if err != nil {
			// No process to wait for: try again here.
			delay = sv.backoff[p.name]
			sv.backoff[p.name] = min(2*delay, maxBackoff)
			sv.log(p.name, slog.LevelError, "restart failed; trying again", slog.String("service", p.name),
				slog.String("error", err.Error()), slog.Duration("backoff", delay))
			continue
		}
		sv.replace(p, np)
		if err := sv.await(ctx, np); err != nil {
			// If it exited, run sees it on exited and restarts it again.
			sv.log(p.name, slog.LevelError, "restarted service is not healthy", slog.String("service", p.name), slog.String("error", err.Error()))
			return
		}
		sv.log(p.name, slog.LevelInfo, "service restarted", slog.String("service", p.name), slog.Int("pid", np.cmd.Process.Pid))
		return
	}
}

// binDir is the directory of the binary that ran before.
func (sv *supervisor) binDir(p *proc) string {
	if p.cmd != nil && p.cmd.Path != "" {
		return filepath.Dir(p.cmd.Path)
	}
	return ""
}

// restartArgs are the service's arguments with the addresses it bound
// before, which every other service and stack.json know.
func (sv *supervisor) restartArgs(name string) []string {
	planned := maps.Clone(sv.planned)
	eps := sv.stack.Services[name]
	planned[name] = eps["grpc"]
	a := args(sv.l, name, sv.stack, planned)
	if m := eps["metrics"]; m != "" {
		a = append(a, "--metrics-listen", m)
	}
	if h := eps["https"]; h != "" {
		a = append(a, "--https-listen", h) // the last occurrence of a flag wins
	}
	return a
}

func (sv *supervisor) replace(old, np *proc) {
	for i, q := range sv.procs {
		if q == old {
			sv.procs[i] = np
		}
	}
	sv.stack.PIDs[np.name] = np.cmd.Process.Pid
	b, _ := json.MarshalIndent(sv.stack, "", "  ")
	if err := daemon.WriteFileAtomic(sv.l.StackFile(), b, 0o644); err != nil {
		sv.log(np.name, slog.LevelError, "update stack.json", slog.String("error", err.Error()))
	}
}

// await waits until the restarted service listens and is healthy.
func (sv *supervisor) await(ctx context.Context, p *proc) error {
	eps, err := waitEndpoints(ctx, sv.l, p)
	if err != nil {
		return err
	}
	return waitHealthy(ctx, sv.l, p.name, eps["grpc"], ServerID(sv.td, p.name), sv.admin, sv.tel, p)
}

// log writes a supervisor event to the service's log, to logs/supervisor.log
// and to the terminal.
func (sv *supervisor) log(service string, level slog.Level, msg string, attrs ...slog.Attr) {
	var ws []io.Writer
	for _, name := range []string{service, "supervisor"} {
		f, err := os.OpenFile(sv.l.LogFile(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			continue
		}
		defer f.Close()
		ws = append(ws, f)
	}
	slog.New(slog.NewJSONHandler(io.MultiWriter(ws...), nil)).LogAttrs(context.Background(), level, "custody dev: "+msg, attrs...)
	fmt.Fprintf(sv.out, "%s: %s\n", service, msg)
}

package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

// cutProxy forwards TCP connections to the address target returns at each
// accept (the signer's gRPC endpoint, which keeps its address across
// restarts). cut closes every connection and refuses new ones until
// restored: to the catalog behind it, the signer is gone, while every other
// service reaches the signer directly.
type cutProxy struct {
	l      net.Listener
	target func() (string, error)

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

func newCutProxy(t *testing.T, target func() (string, error)) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { l.Close(); p.setCut(true) })
	go p.serve()
	return p
}

func (p *cutProxy) addr() string { return p.l.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *cutProxy) forward(c net.Conn) {
	addr, err := p.target()
	var up net.Conn
	if err == nil {
		up, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// TestFrozenLogDenied (ATTACKS.md #14): the catalog's checkpoint stays
// fresh while the log is idle (re-co-signed every --cosign-refresh), so
// admissions are allowed; when the catalog can no longer reach the signer
// its checkpoint stops being co-signed, and within --max-checkpoint-age
// plus the refreshes every admission is denied naming the stale checkpoint,
// while the signer itself is up (the gatekeeper signs the denials). Once
// the signer is reachable again, admissions are allowed again; and after
// the signer process is killed and restarted by the stack, too. (Killing
// the signer alone cannot show the deny: the gatekeeper needs the signer to
// sign any decision, so it answers Unavailable, and the stack restarts the
// signer within a second.)
func TestFrozenLogDenied(t *testing.T) {
	const (
		maxAge      = 5 * time.Second
		refresh     = time.Second // the catalog's --cosign-refresh and the gatekeeper's --log-head-refresh
		maxAgeFlag  = "5s"
		refreshFlag = "1s"
	)
	dir := filepath.Join(t.TempDir(), "stack")
	l := devstack.Layout{Dir: dir}
	proxy := newCutProxy(t, func() (string, error) {
		b, err := os.ReadFile(l.EndpointsFile("signer"))
		if err != nil {
			return "", err
		}
		var eps map[string]string
		if err := json.Unmarshal(b, &eps); err != nil {
			return "", err
		}
		if eps["grpc"] == "" {
			return "", errors.New("no signer address yet")
		}
		return eps["grpc"], nil
	})
	s := startAt(t, binaries(t), dir, "--cosign-refresh", refreshFlag, "--max-checkpoint-age", maxAgeFlag,
		"--log-head-refresh", refreshFlag, "--catalog-signer-addr", proxy.addr())
	work := t.TempDir()
	s.mustCustody("publish", randomFile(t, work, "a", 4<<10), "--name", "app", "--version", "1", "--channel", "staging")

	admit := func() (string, int) { return s.custody("admit", "app@1", "--env", "staging") }
	// The log stays fresh while idle: longer than the maximum age after
	// the publish, still allowed.
	time.Sleep(maxAge + refresh)
	out, code := admit()
	if code != 0 || !strings.Contains(out, "ALLOW") {
		t.Fatalf("admission on an idle log %s after its last entry: exit %d\n%s", maxAge+refresh, code, out)
	}
	if !strings.Contains(out, "consistent with the log head") {
		t.Errorf("the allow does not say the entry's checkpoint is consistent with the log head:\n%s", out)
	}

	// Freeze: the catalog loses the signer; everything else keeps it.
	cutAt := time.Now()
	proxy.setCut(true)
	var denied string
	for denied == "" {
		out, code := admit()
		switch {
		case code == 1 && strings.Contains(out, "DENY") && strings.Contains(out, "the log checkpoint is stale"):
			denied = out
		case code != 0:
			t.Fatalf("admission with the log freezing: exit %d, want an allow or a stale-checkpoint deny\n%s", code, out)
		case time.Since(cutAt) > maxAge+2*refresh+5*time.Second:
			t.Fatalf("still allowed %s after the catalog lost the signer (max age %s, refreshes %s):\n%s",
				time.Since(cutAt).Round(time.Millisecond), maxAge, refresh, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(cutAt)
	t.Logf("denied %s after the cut (max age %s + refresh %s)", took.Round(time.Millisecond), maxAge, refresh)
	if took < maxAge-2*time.Second {
		t.Errorf("denied %s after the cut, before the checkpoint could be %s old", took, maxAge)
	}
	for _, want := range []string{"co-signed at", "more than the maximum age " + maxAgeFlag, "--max-checkpoint-age " + maxAgeFlag, "check that the catalog and the signer are up"} {
		if !strings.Contains(denied, want) {
			t.Errorf("the stale-checkpoint deny lacks %q:\n%s", want, denied)
		}
	}
	// The gatekeeper exports the age it sees.
	metrics := get(t, "http://"+s.info.Services["gatekeeper"]["metrics"]+"/metrics")
	m := regexp.MustCompile(`(?m)^custody_log_checkpoint_age_seconds ([0-9.e+]+)$`).FindStringSubmatch(metrics)
	if m == nil {
		t.Fatalf("gatekeeper metrics lack custody_log_checkpoint_age_seconds:\n%s", metrics)
	}
	if age, _ := strconv.ParseFloat(m[1], 64); age <= maxAge.Seconds() {
		t.Errorf("custody_log_checkpoint_age_seconds = %v while admissions are denied as stale, want over %v", age, maxAge.Seconds())
	}

	// The signer is reachable again: allowed again.
	proxy.setCut(false)
	allowedAgain := func(what string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			out, code := admit()
			if code == 0 && strings.Contains(out, "ALLOW") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not allowed again within %s: exit %d\n%s", what, within, code, out)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	restored := time.Now()
	allowedAgain("the catalog reaches the signer again", 30*time.Second)
	t.Logf("allowed again %s after the signer was reachable", time.Since(restored).Round(time.Millisecond))

	// The signer process killed (the gatekeeper decides nothing without
	// it: no signature, no revocations): once the stack has restarted it,
	// the catalog co-signs again and admissions are allowed.
	old := s.info.PIDs["signer"]
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	allowedAgain("the signer killed and restarted", 40*time.Second)
	t.Logf("allowed again %s after the signer was killed", time.Since(killed).Round(time.Millisecond))
	var now devstack.Stack
	if b, err := os.ReadFile(l.StackFile()); err != nil || json.Unmarshal(b, &now) != nil || now.PIDs["signer"] == old {
		t.Errorf("the stack does not name a new signer process after the kill (%v)", err)
	}
}

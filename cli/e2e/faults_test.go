package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/syncbuf"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

// faultEdge is a running cli/e2e/faultedge process: a real HTTPS server
// on loopback, with the dev stack's edge certificate, that the broker
// lists before the two real edges.
type faultEdge struct {
	t        *testing.T
	https    string // host:port
	plain    string // host:port of its plain HTTP listener
	modeFile string
	logFile  string
}

// startFaultEdge builds and starts faultedge for the dev directory dir
// (its certificate is read at the first handshake, after dev up has
// minted it).
func startFaultEdge(t *testing.T, dir string) *faultEdge {
	t.Helper()
	work := t.TempDir()
	exe := filepath.Join(work, "faultedge")
	build := exec.Command("go", "build", "-o", exe, "./e2e/faultedge")
	build.Dir = ".."
	build.Env = append(os.Environ(), "GOWORK=off")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build faultedge: %v\n%s", err, b)
	}
	f := &faultEdge{t: t, modeFile: filepath.Join(work, "mode.json"), logFile: filepath.Join(work, "requests.jsonl")}
	f.set(map[string]any{"mode": "503"})
	addrFile := filepath.Join(work, "addr.json")
	out := startBackground(t, "faultedge", exec.Command(exe, "--cert", filepath.Join(dir, "web", "edge.pem"), "--key", filepath.Join(dir, "web", "edge_key.pem"),
		"--mode-file", f.modeFile, "--addr-file", addrFile, "--log", f.logFile))
	deadline := time.Now().Add(30 * time.Second)
	for {
		var addrs struct{ HTTPS, HTTP string }
		if b, err := os.ReadFile(addrFile); err == nil && json.Unmarshal(b, &addrs) == nil {
			f.https, f.plain = addrs.HTTPS, addrs.HTTP
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("faultedge did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// set writes the mode the next requests get.
func (f *faultEdge) set(m map[string]any) {
	f.t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	tmp := f.modeFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.modeFile); err != nil {
		f.t.Fatal(err)
	}
}

type faultRequest struct {
	Listener string `json:"listener"`
	Host     string `json:"host"`
	Path     string `json:"path"`
	Token    bool   `json:"token"`
	Range    string `json:"range"`
	Mode     string `json:"mode"`
}

// requests returns what faultedge received since the log was last cleared,
// and clears it.
func (f *faultEdge) requests() []faultRequest {
	f.t.Helper()
	fh, err := os.Open(f.logFile)
	if err != nil {
		f.t.Fatal(err)
	}
	defer fh.Close()
	var rs []faultRequest
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		var r faultRequest
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			f.t.Fatalf("faultedge log: %v: %s", err, sc.Text())
		}
		rs = append(rs, r)
	}
	if err := os.Truncate(f.logFile, 0); err != nil {
		f.t.Fatal(err)
	}
	return rs
}

// startBroker starts a second cdn-broker process on the dev stack s, with
// the stack's broker identity, token key, signer and gatekeeper, that lists
// edgeURLs and nothing else: a fetch sent to it (--cdn-broker-addr) is given
// those URLs only. It returns the broker's gRPC address once it issues URLs
// (it refuses every request until it has learnt the stop state).
func startBroker(t *testing.T, s *stack, edgeURLs ...string) string {
	t.Helper()
	l := devstack.Layout{Dir: s.dir}
	work := t.TempDir()
	eps := filepath.Join(work, "endpoints.json")
	args := []string{"--trust-domain", s.info.TrustDomain, "--svid-dir", l.SVIDDir("cdn-broker"), "--endpoints-file", eps,
		"--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--signer-addr", s.info.Services["signer"]["grpc"], "--gatekeeper-addr", s.info.Services["gatekeeper"]["grpc"],
		"--trust-root", l.TrustRoot(), "--token-private-key-file", filepath.Join(s.dir, "keys", "token.pem")}
	for _, u := range edgeURLs {
		args = append(args, "--edge-url", u)
	}
	out := startBackground(t, "second cdn-broker", exec.Command(filepath.Join(s.bin, "cdn-broker"), args...))
	deadline := time.Now().Add(30 * time.Second)
	for {
		var e map[string]string
		if b, err := os.ReadFile(eps); err == nil && json.Unmarshal(b, &e) == nil && e["grpc"] != "" {
			return e["grpc"]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second cdn-broker did not start listening within 30s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuilder is the output a test reads while it is written.
type syncBuilder = syncbuf.Buffer

// noPartial fails if a temporary file of a fetch to dir/name is left.
func noPartial(t *testing.T, dir, name string) {
	t.Helper()
	if parts, _ := filepath.Glob(filepath.Join(dir, "."+name+".part*")); len(parts) > 0 {
		t.Errorf("temporary files left beside %s: %v", name, parts)
	}
}

// TestFetchFaultyEdges runs the dev stack with a misbehaving real HTTPS
// process listed first by the broker, before the two real edges (issue 8,
// item 3, decision 0106): an edge that answers 503, one that serves other
// bytes of the right length, one that is slow past the per-edge deadline,
// one that redirects to plain HTTP and one to another host. Each fetch
// ends with the right bytes from a real edge, written atomically, or, when
// every edge is bad, with an error naming each edge and what it did; no
// token reaches a redirect's target.
func TestFetchFaultyEdges(t *testing.T) {
	const size = 8 << 20
	dir := filepath.Join(t.TempDir(), "stack")
	fe := startFaultEdge(t, dir)
	s := startAt(t, binaries(t), dir, "--extra-edge-url", "https://"+fe.https)
	faulty := "https://" + fe.https + "/"
	dev, dev2 := "https://"+s.info.Services["edge"]["https"]+"/", "https://"+s.info.Services["edge2"]["https"]+"/"

	work := t.TempDir()
	src := randomFile(t, work, "app.bin", size)
	s.mustCustody("publish", src, "--name", "faulty", "--version", "1", "--channel", "staging")
	srcBytes, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}

	fetch := func(t *testing.T, name string, extra ...string) (fetchJSON, string, int) {
		t.Helper()
		dst := filepath.Join(work, name)
		out, code := s.custody(append([]string{"fetch", "faulty@1", "--env", "staging", "-o", dst, "--json"}, extra...)...)
		r := decodeFetch(t, out)
		if code == 0 {
			sameFile(t, src, dst)
		} else if _, err := os.Stat(dst); !os.IsNotExist(err) {
			t.Errorf("a failed fetch left %s: %v", dst, err)
		}
		noPartial(t, work, name)
		return r, out, code
	}
	// servedByDev checks that the fault edge was tried first, answered
	// what want says, and that dev served the rest.
	servedByDev := func(t *testing.T, r fetchJSON, out, want string) {
		t.Helper()
		if !r.OK || len(r.Attempts) < 2 {
			t.Fatalf("fetch: %s", out)
		}
		if first := r.Attempts[0]; !strings.HasPrefix(first.Edge, faulty) || !strings.Contains(first.Answer, want) {
			t.Errorf("first attempt %+v: want the fault edge %s answering %q", first, faulty, want)
		}
		if last := r.Attempts[len(r.Attempts)-1]; !strings.HasPrefix(last.Edge, dev) || last.Offset+last.Bytes != size {
			t.Errorf("last attempt %+v: want dev (%s) serving up to byte %d", last, dev, size)
		}
		if strings.Contains(out, "token=") {
			t.Errorf("the fetch's report holds a token: %s", out)
		}
	}
	fe.requests() // forget the start-up

	t.Run("503: the next edge serves", func(t *testing.T) {
		fe.set(map[string]any{"mode": "503"})
		r, out, code := fetch(t, "after503")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		servedByDev(t, r, out, "503 Service Unavailable: faultedge: overloaded")
		if len(r.Attempts) != 2 || len(r.ServedBy) != 1 || r.Resumed {
			t.Errorf("want one 503 and dev serving it all: %+v", r)
		}
		if rs := fe.requests(); len(rs) != 1 || !rs[0].Token {
			t.Errorf("faultedge got %+v; want one request with its token", rs)
		}
	})

	t.Run("other bytes of the right length: the liar is named and dropped", func(t *testing.T) {
		other := append([]byte(nil), srcBytes...)
		other[size/2] ^= 0x01
		lie := filepath.Join(work, "lie.bin")
		if err := os.WriteFile(lie, other, 0o600); err != nil {
			t.Fatal(err)
		}
		fe.set(map[string]any{"mode": "other-bytes", "file": lie})
		r, out, code := fetch(t, "afterlie")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		servedByDev(t, r, out, "integrity failure")
		if r.Attempts[0].Bytes != size || r.Attempts[1].Offset != 0 || r.Resumed {
			t.Errorf("want all of the lie received, then dev from byte 0 with no resume: %+v", r.Attempts)
		}
		if len(fe.requests()) != 1 {
			t.Error("the lying edge was asked again")
		}
	})

	t.Run("slow past the per-edge deadline: the next edge resumes", func(t *testing.T) {
		fe.set(map[string]any{"mode": "slow", "file": src, "rate": 1 << 20})
		r, out, code := fetch(t, "afterslow", "--edge-timeout", "3s", "--stall-timeout", "20s")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		servedByDev(t, r, out, "too slow: not done within the per-edge timeout 3s")
		slow, last := r.Attempts[0], r.Attempts[len(r.Attempts)-1]
		if slow.Bytes <= 0 || slow.Bytes >= size || last.Offset != slow.Bytes || !r.Resumed {
			t.Errorf("want dev to resume where the slow edge stopped: %+v", r)
		}
		if len(r.ServedBy) != 2 || !strings.HasPrefix(r.ServedBy[0], faulty) || !strings.HasPrefix(r.ServedBy[1], dev) {
			t.Errorf("served_by %v: want the slow edge, then dev", r.ServedBy)
		}
		t.Logf("the slow edge sent %d bytes in 3s; dev resumed at byte %d", slow.Bytes, last.Offset)
		fe.requests()
	})

	for _, c := range []struct{ mode, target string }{
		{"redirect-http", "http://" + fe.plain},
		{"redirect-host", "https://localhost:"},
	} {
		t.Run(c.mode+": refused, the token stays", func(t *testing.T) {
			fe.set(map[string]any{"mode": c.mode})
			r, out, code := fetch(t, "after-"+c.mode)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, out)
			}
			servedByDev(t, r, out, "refused a redirect")
			if !strings.Contains(r.Attempts[0].Answer, c.target) {
				t.Errorf("answer %q does not name the redirect target %s", r.Attempts[0].Answer, c.target)
			}
			rs := fe.requests()
			if len(rs) == 0 || !rs[0].Token || rs[0].Listener != "https" {
				t.Fatalf("faultedge got %+v; want the first request, with its token, on HTTPS", rs)
			}
			for _, q := range rs[1:] {
				t.Errorf("the redirect was followed: %+v", q)
			}
		})
	}

	// Issue 8's check: with the redirecting edge the only one, nothing
	// else can serve; the fetch fails naming it and the refused redirect,
	// writes nothing, and the plain-HTTP target never hears of the token.
	t.Run("redirect-http from the only edge: the fetch fails, the token stays", func(t *testing.T) {
		addr := startBroker(t, s, "https://"+fe.https)
		gk := gatekeeperv1.NewGatekeeperServiceClient(s.conn("deployer", "gatekeeper"))
		broker := cdnbrokerv1.NewCdnBrokerServiceClient(s.connTo("deployer", "cdn-broker", addr))
		eventually(t, "the second broker lists the fault edge alone", func() (bool, string) {
			d, err := gk.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "faulty", Version: "1", Environment: "staging"})
			if err != nil {
				return false, err.Error()
			}
			u, err := broker.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: d.GetDecisionEnvelope()})
			if err != nil {
				return false, err.Error()
			}
			if len(u.GetUrls()) != 1 || !strings.HasPrefix(u.GetUrls()[0], faulty) {
				t.Fatalf("the second broker issued %d URLs, want one, at %s", len(u.GetUrls()), faulty)
			}
			return true, ""
		})
		fe.set(map[string]any{"mode": "redirect-http"})
		fe.requests()
		r, out, code := fetch(t, "only-redirect", "--cdn-broker-addr", addr)
		if code != 1 || r.OK {
			t.Fatalf("exit %d, want 1 (the only edge redirected to http): %s", code, out)
		}
		if len(r.Attempts) != 1 || !strings.HasPrefix(r.Attempts[0].Edge, faulty) {
			t.Errorf("want one attempt, at %s (a refused redirect is not retried): %+v", faulty, r.Attempts)
		}
		for _, want := range []string{faulty + "v1/blobs/sha256/", "refused a redirect", "to http://" + fe.plain, "no edge served the right bytes (1 attempts)"} {
			if !strings.Contains(r.Error, want) {
				t.Errorf("error does not say %q: %s", want, r.Error)
			}
		}
		if strings.Contains(out, "token=") {
			t.Errorf("the fetch's report holds a token: %s", out)
		}
		rs := fe.requests()
		if len(rs) != 1 || rs[0].Listener != "https" || !rs[0].Token || rs[0].Mode != "redirect-http" {
			t.Errorf("faultedge got %+v; want one request, on HTTPS, with its token", rs)
		}
		for _, q := range rs {
			if q.Listener != "https" {
				t.Errorf("the plain-HTTP target was reached: %+v", q)
			}
		}
	})

	t.Run("every edge bad: the error names each edge and what it did", func(t *testing.T) {
		fe.set(map[string]any{"mode": "503"})
		for _, svc := range []string{"edge", "edge2"} {
			pid := s.currentPID(t, svc)
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			defer syscall.Kill(pid, syscall.SIGCONT)
		}
		r, out, code := fetch(t, "allbad", "--retries", "2", "--backoff", "100ms", "--stall-timeout", "2s")
		if code != 1 || r.OK {
			t.Fatalf("exit %d, want 1 (no edge served): %s", code, out)
		}
		if len(r.Attempts) != 6 {
			t.Errorf("want two rounds of three edges: %+v", r.Attempts)
		}
		for _, want := range []string{
			faulty + "v1/blobs/sha256/",
			"503 Service Unavailable",
			dev + "v1/blobs/sha256/",
			dev2 + "v1/blobs/sha256/",
			"no edge served the right bytes (6 attempts)",
		} {
			if !strings.Contains(r.Error, want) {
				t.Errorf("error does not say %q: %s", want, r.Error)
			}
		}
		for _, a := range r.Attempts {
			switch {
			case strings.HasPrefix(a.Edge, faulty):
				if !strings.Contains(a.Answer, "503") {
					t.Errorf("the fault edge's answer %q does not say 503", a.Answer)
				}
			case !strings.Contains(a.Answer, "stalled: no byte for 2s") && !strings.Contains(a.Answer, "TLS handshake timeout"):
				// A frozen process's kernel accepts the connection; the
				// handshake never ends (the stall timeout bounds both).
				t.Errorf("a frozen edge's answer %q does not say it stalled", a.Answer)
			}
		}
		// Each edge once, with all it answered.
		for _, e := range []string{faulty, dev, dev2} {
			if n := strings.Count(r.Error, e); n != 1 {
				t.Errorf("the error names %s %d times: %s", e, n, r.Error)
			}
		}
		if strings.Contains(out, "token=") {
			t.Errorf("the error holds a token: %s", out)
		}
		fe.requests()
	})

	t.Run("slow past the fetch deadline: a clear error, nothing written", func(t *testing.T) {
		fe.set(map[string]any{"mode": "slow", "file": src, "rate": 64 << 10})
		r, out, code := fetch(t, "deadline", "--timeout", "15s", "--edge-timeout", "10m", "--stall-timeout", "20s")
		if code != 1 || r.OK {
			t.Fatalf("exit %d, want 1: %s", code, out)
		}
		if !strings.Contains(r.Error, "the fetch deadline passed before any edge served the right bytes") || !strings.Contains(r.Error, faulty) {
			t.Errorf("error: %s", r.Error)
		}
		if len(r.Attempts) != 1 || r.Attempts[0].Bytes <= 0 || !strings.Contains(r.Attempts[0].Answer, "cut by the fetch deadline (--timeout)") {
			t.Errorf("want one slow attempt that received some bytes: %+v", r.Attempts)
		}
	})
}

// startBackground starts cmd, stops it with SIGTERM when the test ends,
// and shows its output (named what) if the test failed; it returns the
// output so far.
func startBackground(t *testing.T, what string, cmd *exec.Cmd) *syncBuilder {
	t.Helper()
	var out syncBuilder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", what, out.String())
		}
	})
	return &out
}

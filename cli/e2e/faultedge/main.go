// Command faultedge is an HTTPS server that misbehaves like a broken CDN
// edge, for the end-to-end tests of `custody fetch` (cli/e2e
// TestFetchFaultyEdges): the test lists it before the dev stack's real
// edges (custody dev up --extra-edge-url) and picks, per request, how it
// fails.
//
// It listens on loopback for HTTPS (the dev stack's edge certificate,
// loaded at the first handshake, since the stack mints it after this
// process has chosen its port) and for plain HTTP (the target of the
// redirect modes, which must never be reached). It writes both addresses
// as JSON to --addr-file once listening, and one JSON line per request to
// --log: which listener, the Host, the path, whether a token was in the
// query (never the token itself) and the Range header.
//
// The mode is read from --mode-file at every request, as JSON
// {"mode": M, "file": F, "rate": R}:
//
//	503            answers 503 Service Unavailable
//	other-bytes    answers 200 with the bytes of F (the test's copy of the
//	               artifact with other bytes, the same length), whatever
//	               the Range
//	slow           serves F, honouring "Range: bytes=N-", at R bytes/s in
//	               ten writes a second: never stalled, always too slow
//	redirect-http  answers 302 to the same path and query on the plain
//	               HTTP listener
//	redirect-host  answers 302 to the same path and query at "localhost"
//	               on the HTTPS listener (the same certificate, another host)
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "faultedge:", err)
		os.Exit(2)
	}
}

type mode struct {
	Mode string `json:"mode"`
	File string `json:"file"`
	Rate int64  `json:"rate"`
}

type logLine struct {
	Listener string `json:"listener"`
	Host     string `json:"host"`
	Path     string `json:"path"`
	Token    bool   `json:"token"`
	Range    string `json:"range,omitempty"`
	Mode     string `json:"mode,omitempty"`
}

type server struct {
	modeFile  string
	httpsAddr string
	plainAddr string

	mu  sync.Mutex
	log *os.File
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("faultedge", flag.ContinueOnError)
	certFile := fs.String("cert", "", "TLS certificate (PEM), read at the first handshake")
	keyFile := fs.String("key", "", "TLS key (PEM)")
	modeFile := fs.String("mode-file", "", "JSON mode, read at every request")
	addrFile := fs.String("addr-file", "", "write {\"https\":..., \"http\":...} here once listening")
	logFile := fs.String("log", "", "append one JSON line per request here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *certFile == "" || *keyFile == "" || *modeFile == "" || *addrFile == "" || *logFile == "" {
		return errors.New("--cert, --key, --mode-file, --addr-file and --log are required")
	}
	lf, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	tlsLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	plainLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s := &server{modeFile: *modeFile, httpsAddr: tlsLis.Addr().String(), plainAddr: plainLis.Addr().String(), log: lf}

	var certMu sync.Mutex
	var cert *tls.Certificate
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		certMu.Lock()
		defer certMu.Unlock()
		if cert == nil {
			c, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				return nil, err
			}
			cert = &c
		}
		return cert, nil
	}}
	httpsSrv := &http.Server{Handler: http.HandlerFunc(s.serveHTTPS), TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second}
	plainSrv := &http.Server{Handler: http.HandlerFunc(s.servePlain), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- httpsSrv.ServeTLS(tlsLis, "", "") }()
	go func() { errc <- plainSrv.Serve(plainLis) }()

	b, _ := json.Marshal(map[string]string{"https": s.httpsAddr, "http": s.plainAddr})
	tmp := *addrFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, *addrFile); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = httpsSrv.Shutdown(sctx)
	_ = plainSrv.Shutdown(sctx)
	return nil
}

func (s *server) record(listener string, r *http.Request, m string) {
	b, _ := json.Marshal(logLine{Listener: listener, Host: r.Host, Path: r.URL.Path, Token: r.URL.Query().Has("token"), Range: r.Header.Get("Range"), Mode: m})
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = s.log.Write(append(b, '\n'))
}

// servePlain is the redirect target that a fetch must never reach.
func (s *server) servePlain(w http.ResponseWriter, r *http.Request) {
	s.record("http", r, "")
	http.Error(w, "faultedge: the plain HTTP listener was reached", http.StatusTeapot)
}

func (s *server) serveHTTPS(w http.ResponseWriter, r *http.Request) {
	var m mode
	b, err := os.ReadFile(s.modeFile)
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	s.record("https", r, m.Mode)
	if err != nil {
		http.Error(w, "faultedge: no mode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if host, _, _ := net.SplitHostPort(r.Host); host == "localhost" {
		// Reached through the other-host redirect: it must not be.
		http.Error(w, "faultedge: the other host was reached", http.StatusTeapot)
		return
	}
	_, port, _ := net.SplitHostPort(s.httpsAddr)
	switch m.Mode {
	case "503":
		http.Error(w, "faultedge: overloaded, try another edge", http.StatusServiceUnavailable)
	case "redirect-http":
		http.Redirect(w, r, "http://"+s.plainAddr+r.URL.RequestURI(), http.StatusFound)
	case "redirect-host":
		http.Redirect(w, r, "https://localhost:"+port+r.URL.RequestURI(), http.StatusFound)
	case "other-bytes":
		f, err := os.Open(m.File)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		w.WriteHeader(http.StatusOK)
		_, _ = io.Copy(w, f)
	case "slow":
		s.serveSlow(w, r, m)
	default:
		http.Error(w, fmt.Sprintf("faultedge: unknown mode %q", m.Mode), http.StatusInternalServerError)
	}
}

func (s *server) serveSlow(w http.ResponseWriter, r *http.Request, m mode) {
	f, err := os.Open(m.File)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	size, start := fi.Size(), int64(0)
	if rg := r.Header.Get("Range"); rg != "" {
		v, ok := strings.CutPrefix(rg, "bytes=")
		v, ok2 := strings.CutSuffix(v, "-")
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || !ok2 || err != nil || n < 0 || n >= size {
			http.Error(w, "faultedge: unsupported range", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = n
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, size-1, size))
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(size-start, 10))
	if start > 0 {
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	chunk := max(m.Rate/10, 1)
	rc := http.NewResponseController(w)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := io.CopyN(w, f, chunk)
		if n > 0 {
			_ = rc.Flush()
		}
		if err != nil {
			return // the end of the file, or the client went away
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

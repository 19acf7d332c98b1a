package command

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	libdigest "github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/verify"
)

// fetchOptions bound one `custody fetch` transfer (see docs/cli.md).
type fetchOptions struct {
	// Rounds is how many times the whole URL list is tried.
	Rounds int
	// Backoff is the pause after the first failed round; it doubles each
	// round up to MaxBackoff, with up to half of it added as jitter.
	Backoff, MaxBackoff time.Duration
	// Stall fails an attempt that receives no byte for this long.
	Stall time.Duration
	// EdgeTimeout bounds one attempt at one edge: a slow edge gives way
	// to the next, which resumes where it stopped.
	EdgeTimeout time.Duration
}

var defaultFetchOptions = fetchOptions{Rounds: 3, Backoff: time.Second, MaxBackoff: 30 * time.Second, Stall: 30 * time.Second, EdgeTimeout: 10 * time.Minute}

// edgeAttempt is one request to one edge and what it answered.
type edgeAttempt struct {
	Edge   string `json:"edge"`
	Offset int64  `json:"offset"`
	Bytes  int64  `json:"bytes"`
	Status int    `json:"status,omitempty"`
	Answer string `json:"answer"`
}

// transferResult says how the bytes arrived.
type transferResult struct {
	Attempts []edgeAttempt `json:"attempts"`
	// Resumed and Edges describe the bytes of the output (empty on failure).
	Resumed bool     `json:"resumed"`
	Edges   []string `json:"served_by"`
}

// errRedirect is a redirect to another scheme or host.
var errRedirect = errors.New("refused a redirect")

// errIntegrity marks an edge that served bytes other than the recorded ones.
var errIntegrity = errors.New("integrity failure")

// redactURL drops the query (the token) so that a URL can be printed.
func redactURL(u string) string { return strings.SplitN(u, "?", 2)[0] }

// newFetchClient returns an HTTP client that never follows a redirect to
// another scheme or host: an HTTPS edge cannot send the token (in the
// query) or the download to plain HTTP or to a third party.
func newFetchClient(t http.RoundTripper) *http.Client {
	return &http.Client{Transport: t, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		first := via[0].URL
		if req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
			return fmt.Errorf("%w from %s://%s to %s://%s: an edge may not send the download elsewhere", errRedirect, first.Scheme, first.Host, req.URL.Scheme, req.URL.Host)
		}
		if len(via) >= 5 {
			return errors.New("stopped after 5 redirects")
		}
		return nil
	}}
}

// transfer downloads a into a temporary file beside out, failing over
// across urls and resuming with a Range request where the last edge
// stopped, and renames it to out only when size and digest match. On
// failure nothing is left at out and the error names every edge tried and
// what each answered.
func (c *cli) transfer(ctx context.Context, client *http.Client, urls []string, a verify.Artifact, out string, o fetchOptions) (*transferResult, error) {
	res := &transferResult{Attempts: []edgeAttempt{}, Edges: []string{}}
	if a.Size < 0 {
		return res, fmt.Errorf("recorded size %d is negative", a.Size)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".part*")
	if err != nil {
		return res, err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	t := &transferState{f: tmp, h: sha256.New(), size: a.Size, p: c.newProgress("downloaded", a.Size)}
	bad := map[string]bool{} // edges that served wrong bytes or refused for good
	delay := o.Backoff
	for round := 0; round < o.Rounds; round++ {
		if round > 0 {
			if err := sleepJitter(ctx, delay); err != nil {
				break
			}
			delay = min(2*delay, o.MaxBackoff)
		}
		for _, u := range urls {
			if bad[u] {
				continue
			}
			if ctx.Err() != nil {
				break
			}
			at, complete, permanent := t.attempt(ctx, client, u, a, o)
			res.Attempts = append(res.Attempts, at)
			if permanent {
				bad[u] = true
			}
			if !complete {
				t.p.note(fmt.Sprintf("%s: %s", at.Edge, at.Answer))
				if t.off == a.Size {
					// All bytes, but the edge misbehaved after them
					// (more bytes): keep none of its answer.
					if err := t.reset(); err != nil {
						return res, err
					}
				}
				continue
			}
			got := libdigest.FromSum(t.h.Sum(nil))
			if got == a.Digest {
				res.Edges, res.Resumed = append(res.Edges, t.from...), t.resumed
				t.p.finish()
				if err := commit(tmp, out); err != nil {
					return res, err
				}
				done = true
				return res, nil
			}
			// Wrong bytes: if one edge served all of them it is lying;
			// if several did, start again from zero so that the next
			// mismatch names the edge.
			at.Answer = fmt.Sprintf("%v for %s: the %d bytes hash to %s", errIntegrity, a.Digest, a.Size, got)
			res.Attempts[len(res.Attempts)-1] = at
			if len(t.from) == 1 {
				bad[u] = true
			}
			if err := t.reset(); err != nil {
				return res, err
			}
		}
	}
	t.p.finish()
	msg := "no edge served the right bytes"
	if ctx.Err() != nil {
		msg = "the fetch deadline passed before any edge served the right bytes"
	}
	return res, fmt.Errorf("%s (%d attempts): %s", msg, len(res.Attempts), describeAttempts(res.Attempts))
}

// describeAttempts lists each edge once, with everything it answered.
func describeAttempts(as []edgeAttempt) string {
	var order []string
	answers := map[string][]string{}
	for _, a := range as {
		if _, ok := answers[a.Edge]; !ok {
			order = append(order, a.Edge)
		}
		answers[a.Edge] = append(answers[a.Edge], a.Answer)
	}
	var parts []string
	for _, e := range order {
		parts = append(parts, e+": "+strings.Join(answers[e], "; then "))
	}
	return strings.Join(parts, " | ")
}

func sleepJitter(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	d += time.Duration(rand.Int64N(int64(d)/2 + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// transferState is the partial file: off bytes written and hashed.
type transferState struct {
	f       *os.File
	h       hash.Hash
	off     int64
	size    int64
	p       *progress
	from    []string // edges whose bytes are in the file, in order
	resumed bool     // some of them came after a Range request
}

func (t *transferState) reset() error {
	if err := t.f.Truncate(0); err != nil {
		return err
	}
	if _, err := t.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	t.h.Reset()
	t.off = 0
	t.from, t.resumed = nil, false
	t.p.set(0)
	return nil
}

// attempt asks one edge for the bytes from t.off on and appends what it
// sends. complete is true when the edge sent exactly the rest of the
// recorded size; permanent when retrying this edge cannot help.
func (t *transferState) attempt(ctx context.Context, client *http.Client, rawURL string, a verify.Artifact, o fetchOptions) (at edgeAttempt, complete, permanent bool) {
	where := redactURL(rawURL)
	at = edgeAttempt{Edge: where, Offset: t.off}
	fail := func(perm bool, format string, args ...any) (edgeAttempt, bool, bool) {
		at.Answer = fmt.Sprintf(format, args...)
		return at, false, perm
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		// The token is in the URL: never send it in clear.
		return fail(true, "refused: not an https:// URL, the token would travel in clear")
	}
	actx, cancel := context.WithTimeout(ctx, o.EdgeTimeout)
	defer cancel()
	stalled := false
	var mu sync.Mutex
	watchdog := time.AfterFunc(o.Stall, func() { mu.Lock(); stalled = true; mu.Unlock(); cancel() })
	defer watchdog.Stop()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fail(true, "%v", err)
	}
	if t.off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", t.off))
		// The edge's ETag is the digest: other bytes get a full answer.
		req.Header.Set("If-Range", `"`+a.Digest+`"`)
	}
	why := func(err error) string {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case stalled:
			return fmt.Sprintf("stalled: no byte for %s", o.Stall)
		case errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
			return fmt.Sprintf("too slow: not done within the per-edge timeout %s", o.EdgeTimeout)
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return "cut by the fetch deadline (--timeout)"
		}
		// A url.Error quotes the URL, and a redirect's URL carries the
		// token too: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return fail(errors.Is(err, errRedirect), "%s", why(err))
	}
	defer resp.Body.Close()
	at.Status = resp.StatusCode
	remaining := t.size - t.off
	switch {
	case resp.StatusCode == http.StatusOK:
		if t.off > 0 {
			// A full answer to a Range request: start again from zero.
			if err := t.reset(); err != nil {
				return fail(false, "%v", err)
			}
			at.Offset, remaining = 0, t.size
		}
	case resp.StatusCode == http.StatusPartialContent && t.off > 0:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != t.off || total != t.size {
			return fail(true, "%v: asked for bytes %d- of %d, answered Content-Range %q", errIntegrity, t.off, t.size, trimHeader(resp.Header.Get("Content-Range")))
		}
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		perm := resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusUnauthorized ||
			(resp.StatusCode >= 300 && resp.StatusCode < 400)
		return fail(perm, "%s: %s", resp.Status, strings.TrimSpace(strings.ToValidUTF8(string(body), "?")))
	}
	if resp.ContentLength >= 0 && resp.ContentLength != remaining {
		return fail(true, "%v: announced %d bytes, %d expected", errIntegrity, resp.ContentLength, remaining)
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			watchdog.Reset(o.Stall)
			if int64(n) > t.size-t.off {
				return fail(true, "%v: served more than the recorded %d bytes", errIntegrity, t.size)
			}
			if _, err := t.f.Write(buf[:n]); err != nil {
				return fail(false, "write %s: %v", t.f.Name(), err)
			}
			t.h.Write(buf[:n])
			t.off += int64(n)
			at.Bytes += int64(n)
			if at.Bytes == int64(n) {
				t.from = append(t.from, where)
				t.resumed = t.resumed || t.off > int64(n)
			}
			t.p.add(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fail(false, "after %d bytes: %s", at.Bytes, why(rerr))
		}
	}
	if t.off != t.size {
		return fail(false, "connection ended after %d bytes (%d of %d)", at.Bytes, t.off, t.size)
	}
	at.Answer = fmt.Sprintf("%s: %d bytes", resp.Status, at.Bytes)
	return at, true, false
}

func trimHeader(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// parseContentRange parses "bytes START-END/TOTAL".
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	total, err3 := strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || end >= total || end != total-1 {
		return 0, 0, false
	}
	return start, total, true
}

// commit fsyncs tmp, renames it to out and fsyncs the directory.
func commit(tmp *os.File, out string) error {
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(out))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

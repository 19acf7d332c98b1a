package command

import (
	"fmt"
	"io"
	"time"
)

// progress reports bytes moved on a terminal line, at most twice a second.
type progress struct {
	w     io.Writer
	verb  string
	total int64
	done  int64
	start time.Time
	last  time.Time
}

// newProgress returns nil (no output) for small transfers unless forced.
func (c *cli) newProgress(verb string, total int64) *progress {
	if !c.progress && (total < 8<<20 || !isTerminal(c.stderr)) {
		return nil
	}
	now := time.Now()
	return &progress{w: c.stderr, verb: verb, total: total, start: now, last: now}
}

func (p *progress) add(n int) {
	if p == nil {
		return
	}
	p.done += int64(n)
	if now := time.Now(); now.Sub(p.last) >= 500*time.Millisecond || p.done == p.total {
		p.last = now
		p.print(now)
	}
}

// set restarts the count at n bytes done (a resumed upload).
func (p *progress) set(n int64) {
	if p == nil {
		return
	}
	p.done = n
}

func (p *progress) print(now time.Time) {
	secs := now.Sub(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(p.done) / secs / 1e6
	}
	pct := 100.0
	if p.total > 0 {
		pct = float64(p.done) * 100 / float64(p.total)
	}
	fmt.Fprintf(p.w, "\r%s %d/%d bytes (%.0f%%) %.1f MB/s", p.verb, p.done, p.total, pct, rate)
}

func (p *progress) finish() {
	if p == nil {
		return
	}
	p.print(time.Now())
	fmt.Fprintln(p.w)
}

// note prints a line (an edge that failed) between progress updates.
func (p *progress) note(msg string) {
	if p == nil {
		return
	}
	fmt.Fprintf(p.w, "\r%s\n", msg)
}

package translog

import (
	"context"
	"testing"

	"github.com/transparency-dev/tessera"
)

// countingReader is a LogReader whose tree grows when told and counts reads
// of its size.
type countingReader struct {
	tessera.LogReader
	size  uint64
	reads int
}

func (c *countingReader) IntegratedSize(context.Context) (uint64, error) {
	c.reads++
	return c.size, nil
}
func (c *countingReader) NextIndex(context.Context) (uint64, error) {
	c.reads++
	return c.size, nil
}

// TestQuietReaderRereadsAfterAppends: Tessera's metrics loop sees the cached
// size while nothing is appended, and the new size after an append.
func TestQuietReaderRereadsAfterAppends(t *testing.T) {
	raw := &countingReader{size: 5}
	q := &quietReader{LogReader: raw, raw: raw}
	q.touch()
	for range 20 {
		if n, _ := q.IntegratedSize(t.Context()); n != 5 {
			t.Fatalf("size %d, want 5", n)
		}
		if n, _ := q.NextIndex(t.Context()); n != 5 {
			t.Fatalf("next index %d, want 5", n)
		}
	}
	if raw.reads != 2 {
		t.Fatalf("%d reads of the driver for 40 polls while idle, want 2", raw.reads)
	}
	raw.size = 9
	q.touch()
	if n, _ := q.IntegratedSize(t.Context()); n != 9 {
		t.Fatalf("size after an append %d, want 9", n)
	}
	if n, _ := q.NextIndex(t.Context()); n != 9 {
		t.Fatalf("next index after an append %d, want 9", n)
	}
}

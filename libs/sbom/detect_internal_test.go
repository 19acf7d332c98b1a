package sbom

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A Parser whose slots are all taken makes the next caller wait, and one
// whose context ends while waiting gets its error without parsing.
func TestParserBoundsConcurrency(t *testing.T) {
	p := NewParser(1)
	doc := []byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","components":[{"name":"a"}]}`)
	release, err := p.acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := p.Parse(ctx, doc); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Parse with the slot taken: %v, want DeadlineExceeded", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.ParseFormat(t.Context(), FormatCycloneDX, doc)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("ParseFormat returned %v while the slot was taken", err)
	case <-time.After(20 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Errorf("ParseFormat after the slot was freed: %v", err)
	}
	if _, got, err := p.Parse(t.Context(), doc); err != nil || len(got) != 1 {
		t.Errorf("Parse: %d components, %v", len(got), err)
	}
}

package sbom

import (
	"context"
	"encoding/json"

	"google.golang.org/grpc"
)

// Formats an SBOM document may have: the same strings as
// attest.SBOMFormatCycloneDX and attest.SBOMFormatSPDX, which a test pins.
const (
	FormatCycloneDX = "cyclonedx-json"
	FormatSPDX      = "spdx-json"
)

// Parse parses a CycloneDX or SPDX JSON document, telling which by its
// top-level bomFormat or spdxVersion, and returns the format
// (FormatCycloneDX or FormatSPDX) and its components. A document that is
// neither, or both, is refused with an error matching ErrInvalid.
func Parse(b []byte) (format string, components []Component, err error) {
	if err := scan(b); err != nil {
		return "", nil, err
	}
	// Only the two keys are decoded; every other value is skipped, so this
	// allocates little whatever the document holds.
	var top struct {
		BOMFormat   *string `json:"bomFormat"`
		SPDXVersion *string `json:"spdxVersion"`
	}
	if err := json.Unmarshal(b, &top); err != nil {
		return "", nil, invalid("not a JSON object: %v", err)
	}
	switch {
	case top.BOMFormat != nil && top.SPDXVersion != nil:
		return "", nil, invalid("both bomFormat and spdxVersion: want a CycloneDX or an SPDX document, not both")
	case top.BOMFormat != nil:
		format = FormatCycloneDX
	case top.SPDXVersion != nil:
		format = FormatSPDX
	default:
		return "", nil, invalid("neither bomFormat (CycloneDX) nor spdxVersion (SPDX): want CycloneDX 1.5/1.6 or SPDX 2.3 JSON")
	}
	components, err = ParseFormat(format, b)
	if err != nil {
		return "", nil, err
	}
	return format, components, nil
}

// ParseFormat parses b as a document of format (FormatCycloneDX or
// FormatSPDX).
func ParseFormat(format string, b []byte) ([]Component, error) {
	switch format {
	case FormatCycloneDX:
		return ParseCycloneDX(b)
	case FormatSPDX:
		return ParseSPDX(b)
	}
	return nil, invalid("format %q: want %s or %s", format, FormatCycloneDX, FormatSPDX)
}

// Parser bounds how many documents a process parses at once: parsing one
// document at the bounds allocates up to about 71 MiB (decision 0074), so
// n parsers bound a service's parsing memory to about n times that. It is
// safe for concurrent use.
type Parser struct {
	slots chan struct{}
}

// NewParser returns a parser of at most n documents at once (at least 1).
func NewParser(n int) *Parser {
	return &Parser{slots: make(chan struct{}, max(1, n))}
}

// Parse is the package's Parse, waiting for a slot first; it fails with
// ctx's error if ctx ends before one is free.
func (p *Parser) Parse(ctx context.Context, b []byte) (string, []Component, error) {
	release, err := p.acquire(ctx)
	if err != nil {
		return "", nil, err
	}
	defer release()
	return Parse(b)
}

// ParseFormat is the package's ParseFormat, waiting for a slot first.
func (p *Parser) ParseFormat(ctx context.Context, format string, b []byte) ([]Component, error) {
	release, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return ParseFormat(format, b)
}

func (p *Parser) acquire(ctx context.Context) (func(), error) {
	select {
	case p.slots <- struct{}{}:
		return func() { <-p.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// MaxMessageBytes is the largest gRPC message that carries one document
// and its signed statement's envelope (attest.MaxEnvelopeSize, 1 MiB), with
// room for the other fields: the catalog's receive limit.
const MaxMessageBytes = MaxBytes + 1<<20 + 64<<10

// CallOptions are the gRPC call options of a call that sends or receives
// one document (the catalog's RecordSBOM, GetSBOM with include_document):
// gRPC's default receive limit is 4 MiB. A GetSBOM answer carries the
// document and its components, whose strings come from the document (at
// most MaxBytes together) plus their framing (at most MaxComponents times
// 64 bytes), and the envelope: maxSBOMAnswer.
func CallOptions() []grpc.CallOption {
	return []grpc.CallOption{grpc.MaxCallRecvMsgSize(maxSBOMAnswer), grpc.MaxCallSendMsgSize(MaxMessageBytes)}
}

const maxSBOMAnswer = 2*MaxBytes + MaxComponents*64 + 1<<20 + 64<<10

package sbom

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/spdx/tools-golang/spdx/v2/v2_3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/quote"
)

// Bounds on an SBOM, checked before the document is decoded so that a
// bomb-like document costs at most a scan of MaxBytes.
const (
	// MaxBytes bounds an SBOM document.
	MaxBytes = 8 << 20
	// MaxComponents bounds the components one SBOM may list (CycloneDX
	// components, nested ones included; SPDX packages).
	MaxComponents = 20000
	// MaxObjects bounds the JSON objects in a document: what the decoders
	// allocate grows with it, whatever the objects are (a document of
	// empty objects is the cheapest way to make them allocate).
	MaxObjects = 200000
	// MaxJSONDepth bounds how deeply the document's objects and arrays nest.
	MaxJSONDepth = 64
	// MaxComponentDepth bounds how deeply CycloneDX components nest.
	MaxComponentDepth = 16
)

// ErrInvalid is matched (errors.Is) by every error of the parsers: the
// document is malformed, of a format or version not supported, or over a
// bound. Such errors carry gRPC status InvalidArgument.
var ErrInvalid = errors.New("invalid SBOM")

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return "invalid SBOM: " + e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }
func (e *invalidError) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

// maxErrLen bounds the text a library's error may add to ours: it can
// quote the document.
const maxErrLen = 160

func invalid(format string, args ...any) error {
	return &invalidError{msg: quote.Clip(fmt.Sprintf(format, args...), maxErrLen)}
}

// scan checks the document's size, nesting depth and object count in one
// pass over the bytes, without allocating. It does not check that the
// document is JSON: the decoder that follows does.
func scan(b []byte) error {
	if len(b) > MaxBytes {
		return invalid("%d bytes, more than %d", len(b), MaxBytes)
	}
	depth, objects := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > MaxJSONDepth {
				return invalid("nested more than %d deep", MaxJSONDepth)
			}
			if c == '{' {
				objects++
				if objects > MaxObjects {
					return invalid("more than %d JSON objects", MaxObjects)
				}
			}
		case '}', ']':
			depth--
		}
	}
	return nil
}

// guarded runs a library's decoder, turning a panic into an error: the
// SPDX library dereferences a null package (tools-golang v0.5.7,
// v2_3.Document.UnmarshalJSON), and a document must not crash its reader.
func guarded(decode func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoder failed on the document: %v", r)
		}
	}()
	return decode()
}

// ParseCycloneDX parses a CycloneDX 1.5 or 1.6 JSON document into its
// components, nested ones included, in document order (a component before
// the ones it contains).
func ParseCycloneDX(b []byte) ([]Component, error) {
	if err := scan(b); err != nil {
		return nil, err
	}
	var bom cdx.BOM
	if err := guarded(func() error {
		return cdx.NewBOMDecoder(bytes.NewReader(b), cdx.BOMFileFormatJSON).Decode(&bom)
	}); err != nil {
		return nil, invalid("CycloneDX: %v", err)
	}
	if bom.BOMFormat != cdx.BOMFormat {
		return nil, invalid("CycloneDX: bomFormat %q, want %q", bom.BOMFormat, cdx.BOMFormat)
	}
	if bom.SpecVersion != cdx.SpecVersion1_5 && bom.SpecVersion != cdx.SpecVersion1_6 {
		return nil, invalid("CycloneDX: specVersion %s, want 1.5 or 1.6", bom.SpecVersion)
	}
	var out []Component
	var walk func(cs *[]cdx.Component, depth int) error
	walk = func(cs *[]cdx.Component, depth int) error {
		if cs == nil {
			return nil
		}
		if depth > MaxComponentDepth {
			return invalid("CycloneDX: components nested more than %d deep", MaxComponentDepth)
		}
		for i := range *cs {
			c := &(*cs)[i]
			if len(out) == MaxComponents {
				return invalid("more than %d components", MaxComponents)
			}
			out = append(out, Component{
				PURL:    c.PackageURL,
				Name:    c.Name,
				Version: c.Version,
				License: cdxLicense(c.Licenses),
			})
			if err := walk(c.Components, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(bom.Components, 1); err != nil {
		return nil, err
	}
	return out, nil
}

// cdxLicense turns a component's licence choices into one SPDX expression:
// an expression as given, a licence by its SPDX id; several choices are all
// required (AND). A licence known only by name is no SPDX expression and is
// left out; with nothing left the licence is unknown ("").
func cdxLicense(ls *cdx.Licenses) string {
	if ls == nil {
		return ""
	}
	var parts []string
	for _, l := range *ls {
		switch {
		case l.Expression != "":
			parts = append(parts, strings.TrimSpace(l.Expression))
		case l.License != nil && l.License.ID != "":
			parts = append(parts, l.License.ID)
		}
	}
	return and(parts)
}

func and(parts []string) string {
	if len(parts) == 1 {
		return parts[0]
	}
	for i, p := range parts {
		if strings.ContainsAny(p, " \t") {
			parts[i] = "(" + p + ")"
		}
	}
	return strings.Join(parts, " AND ")
}

// ParseSPDX parses an SPDX 2.3 JSON document into its packages as
// components: the purl from the package's PACKAGE-MANAGER purl external
// reference, the licence concluded, or else the one declared (NOASSERTION
// and NONE are no licence known).
func ParseSPDX(b []byte) ([]Component, error) {
	if err := scan(b); err != nil {
		return nil, err
	}
	var doc v2_3.Document
	if err := guarded(func() error { return json.Unmarshal(b, &doc) }); err != nil {
		return nil, invalid("SPDX: %v", err)
	}
	if doc.SPDXVersion != v2_3.Version {
		return nil, invalid("SPDX: spdxVersion %q, want %q", doc.SPDXVersion, v2_3.Version)
	}
	if len(doc.Packages) > MaxComponents {
		return nil, invalid("more than %d components", MaxComponents)
	}
	out := make([]Component, 0, len(doc.Packages))
	for _, p := range doc.Packages {
		if p == nil {
			return nil, invalid("SPDX: a package is null")
		}
		c := Component{Name: p.PackageName, Version: p.PackageVersion}
		for _, r := range p.PackageExternalReferences {
			if r != nil && r.Category == "PACKAGE-MANAGER" && r.RefType == "purl" {
				c.PURL = r.Locator
				break
			}
		}
		c.License = spdxLicense(p.PackageLicenseConcluded)
		if c.License == "" {
			c.License = spdxLicense(p.PackageLicenseDeclared)
		}
		out = append(out, c)
	}
	return out, nil
}

func spdxLicense(s string) string {
	s = strings.TrimSpace(s)
	if s == "NOASSERTION" || s == "NONE" {
		return ""
	}
	return s
}

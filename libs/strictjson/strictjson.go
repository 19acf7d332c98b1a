// Package strictjson decodes JSON from untrusted bytes so that every parser
// in Custody reads the same value from the same bytes, or refuses them.
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/custody-dev/custody/libs/quote"
)

// MaxDepth bounds how deeply objects and arrays may nest.
const MaxDepth = 64

// ErrInvalid is wrapped by every error of Decode.
var ErrInvalid = errors.New("invalid JSON")

// maxErrLen bounds the text of a wrapped encoding/json error, which can
// repeat a whole string value (a time, for instance).
const maxErrLen = 160

// Decode decodes b into v, a non-nil pointer, refusing what encoding/json
// would let through:
//   - more than max bytes, or bytes that are not UTF-8;
//   - anything but exactly one JSON value (an object when v points to a
//     struct), with nothing but white space after it;
//   - a key that is not one of the target struct's JSON field names, spelled
//     exactly (encoding/json matches names case-insensitively);
//   - a key repeated in one object, anywhere, also inside json.RawMessage
//     and other values decoded later (encoding/json keeps the last one, so
//     two parsers could read different values from the same bytes);
//   - nesting deeper than MaxDepth.
//
// Inside a value whose type implements json.Unmarshaler or
// encoding.TextUnmarshaler (json.RawMessage, time.Time), keys are not
// checked against a type, only for repeats. Errors wrap ErrInvalid and quote
// at most a short prefix of the input. Decode is safe for concurrent use.
func Decode(b []byte, max int, v any) error {
	if err := Check(b, max, v); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalid, quote.Clip(strings.TrimPrefix(err.Error(), "json: "), maxErrLen))
	}
	return nil
}

// Check refuses what Decode(b, max, v) refuses, with the same error,
// without decoding: everything but a value that does not fit v's field
// types (a string where v has a number). v is only looked at for its type.
// For a target that takes any value at every field, a struct of
// json.RawMessage fields, Check and Decode agree exactly
// (FuzzCheckAgreesWithDecode); it is for callers that only need to know
// that b would be accepted, as tlog.Entry.Marshal for an entry's details,
// and spares them encoding/json's second pass and copy.
func Check(b []byte, max int, v any) error {
	if len(b) > max {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(b), max)
	}
	if !utf8.Valid(b) {
		return fmt.Errorf("%w: not UTF-8", ErrInvalid)
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("%w: decode into %T, want a non-nil pointer", ErrInvalid, v)
	}
	if err := check(b, rv.Type().Elem()); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalid, quote.Clip(err.Error(), maxErrLen))
	}
	return nil
}

// check refuses what encoding/json would let through in b, a JSON value
// to be decoded into t: repeated keys, keys that are not t's field names,
// nesting deeper than MaxDepth. It scans bytes that encoding/json's own
// scanner found valid in one pass without allocating per token (the token
// walk it replaced cost the catalog about a tenth of its CPU per event,
// decision 0068); the syntax errors of invalid input are left to
// encoding/json, which names them.
func check(b []byte, t reflect.Type) error {
	if !json.Valid(b) {
		if len(bytes.TrimLeft(b, " \t\r\n")) == 0 {
			return errors.New("no JSON value")
		}
		var v any
		err := json.Unmarshal(b, &v)
		if err == nil {
			err = errors.New("not a JSON value")
		}
		msg := strings.TrimPrefix(err.Error(), "json: ")
		if strings.HasSuffix(msg, "after top-level value") {
			return fmt.Errorf("data after the JSON value (%s)", msg)
		}
		return errors.New(msg)
	}
	sc := scanner{b: b}
	return sc.value(t)
}

// scanner walks a syntactically valid JSON value.
type scanner struct {
	b     []byte
	i     int
	stack []frame
}

// frame is one open object or array.
type frame struct {
	object bool
	shape  shape // of the container
	// keys seen in an object, kept in a map once there are many.
	keys   [][]byte
	keyset map[string]struct{}
}

// manyKeys is the number of keys of one object from which repeats are
// looked up in a map rather than by comparing with each.
const manyKeys = 16

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str skips the string at s.i and returns its contents as written and
// whether it holds escapes.
func (s *scanner) str() ([]byte, bool) {
	start := s.i + 1
	escaped := false
	j := start
	for s.b[j] != '"' {
		if s.b[j] == '\\' {
			escaped = true
			j++
		}
		j++
	}
	s.i = j + 1
	return s.b[start:j], escaped
}

// key reads an object key and checks it against the innermost object,
// returning the type of its value.
func (s *scanner) key() (reflect.Type, error) {
	quoted := s.i
	raw, escaped := s.str()
	k := raw
	if escaped {
		var u string
		if err := json.Unmarshal(s.b[quoted:s.i], &u); err != nil {
			return nil, err
		}
		k = []byte(u)
	}
	top := &s.stack[len(s.stack)-1]
	if top.keyset != nil {
		if _, dup := top.keyset[string(k)]; dup {
			return nil, fmt.Errorf("duplicate key %q", quote.Prefix(string(k)))
		}
		top.keyset[string(k)] = struct{}{}
	} else {
		for _, seen := range top.keys {
			if bytes.Equal(seen, k) {
				return nil, fmt.Errorf("duplicate key %q", quote.Prefix(string(k)))
			}
		}
		top.keys = append(top.keys, k)
		if len(top.keys) == manyKeys {
			top.keyset = make(map[string]struct{}, 2*manyKeys)
			for _, seen := range top.keys {
				top.keyset[string(seen)] = struct{}{}
			}
		}
	}
	s.ws()
	s.i++ // ':'
	if top.shape.fields != nil {
		ft, ok := top.shape.fields[string(k)]
		if !ok {
			return nil, fmt.Errorf("unknown field %q", quote.Prefix(string(k)))
		}
		return ft, nil
	}
	return top.shape.elem, nil
}

// value walks the whole value at s.i, to be decoded into t (nil: anything).
func (s *scanner) value(t reflect.Type) error {
	s.ws()
	if s.b[s.i] != '{' && shapeOf(t).fields != nil {
		return errors.New("want a JSON object")
	}
	vt := t
	for {
		// A value starts at s.i.
		s.ws()
		switch c := s.b[s.i]; c {
		case '{', '[':
			if len(s.stack) >= MaxDepth {
				return fmt.Errorf("nested more than %d deep", MaxDepth)
			}
			s.stack = append(s.stack, frame{object: c == '{', shape: shapeOf(vt)})
			s.i++
			s.ws()
			if s.b[s.i] == '}' || s.b[s.i] == ']' {
				s.i++
				s.stack = s.stack[:len(s.stack)-1]
				break
			}
			top := &s.stack[len(s.stack)-1]
			if !top.object {
				vt = top.shape.elem
				continue
			}
			next, err := s.key()
			if err != nil {
				return err
			}
			vt = next
			continue
		case '"':
			s.str()
		default:
			// A number, true, false or null.
			for s.i < len(s.b) && !isDelim(s.b[s.i]) {
				s.i++
			}
		}
		// A value ended: the next one, or the end of containers.
		for {
			if len(s.stack) == 0 {
				return nil
			}
			s.ws()
			top := &s.stack[len(s.stack)-1]
			if s.b[s.i] == ',' {
				s.i++
				if !top.object {
					vt = top.shape.elem
					break
				}
				s.ws()
				next, err := s.key()
				if err != nil {
					return err
				}
				vt = next
				break
			}
			s.i++ // '}' or ']'
			s.stack = s.stack[:len(s.stack)-1]
		}
	}
}

func isDelim(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// shape is what check needs to know about a Go type: the exact JSON names
// of a struct's fields, or the type of a map's or slice's elements. The zero
// shape accepts any JSON.
type shape struct {
	fields map[string]reflect.Type
	elem   reflect.Type
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	shapes          sync.Map // reflect.Type → shape
)

func shapeOf(t reflect.Type) shape {
	if t == nil {
		return shape{}
	}
	if s, ok := shapes.Load(t); ok {
		return s.(shape)
	}
	s := computeShape(t)
	shapes.Store(t, s)
	return s
}

func computeShape(t reflect.Type) shape {
	for t.Kind() == reflect.Pointer {
		if customDecoding(t) {
			return shape{}
		}
		t = t.Elem()
	}
	if customDecoding(t) {
		return shape{}
	}
	switch t.Kind() {
	case reflect.Struct:
		fields := map[string]reflect.Type{}
		addFields(fields, t, 0)
		return shape{fields: fields}
	case reflect.Map, reflect.Slice, reflect.Array:
		return shape{elem: t.Elem()}
	}
	return shape{}
}

func customDecoding(t reflect.Type) bool {
	return t.Implements(jsonUnmarshaler) || t.Implements(textUnmarshaler) ||
		reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler)
}

// addFields adds the JSON names of t's fields as encoding/json sees them,
// including those promoted from untagged embedded structs.
func addFields(fields map[string]reflect.Type, t reflect.Type, depth int) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct && depth < 8 {
				addFields(fields, et, depth+1)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, ok := fields[name]; !ok || depth == 0 {
			fields[name] = f.Type
		}
	}
}

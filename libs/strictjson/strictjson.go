// Package strictjson decodes JSON from untrusted bytes so that every parser
// in Custody reads the same value from the same bytes, or refuses them.
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalid, quote.Clip(strings.TrimPrefix(err.Error(), "json: "), maxErrLen))
	}
	return nil
}

// frame is one open object or array.
type frame struct {
	object  bool
	wantKey bool
	keys    map[string]bool
	shape   shape        // of the container
	next    reflect.Type // of the value after the last key, or of each array element
}

// check walks the tokens of b once, against the shape of t.
func check(b []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var stack []*frame
	root := shapeOf(t)
	started := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if !started {
				return errors.New("no JSON value")
			}
			if len(stack) > 0 {
				return errors.New("unexpected end of JSON")
			}
			return nil
		}
		if err != nil {
			return errors.New(strings.TrimPrefix(err.Error(), "json: "))
		}
		if started && len(stack) == 0 {
			return errors.New("data after the JSON value")
		}
		// The type the value at this position decodes into; nil for anything.
		var vt reflect.Type
		if len(stack) == 0 {
			vt = t
			if root.fields != nil && tok != json.Delim('{') {
				return errors.New("want a JSON object")
			}
			started = true
		} else {
			top := stack[len(stack)-1]
			if top.object && top.wantKey {
				if d, ok := tok.(json.Delim); ok && d == '}' {
					stack = stack[:len(stack)-1]
					valueDone(stack)
					continue
				}
				k, _ := tok.(string)
				if top.keys[k] {
					return fmt.Errorf("duplicate key %q", quote.Prefix(k))
				}
				top.keys[k] = true
				top.wantKey = false
				top.next = top.shape.elem
				if top.shape.fields != nil {
					ft, ok := top.shape.fields[k]
					if !ok {
						return fmt.Errorf("unknown field %q", quote.Prefix(k))
					}
					top.next = ft
				}
				continue
			}
			vt = top.next
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= MaxDepth {
				return fmt.Errorf("nested more than %d deep", MaxDepth)
			}
			s := shapeOf(vt)
			f := &frame{object: tok == json.Delim('{'), shape: s, next: s.elem}
			if f.object {
				f.wantKey, f.keys = true, map[string]bool{}
			}
			stack = append(stack, f)
		case json.Delim(']'), json.Delim('}'):
			stack = stack[:len(stack)-1]
			valueDone(stack)
		default:
			valueDone(stack)
		}
	}
}

// valueDone records that the innermost open container got a whole value.
func valueDone(stack []*frame) {
	if len(stack) > 0 && stack[len(stack)-1].object {
		stack[len(stack)-1].wantKey = true
	}
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

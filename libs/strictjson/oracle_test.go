package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/custody-dev/custody/libs/quote"
)

// tokenFrame is one open object or array of the token walk.
type tokenFrame struct {
	object  bool
	wantKey bool
	keys    map[string]bool
	shape   shape        // of the container
	next    reflect.Type // of the value after the last key, or of each array element
}

// checkTokens is the token walk check replaced, kept as its oracle: it
// reads b with encoding/json's Decoder.Token.
func checkTokens(b []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var stack []*tokenFrame
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
					tokenValueDone(stack)
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
			f := &tokenFrame{object: tok == json.Delim('{'), shape: s, next: s.elem}
			if f.object {
				f.wantKey, f.keys = true, map[string]bool{}
			}
			stack = append(stack, f)
		case json.Delim(']'), json.Delim('}'):
			stack = stack[:len(stack)-1]
			tokenValueDone(stack)
		default:
			tokenValueDone(stack)
		}
	}
}

// tokenValueDone records that the innermost open container got a whole value.
func tokenValueDone(stack []*tokenFrame) {
	if len(stack) > 0 && stack[len(stack)-1].object {
		stack[len(stack)-1].wantKey = true
	}
}

// The byte scanner refuses exactly what the token walk refused, with the
// same message for a valid JSON value, into every kind of target.
func FuzzCheckMatchesTokenWalk(f *testing.F) {
	many := func(dupAt int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range 40 {
			if i > 0 {
				b.WriteString(",")
			}
			k := i
			if i == dupAt {
				k = 3
			}
			fmt.Fprintf(&b, `"k%d":%d`, k, i)
		}
		b.WriteString("}")
		return b.String()
	}
	for _, s := range []string{
		`{"type":"a","sub":{"name":"x","n":1},"list":[{"name":"y"},{"name":"z","n":-1.5e10}],"details":{"d":[1,{"e":null}]},"any":[true,1.5,"s"]}`,
		`{"type":"a","\u0074ype":"b"}`, `{"type":"a\"}","sub":{}}`, `{"details":{"a":1,"a":2}}`, `{"any":{"x":[{"y":1,"y":2}]}}`,
		`{"map":{"a":{"name":"x"},"a":{"name":"y"}}}`, `{"map":{"a":{"nom":"x"}}}`, `{"list":[{"name":"x","bad":1}]}`,
		`{"labels":{}}`, `{"list":[]}`, `{ "type" : "a" , "Untag" : "b" }`, `{"Type":"a"}`, `{"extra":"e"}`,
		`[]`, `null`, `"s"`, `1`, `{"type":"\ud83d\ude00"}`, many(-1), many(20), many(10),
		strings.Repeat("[", 64) + strings.Repeat("]", 64), strings.Repeat("[", 65) + strings.Repeat("]", 65),
		`{"any":` + strings.Repeat(`{"a":`, 63) + `1` + strings.Repeat("}", 63) + `}`,
	} {
		f.Add([]byte(s))
	}
	types := []reflect.Type{reflect.TypeFor[doc](), reflect.TypeFor[map[string]any](), reflect.TypeFor[any](),
		reflect.TypeFor[[]inner](), reflect.TypeFor[json.RawMessage]()}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) || !utf8.Valid(b) {
			return // syntax errors are encoding/json's to name; Decode refuses what is not UTF-8 first
		}
		for _, typ := range types {
			got, want := check(b, typ), checkTokens(b, typ)
			if (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
				t.Fatalf("%s into %v: scanner says %v, token walk %v", b, typ, got, want)
			}
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	leaf := []byte(`{"type":"admission.decided","time":"2026-12-02T07:00:00.123456789Z","actor":"spiffe://custody.test/service/gatekeeper","subject":{"digest":"sha256:aaaa"},"details":{"decision_id":"123456","env":"prod","allow":true,"reasons":["a","b"]}}`)
	typ := reflect.TypeFor[map[string]any]()
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := check(leaf, typ); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tokens", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := checkTokens(leaf, typ); err != nil {
				b.Fatal(err)
			}
		}
	})
}

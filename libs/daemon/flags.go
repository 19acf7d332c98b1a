// Package daemon wires the parts every Custody service process shares:
// configuration from flags and environment, logging, telemetry, SPIFFE
// identity, listeners and graceful shutdown.
package daemon

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Flags registers flags whose defaults come from environment variables, so
// that a flag given on the command line wins over the environment, which wins
// over the built-in default.
type Flags struct {
	*flag.FlagSet
	getenv func(string) string
	errs   []error
}

// NewFlags returns a flag set named name that reads defaults through getenv.
func NewFlags(name string, getenv func(string) string) *Flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return &Flags{FlagSet: fs, getenv: getenv}
}

func (f *Flags) usage(usage, env string) string {
	if env == "" {
		return usage
	}
	return usage + " (env " + env + ")"
}

// String defines a string flag with an environment fallback.
func (f *Flags) String(p *string, name, env, def, usage string) {
	if v := f.env(env); v != "" {
		def = v
	}
	f.StringVar(p, name, def, f.usage(usage, env))
}

// Strings defines a repeatable string flag; the environment variable holds a
// comma-separated list. Like every other flag, the command line wins: the
// first occurrence of the flag replaces the environment's list, and later
// occurrences add to it.
func (f *Flags) Strings(p *[]string, name, env, usage string) {
	if v := f.env(env); v != "" {
		*p = strings.Split(v, ",")
	}
	f.Var(&stringList{p: p}, name, f.usage(usage+" (repeatable)", env))
}

// Entries is Strings for values that may hold commas themselves (such as
// FILE,valid-from=T): the environment variable holds entries separated by
// white space. The command line wins as for Strings.
func (f *Flags) Entries(p *[]string, name, env, usage string) {
	if v := f.env(env); v != "" {
		*p = strings.Fields(v)
	}
	f.Var(&stringList{p: p}, name, f.usage(usage+" (repeatable; in the environment separated by spaces)", env))
}

// Int defines an integer flag with an environment fallback.
func (f *Flags) Int(p *int, name, env string, def int, usage string) {
	if v := f.env(env); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: want an integer", env, v))
		}
		def = n
	}
	f.IntVar(p, name, def, f.usage(usage, env))
}

// Bool defines a boolean flag with an environment fallback.
func (f *Flags) Bool(p *bool, name, env string, def bool, usage string) {
	if v := f.env(env); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: want true or false", env, v))
		}
		def = b
	}
	f.BoolVar(p, name, def, f.usage(usage, env))
}

// Duration defines a duration flag with an environment fallback.
func (f *Flags) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v := f.env(env); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: want a duration such as 30s", env, v))
		}
		def = d
	}
	f.DurationVar(p, name, def, f.usage(usage, env))
}

func (f *Flags) env(name string) string {
	if name == "" {
		return ""
	}
	return f.getenv(name)
}

// Parse parses args and reports bad environment values too.
func (f *Flags) Parse(args []string) error {
	if err := f.FlagSet.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		f.errs = append(f.errs, fmt.Errorf("unexpected arguments: %q", f.Args()))
	}
	if len(f.errs) > 0 {
		return joinLines(f.errs)
	}
	return nil
}

// stringList is a repeatable flag whose first Set discards the value that
// came from the environment.
type stringList struct {
	p   *[]string
	set bool
}

func (s *stringList) String() string {
	if s == nil || s.p == nil {
		return ""
	}
	return strings.Join(*s.p, ",")
}

func (s *stringList) Set(v string) error {
	if !s.set {
		*s.p = nil
		s.set = true
	}
	*s.p = append(*s.p, v)
	return nil
}

package artifact

import (
	"strings"
	"testing"
)

func TestRules(t *testing.T) {
	for _, tt := range []struct {
		f    func(string) bool
		in   string
		want bool
	}{
		{ValidName, "app", true}, {ValidName, "team/app-x_1.2", true}, {ValidName, "", false},
		{ValidName, "/app", false}, {ValidName, "app/", false}, {ValidName, "a//b", false}, {ValidName, "a/../b", false},
		{ValidName, "app@1", false}, {ValidName, strings.Repeat("a", MaxNameLen+1), false},
		{ValidVersion, "1.0.0-rc.1+build.5", true}, {ValidVersion, "-1", false}, {ValidVersion, "1/2", false}, {ValidVersion, "", false},
		{ValidChannel, "staging", true}, {ValidChannel, "", false}, {ValidChannel, "a b", false},
		{ValidEnvironment, "prod", true}, {ValidEnvironment, "eu-west_1", true}, {ValidEnvironment, "", false}, {ValidEnvironment, "Prod", false},
		{ValidEnvironment, "-prod", false}, {ValidEnvironment, "prod\n", false}, {ValidEnvironment, strings.Repeat("p", MaxEnvironmentLen+1), false},
	} {
		if got := tt.f(tt.in); got != tt.want {
			t.Errorf("%q: %v, want %v", tt.in, got, tt.want)
		}
	}
}

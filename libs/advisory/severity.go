package advisory

import (
	"strings"

	osv "github.com/ossf/osv-schema/bindings/go/osvschema"
	cvss30 "github.com/pandatix/go-cvss/30"
	cvss31 "github.com/pandatix/go-cvss/31"
	cvss40 "github.com/pandatix/go-cvss/40"
)

// Severity is an advisory's qualitative severity, the CVSS rating of its
// base score. The zero value is SeverityUnknown.
type Severity string

// Severities, from least to most severe. SeverityUnknown is an advisory
// that states no CVSS v3 or v4 vector Custody can score and no rating of
// its database: a policy decides how to treat it (decision 0077).
const (
	SeverityUnknown  Severity = ""
	SeverityNone     Severity = "NONE"
	SeverityLow      Severity = "LOW"
	SeverityMedium   Severity = "MEDIUM"
	SeverityHigh     Severity = "HIGH"
	SeverityCritical Severity = "CRITICAL"
)

// Rank orders severities: 0 for unknown, 1 for NONE up to 5 for CRITICAL.
func (s Severity) Rank() int {
	switch s {
	case SeverityNone:
		return 1
	case SeverityLow:
		return 2
	case SeverityMedium:
		return 3
	case SeverityHigh:
		return 4
	case SeverityCritical:
		return 5
	}
	return 0
}

// String returns the rating, or "UNKNOWN".
func (s Severity) String() string {
	if s == SeverityUnknown {
		return "UNKNOWN"
	}
	return string(s)
}

// ScoreVector returns the CVSS base score of a v3.0, v3.1 or v4.0 vector
// and its rating, computed with github.com/pandatix/go-cvss; ok is false
// for any other or malformed vector.
func ScoreVector(vector string) (score float64, sev Severity, ok bool) {
	var rating string
	var err error
	switch {
	case strings.HasPrefix(vector, "CVSS:3.0/"):
		var c *cvss30.CVSS30
		if c, err = cvss30.ParseVector(vector); err == nil {
			score = c.BaseScore()
			rating, err = cvss30.Rating(score)
		}
	case strings.HasPrefix(vector, "CVSS:3.1/"):
		var c *cvss31.CVSS31
		if c, err = cvss31.ParseVector(vector); err == nil {
			score = c.BaseScore()
			rating, err = cvss31.Rating(score)
		}
	case strings.HasPrefix(vector, "CVSS:4.0/"):
		var c *cvss40.CVSS40
		if c, err = cvss40.ParseVector(vector); err == nil {
			score = c.Score()
			rating, err = cvss40.Rating(score)
		}
	default:
		return 0, SeverityUnknown, false
	}
	if err != nil {
		return 0, SeverityUnknown, false
	}
	return score, Severity(rating), true
}

// severityOf rates v: the highest rating of the CVSS v3 and v4 vectors it
// states (at the top and in each affected package); without one, the
// rating its database states in database_specific.severity (GitHub's
// LOW/MODERATE/HIGH/CRITICAL); else unknown.
func severityOf(v *osv.Vulnerability) Severity {
	best := SeverityUnknown
	consider := func(ss []*osv.Severity) {
		for _, s := range ss {
			switch s.GetType() {
			case osv.Severity_CVSS_V3, osv.Severity_CVSS_V4:
			default:
				continue
			}
			if _, sev, ok := ScoreVector(s.GetScore()); ok && sev.Rank() > best.Rank() {
				best = sev
			}
		}
	}
	consider(v.GetSeverity())
	for _, a := range v.GetAffected() {
		consider(a.GetSeverity())
	}
	if best != SeverityUnknown {
		return best
	}
	if f := v.GetDatabaseSpecific().GetFields()["severity"]; f != nil {
		switch strings.ToUpper(f.GetStringValue()) {
		case "LOW":
			return SeverityLow
		case "MODERATE", "MEDIUM":
			return SeverityMedium
		case "HIGH":
			return SeverityHigh
		case "CRITICAL":
			return SeverityCritical
		}
	}
	return SeverityUnknown
}

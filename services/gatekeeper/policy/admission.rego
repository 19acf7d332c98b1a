# Custody's default admission policy.
#
# The gatekeeper evaluates data.custody.admission.deny with this input:
#
#   artifact:     {name, version, digest, size, channel, builder_id,
#                  source_repo, source_commit, created_at}
#   environment:  where the artifact is to be deployed
#   verification: {signature, subject_match, log_inclusion, checkpoint,
#                  blob_integrity: bool each, messages: [string]}
#   trust_domain: the deployment's SPIFFE trust domain
#   sbom:         {attached: bool, components: [{purl, name, version,
#                  license}]}: the artifact's verified SBOM; attached is
#                  false when it has none (or its evidence failed)
#
# Each element of deny is one reason to refuse; an empty set admits. Each
# element of warn is reported with an allow decision and does not deny. The
# gatekeeper denies on its own when any verification check failed, when
# this policy cannot be evaluated, and when deny is undefined.
package custody.admission

# The channels each environment accepts: an artifact from prod may go to
# any environment, one from staging to staging and dev, one from dev to dev
# only.
allowed_channels := {
	"dev": {"dev", "staging", "prod"},
	"staging": {"staging", "prod"},
	"prod": {"prod"},
}

environments := object.keys(allowed_channels)

required_checks := {"signature", "subject_match", "log_inclusion", "checkpoint", "blob_integrity"}

environment := object.get(input, "environment", "")

channel := object.get(input, ["artifact", "channel"], "")

builder_id := object.get(input, ["artifact", "builder_id"], "")

trust_domain := object.get(input, "trust_domain", "")

deny contains msg if {
	not environment in environments
	msg := sprintf("environment %q is unknown: want one of %s", [environment, concat(", ", sort(environments))])
}

deny contains msg if {
	not channel in environments
	msg := sprintf("channel %q is unknown: want one of %s", [channel, concat(", ", sort(environments))])
}

deny contains msg if {
	environment in environments
	channel in environments
	not channel in allowed_channels[environment]
	msg := sprintf("channel %q may not deploy to %q: %q accepts channels %s", [
		channel, environment, environment,
		concat(", ", sort(allowed_channels[environment])),
	])
}

builder_prefix := sprintf("spiffe://%s/builder/", [trust_domain])

trusted_builder if {
	trust_domain != ""
	startswith(builder_id, builder_prefix)
	pipeline := substring(builder_id, count(builder_prefix), -1)
	pipeline != ""
	not contains(pipeline, "/")
}

deny contains msg if {
	not trusted_builder
	msg := sprintf("builder %q is not a builder of trust domain %q (want spiffe://%s/builder/<pipeline>)", [builder_id, trust_domain, trust_domain])
}

failed_checks contains check if {
	some check in required_checks
	not input.verification[check] == true
}

messages := input.verification.messages if {
	is_array(input.verification.messages)
} else := []

# The verifier explains each failed check; its messages are the reasons.
deny contains msg if {
	count(failed_checks) > 0
	some msg in messages
}

# A check that failed without an explanation still denies.
deny contains msg if {
	count(messages) == 0
	some check in failed_checks
	msg := sprintf("verification check %q did not pass", [check])
}

# Licences (decision 0092). Per environment: allow, the licences accepted
# (empty: every licence not denied); deny, the licences refused whatever
# allow says; unknown, what a component whose licence is missing,
# NOASSERTION, unparseable, not on the SPDX list or a LicenseRef on neither
# list gets: "deny", "warn" or "allow"; no_sbom, the same for an artifact
# without a verified SBOM. custody.licences evaluates each component's SPDX
# expression (custody.licence(expression, rule) judges one): A OR B passes
# if either side is accepted, A AND B needs both,
# "X WITH E" is its own licence (allowing X allows it; denying X does not
# deny it), "+" and -or-later are ranges (denying GPL-3.0-or-later denies
# GPL-2.0-or-later, which may be taken as GPL-3.0).
copyleft := [
	"GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later",
	"AGPL-1.0-only", "AGPL-1.0-or-later", "AGPL-3.0-only", "AGPL-3.0-or-later",
	"SSPL-1.0",
]

licence_rules := {
	"dev": {"allow": [], "deny": [], "unknown": "allow", "no_sbom": "allow"},
	"staging": {"allow": [], "deny": ["AGPL-3.0-only", "AGPL-3.0-or-later", "SSPL-1.0"], "unknown": "warn", "no_sbom": "warn"},
	"prod": {"allow": [], "deny": copyleft, "unknown": "deny", "no_sbom": "warn"},
}

licence_actions := {"deny", "warn", "allow"}

licence_rule := licence_rules[environment]

licence_action(what) := a if {
	a := object.get(licence_rule, what, "deny")
	a in licence_actions
}

deny contains msg if {
	some what in ["unknown", "no_sbom"]
	not licence_action(what)
	msg := sprintf("licence rule of %q: %s is %s, want one of deny, warn, allow", [environment, what, json.marshal(object.get(licence_rule, what, null))])
}

sbom_attached := object.get(input, ["sbom", "attached"], false)

components := object.get(input, ["sbom", "components"], [])

# custody.licences judges every component (each distinct expression once)
# and returns those not allowed: {component (purl, else name@version),
# expression, verdict, licences, problem}.
licence_findings contains f if {
	sbom_attached == true
	rule := licence_rule
	some f in custody.licences(components, {"allow": object.get(rule, "allow", []), "deny": object.get(rule, "deny", [])})
}

deny contains msg if {
	some f in licence_findings
	f.verdict == "denied"
	msg := sprintf("component %s has licence %s, denied in %s (deny list: %s)", [f.component, f.expression, environment, concat(", ", f.licences)])
}

deny contains msg if {
	some f in licence_findings
	f.verdict == "not_allowed"
	msg := sprintf("component %s has licence %s, not allowed in %s (not on its allow list: %s)", [f.component, f.expression, environment, concat(", ", f.licences)])
}

unknown_licence_message(f) := sprintf("component %s has an unknown licence in %s: %s", [f.component, environment, f.problem]) if {
	count(f.licences) == 0
} else := sprintf("component %s has an unknown licence in %s: %s (%s)", [f.component, environment, f.problem, concat(", ", f.licences)])

deny contains unknown_licence_message(f) if {
	licence_action("unknown") == "deny"
	some f in licence_findings
	f.verdict == "unknown"
}

warn contains unknown_licence_message(f) if {
	licence_action("unknown") == "warn"
	some f in licence_findings
	f.verdict == "unknown"
}

no_sbom_message := sprintf("artifact has no verified SBOM, so its licences were not checked for %s", [environment])

deny contains no_sbom_message if {
	licence_rule
	sbom_attached != true
	licence_action("no_sbom") == "deny"
}

warn contains no_sbom_message if {
	licence_rule
	sbom_attached != true
	licence_action("no_sbom") == "warn"
}

# Vulnerabilities (decision 0094). input.sbom.vulnerabilities are the
# advisories affecting the verified SBOM's components, matched by the
# gatekeeper (libs/advisory) against the advisory documents: {advisory,
# severity, component, reason, uncertain}. Per environment: deny_at, the
# lowest severity denied ("NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL", or
# "never"); unknown, what an advisory without a severity Custody can rate
# gets: "deny", "warn" or "allow". A match whose version could not be
# compared (uncertain) counts as affected.
vulnerability_rules := {
	"dev": {"deny_at": "never", "unknown": "allow"},
	"staging": {"deny_at": "CRITICAL", "unknown": "warn"},
	"prod": {"deny_at": "HIGH", "unknown": "deny"},
}

severity_rank := {"NONE": 1, "LOW": 2, "MEDIUM": 3, "HIGH": 4, "CRITICAL": 5}

vulnerability_rule := object.get(vulnerability_rules, environment, {})

deny_at := vulnerability_rule.deny_at

deny_at_rank := severity_rank[deny_at]

deny_at_valid if deny_at_rank

deny_at_valid if deny_at == "never"

vulnerability_unknown := a if {
	a := object.get(vulnerability_rule, "unknown", "deny")
	a in licence_actions
}

deny contains msg if {
	environment in environments
	not deny_at_valid
	msg := sprintf("vulnerability rule of %q: deny_at is %s, want one of NONE, LOW, MEDIUM, HIGH, CRITICAL, never", [environment, json.marshal(object.get(vulnerability_rule, "deny_at", null))])
}

deny contains msg if {
	environment in environments
	not vulnerability_unknown
	msg := sprintf("vulnerability rule of %q: unknown is %s, want one of deny, warn, allow", [environment, json.marshal(object.get(vulnerability_rule, "unknown", null))])
}

vulnerabilities := object.get(input, ["sbom", "vulnerabilities"], [])

uncertain_note(v) := " (its version could not be compared, so it is taken as affected)" if {
	v.uncertain == true
} else := ""

deny contains msg if {
	some v in vulnerabilities
	severity_rank[v.severity] >= deny_at_rank
	msg := sprintf("component %s is affected by %s (%s), denied in %s at %s and above%s", [v.component, v.advisory, v.severity, environment, deny_at, uncertain_note(v)])
}

unknown_severity_message(v) := sprintf("component %s is affected by %s, whose severity is unknown, in %s%s", [v.component, v.advisory, environment, uncertain_note(v)])

deny contains unknown_severity_message(v) if {
	vulnerability_unknown == "deny"
	some v in vulnerabilities
	not severity_rank[v.severity]
}

warn contains unknown_severity_message(v) if {
	vulnerability_unknown == "warn"
	some v in vulnerabilities
	not severity_rank[v.severity]
}

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
#
# Each element of deny is one reason to refuse; an empty set admits. The
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

package custody.admission_test

import data.custody.admission

good := {
	"artifact": {
		"name": "app",
		"version": "1.4.0",
		"digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"size": 4,
		"channel": "prod",
		"builder_id": "spiffe://custody.test/builder/ci",
		"source_repo": "https://git.example/app",
		"source_commit": "3f2a",
		"created_at": "2026-01-02T03:04:05Z",
	},
	"environment": "prod",
	"verification": {
		"signature": true,
		"subject_match": true,
		"log_inclusion": true,
		"checkpoint": true,
		"blob_integrity": true,
		"messages": [],
	},
	"trust_domain": "custody.test",
}

with_channel(channel, env) := object.union(good, {
	"artifact": object.union(good.artifact, {"channel": channel}),
	"environment": env,
})

with_builder(id) := object.union(good, {"artifact": object.union(good.artifact, {"builder_id": id})})

test_good_artifact_is_admitted if {
	count(admission.deny) == 0 with input as good
}

test_channel_promotion_matrix if {
	every channel, env in {"prod": "prod", "staging": "staging", "dev": "dev"} {
		count(admission.deny) == 0 with input as with_channel(channel, env)
	}
	count(admission.deny) == 0 with input as with_channel("prod", "staging")
	count(admission.deny) == 0 with input as with_channel("prod", "dev")
	count(admission.deny) == 0 with input as with_channel("staging", "dev")
}

test_lower_channel_may_not_go_up if {
	admission.deny == {`channel "dev" may not deploy to "prod": "prod" accepts channels prod`} with input as with_channel("dev", "prod")
	admission.deny == {`channel "staging" may not deploy to "prod": "prod" accepts channels prod`} with input as with_channel("staging", "prod")
	admission.deny == {`channel "dev" may not deploy to "staging": "staging" accepts channels prod, staging`} with input as with_channel("dev", "staging")
}

test_unknown_environment_is_denied if {
	admission.deny == {`environment "qa" is unknown: want one of dev, prod, staging`} with input as with_channel("prod", "qa")
	admission.deny == {`environment "" is unknown: want one of dev, prod, staging`} with input as object.remove(good, ["environment"])
}

test_unknown_channel_is_denied if {
	admission.deny == {`channel "nightly" is unknown: want one of dev, prod, staging`} with input as with_channel("nightly", "dev")
}

test_builder_must_be_a_builder_of_the_trust_domain if {
	every id in [
		"spiffe://other.test/builder/ci",
		"spiffe://custody.test/deployer/pipeline",
		"spiffe://custody.test/builder/",
		"spiffe://custody.test/builder/ci/extra",
		"spiffe://custody.test.evil/builder/ci",
		"",
	] {
		admission.deny == {sprintf("builder %q is not a builder of trust domain %q (want spiffe://custody.test/builder/<pipeline>)", [id, "custody.test"])} with input as with_builder(id)
	}
}

test_missing_trust_domain_denies if {
	count(admission.deny) > 0 with input as object.remove(good, ["trust_domain"])
}

test_failed_check_denies_with_the_verifier_message if {
	bad := object.union(good, {"verification": object.union(good.verification, {
		"signature": false,
		"messages": ["envelope signature does not verify"],
	})})
	admission.deny == {"envelope signature does not verify"} with input as bad
}

test_each_check_is_required if {
	every check in ["signature", "subject_match", "log_inclusion", "checkpoint", "blob_integrity"] {
		bad := object.union(good, {"verification": object.union(good.verification, {check: false})})
		admission.deny == {sprintf("verification check %q did not pass", [check])} with input as bad
	}
}

test_missing_check_denies if {
	bad := json.remove(good, ["verification/log_inclusion"])
	admission.deny == {`verification check "log_inclusion" did not pass`} with input as bad
}

test_non_boolean_check_denies if {
	bad := object.union(good, {"verification": object.union(good.verification, {"checkpoint": "true"})})
	admission.deny == {`verification check "checkpoint" did not pass`} with input as bad
}

test_empty_input_denies if {
	count(admission.deny) >= 3 with input as {}
}

# Licences (decision 0092).

with_components(env, comps) := object.union(with_channel("prod", env), {"sbom": {"attached": true, "components": comps}})

comp(purl, lic) := {"purl": purl, "name": "x", "version": "1.0.0", "license": lic}

test_gpl_denied_in_prod_allowed_elsewhere if {
	doc := with_components("prod", [comp("pkg:npm/x@1.0.0", "GPL-3.0-only"), comp("pkg:npm/y@2.0.0", "MIT")])
	admission.deny == {"component pkg:npm/x@1.0.0 has licence GPL-3.0-only, denied in prod (deny list: GPL-3.0-only)"} with input as doc
	count(admission.deny) == 0 with input as object.union(doc, {"environment": "staging"})
	count(admission.deny) == 0 with input as object.union(doc, {"environment": "dev"})
	count(admission.warn) == 0 with input as object.union(doc, {"environment": "dev"})
}

test_or_passes_on_either_side_and_needs_both if {
	count(admission.deny) == 0 with input as with_components("prod", [comp("pkg:npm/x@1.0.0", "MIT OR GPL-3.0-only")])
	admission.deny == {"component pkg:npm/x@1.0.0 has licence MIT AND GPL-2.0-or-later, denied in prod (deny list: GPL-2.0-or-later)"} with input as with_components("prod", [comp("pkg:npm/x@1.0.0", "MIT AND GPL-2.0-or-later")])
	count(admission.deny) == 0 with input as with_components("prod", [comp("pkg:npm/x@1.0.0", "GPL-2.0-only WITH Classpath-exception-2.0 AND Apache-2.0")])
}

test_unknown_licence_per_rule if {
	# prod denies, staging warns, dev allows; a component without a purl
	# is named by name@version.
	comps := [{"name": "blob", "version": "3", "license": "NOASSERTION"}]
	admission.deny == {"component blob@3 has an unknown licence in prod: licence stated as NOASSERTION"} with input as with_components("prod", comps)
	count(admission.deny) == 0 with input as with_components("staging", comps)
	admission.warn == {"component blob@3 has an unknown licence in staging: licence stated as NOASSERTION"} with input as with_components("staging", comps)
	count(admission.deny) == 0 with input as with_components("dev", comps)
	count(admission.warn) == 0 with input as with_components("dev", comps)
	admission.deny == {"component pkg:npm/x@1.0.0 has an unknown licence in prod: a custom licence neither list names (LicenseRef-acme)"} with input as with_components("prod", [comp("pkg:npm/x@1.0.0", "LicenseRef-acme")])
	count(admission.deny) == 1 with input as with_components("prod", [comp("pkg:npm/x@1.0.0", "")])
	count(admission.deny) == 1 with input as with_components("prod", [comp("pkg:npm/x@1.0.0", "MIT AND")])
}

test_no_sbom_warns_in_prod if {
	count(admission.deny) == 0 with input as good
	admission.warn == {"artifact has no verified SBOM, so its licences were not checked for prod"} with input as good
	count(admission.warn) == 0 with input as with_channel("prod", "dev")
}

test_bad_licence_rule_denies if {
	admission.deny == {`licence rule of "prod": unknown is "maybe", want one of deny, warn, allow`} with input as with_components("prod", []) with admission.licence_rules as {"prod": {"unknown": "maybe", "no_sbom": "allow"}}
	admission.deny == {"licence rule of \"prod\": no_sbom is null, want one of deny, warn, allow"} with input as with_components("prod", []) with admission.licence_rules as {"prod": {"unknown": "deny", "no_sbom": null}}
}

test_no_sbom_deny_when_the_rule_says_so if {
	rules := object.union(admission.licence_rules, {"prod": object.union(admission.licence_rules.prod, {"no_sbom": "deny"})})
	admission.deny == {"artifact has no verified SBOM, so its licences were not checked for prod"} with input as good with admission.licence_rules as rules
	count(admission.deny) == 0 with input as with_components("prod", [comp("pkg:npm/x@1.0.0", "MIT")]) with admission.licence_rules as rules
}

# Vulnerabilities (decision 0094).

with_vulns(env, vulns) := object.union(with_components(env, [comp("pkg:npm/lodash@4.17.11", "MIT")]), {"sbom": {"attached": true, "components": [comp("pkg:npm/lodash@4.17.11", "MIT")], "vulnerabilities": vulns}})

vuln(id, sev) := {"advisory": id, "severity": sev, "component": "pkg:npm/lodash@4.17.11", "reason": "introduced 0, fixed 4.17.12", "uncertain": false}

test_high_denied_in_prod_critical_in_staging_nothing_in_dev if {
	high := [vuln("GHSA-jf85-cpcp-j695", "HIGH")]
	admission.deny == {"component pkg:npm/lodash@4.17.11 is affected by GHSA-jf85-cpcp-j695 (HIGH), denied in prod at HIGH and above"} with input as with_vulns("prod", high)
	count(admission.deny) == 0 with input as with_vulns("staging", high)
	count(admission.deny) == 0 with input as with_vulns("dev", high)
	crit := [vuln("GHSA-x", "CRITICAL")]
	admission.deny == {"component pkg:npm/lodash@4.17.11 is affected by GHSA-x (CRITICAL), denied in staging at CRITICAL and above"} with input as with_vulns("staging", crit)
	count(admission.deny) == 1 with input as with_vulns("prod", crit)
	count(admission.deny) == 0 with input as with_vulns("dev", crit)
	count(admission.deny) == 0 with input as with_vulns("prod", [vuln("GHSA-m", "MEDIUM"), vuln("GHSA-l", "LOW"), vuln("GHSA-n", "NONE")])
}

test_uncertain_match_counts if {
	v := object.union(vuln("GHSA-jf85-cpcp-j695", "HIGH"), {"uncertain": true})
	admission.deny == {"component pkg:npm/lodash@4.17.11 is affected by GHSA-jf85-cpcp-j695 (HIGH), denied in prod at HIGH and above (its version could not be compared, so it is taken as affected)"} with input as with_vulns("prod", [v])
}

test_unknown_severity_per_rule if {
	u := [vuln("GHSA-u", "UNKNOWN")]
	admission.deny == {"component pkg:npm/lodash@4.17.11 is affected by GHSA-u, whose severity is unknown, in prod"} with input as with_vulns("prod", u)
	count(admission.deny) == 0 with input as with_vulns("staging", u)
	admission.warn == {"component pkg:npm/lodash@4.17.11 is affected by GHSA-u, whose severity is unknown, in staging"} with input as with_vulns("staging", u)
	count(admission.deny) == 0 with input as with_vulns("dev", u)
	count(admission.warn) == 0 with input as with_vulns("dev", u)
}

test_bad_vulnerability_rule_denies if {
	admission.deny == {`vulnerability rule of "prod": deny_at is "SEVERE", want one of NONE, LOW, MEDIUM, HIGH, CRITICAL, never`} with input as with_vulns("prod", []) with admission.vulnerability_rules as {"prod": {"deny_at": "SEVERE", "unknown": "deny"}}
	admission.deny == {`vulnerability rule of "prod": unknown is "maybe", want one of deny, warn, allow`} with input as with_vulns("prod", []) with admission.vulnerability_rules as {"prod": {"deny_at": "HIGH", "unknown": "maybe"}}
	admission.deny == {`vulnerability rule of "prod": deny_at is null, want one of NONE, LOW, MEDIUM, HIGH, CRITICAL, never`} with input as with_vulns("prod", []) with admission.vulnerability_rules as {}
}

test_stricter_threshold if {
	rules := object.union(admission.vulnerability_rules, {"dev": {"deny_at": "MEDIUM", "unknown": "allow"}})
	count(admission.deny) == 1 with input as with_vulns("dev", [vuln("GHSA-m", "MEDIUM")]) with admission.vulnerability_rules as rules
	count(admission.deny) == 0 with input as with_vulns("dev", [vuln("GHSA-l", "LOW")]) with admission.vulnerability_rules as rules
}

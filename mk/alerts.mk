# The Prometheus alert rules in deploy/alerts, tested with promtool.
test: test-alerts

.PHONY: test-alerts
test-alerts: ## Check and unit-test the alert rules in deploy/alerts with promtool (Debian package prometheus, installed if absent).
	scripts/test-alerts.sh

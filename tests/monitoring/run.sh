#!/usr/bin/env bash
# The monitoring pieces with the real programs (.ci/run installs them, pinned, first):
#
#   tests/monitoring/run.sh
#
# 1. tests/monitoring/check_files.py: the dashboard's panels, and every metric the dashboard and
#    the rules name is one watch exports;
# 2. promtool check rules monitoring/rules.yml; promtool check config monitoring/prometheus.yml
#    (its rules path pointed here);
# 3. promtool test rules tests/monitoring/rules.test.yml: every alert fires when it should and
#    stays silent when it should not;
# 4. tests/monitoring.rs (`cargo test --test monitoring -- --ignored`): a real Prometheus scrapes a
#    watcher over a simulated cluster (every dashboard query has data, member-down pending for a
#    stopped member, none for a drained one), and headless Chromium renders the status page.
#
# Environment: PROMETHEUS, PROMTOOL, CHROMIUM name other binaries (default: on PATH);
# MONITORING_SCREENSHOTS=docs/img keeps the screenshots docs/watch.md shows (else they go with
# the test's temporary directory). Everything it starts and writes is removed, pass or fail.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
promtool="${PROMTOOL:-promtool}"
export PROMETHEUS="${PROMETHEUS:-prometheus}" CHROMIUM="${CHROMIUM:-chromium}"
for tool in "$promtool" "$PROMETHEUS" "$CHROMIUM"; do
  command -v "$tool" >/dev/null || { echo "monitoring: $tool is not installed (.ci/run installs it)" >&2; exit 2; }
done
echo "monitoring: $("$PROMETHEUS" --version 2>&1 | head -n 1); $("$CHROMIUM" --version 2>/dev/null | head -n 1)"

work="$(mktemp -d "${TMPDIR:-/tmp}/cci-monitoring.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== monitoring: the dashboard and the rules name what watch exports"
python3 tests/monitoring/check_files.py | grep -v '^ok ' || true
python3 tests/monitoring/check_files.py >/dev/null

echo "== monitoring: promtool check rules / check config"
"$promtool" check rules monitoring/rules.yml
sed "s|/etc/prometheus/rules.yml|$root/monitoring/rules.yml|" monitoring/prometheus.yml >"$work/prometheus.yml"
grep -qF "$root/monitoring/rules.yml" "$work/prometheus.yml"
"$promtool" check config "$work/prometheus.yml"

echo "== monitoring: promtool test rules (every alert, firing and silent)"
"$promtool" test rules tests/monitoring/rules.test.yml

echo "== monitoring: a real Prometheus and headless Chromium over a watcher and a simulated cluster"
cargo test --test monitoring -- --ignored

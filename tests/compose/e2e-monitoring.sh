# shellcheck shell=bash
# shellcheck disable=SC2154 # compose_cmd, project, env_file, root, work, … are e2e.sh's
# The `monitoring` profile's step of tests/compose/e2e.sh, sourced by it and run on its formed
# bundle (its helpers: compose, service_container, pass, fail, …). Not run on its own.
#
# Prometheus is Debian's binary (the `prometheus` on PATH, or E2E_PROMETHEUS_BINARY) with its C
# library, FROM scratch in the official image's layout (tests/compose/prometheus.Dockerfile),
# named by PROMETHEUS_IMAGE: compose.yaml's service, mounts and command as users run them.
# `--profile monitoring up -d` -> the watcher and Prometheus start -> Prometheus scrapes the
# watcher by its service name on the private network under the job the rules ask for (up 1, the
# cluster healthy 1) and has loaded and evaluated every rule of monitoring/rules.yml without error;
# none pends or fires on the healthy cluster -> the watcher's status page and /status.json
# answer on its published loopback port (HEALTHY, 3 members up), with no secret -> both removed,
# with Prometheus's volume, so the steps after see the bundle as before.

compose_monitoring() {
  COUCHDB_WATCH_INTERVAL=1s PROMETHEUS_IMAGE="$prometheus_image" "${compose_cmd[@]}" --project-name "$project" \
    --env-file "$env_file" -f "$root/compose.yaml" -f "$root/compose/e2e.yaml" --profile monitoring "$@"
}

prometheus_api() { curl -fsS --max-time 5 "http://127.0.0.1:$prometheus_port$1" "${@:2}"; }

# Debian's binary and the libraries it is linked against, in an image of their own.
build_prometheus_image() {
  local binary="${E2E_PROMETHEUS_BINARY:-$(command -v prometheus || true)}" ctx="$work/prometheus" lib
  [ -x "$binary" ] || fail "no prometheus binary (apt-get install prometheus; .ci/run installs it pinned)"
  prometheus_image="${name}-prometheus:test"
  mkdir -p "$ctx/root/bin" "$ctx/data"
  cp "$binary" "$ctx/root/bin/prometheus"
  for lib in $(ldd "$binary" | grep -oE '/[^ ]+'); do
    mkdir -p "$ctx/root$(dirname "$lib")"
    cp -L "$lib" "$ctx/root$lib"
  done
  docker build -f "$root/tests/compose/prometheus.Dockerfile" -t "$prometheus_image" "$ctx" >"$work/build-prometheus.log" 2>&1 \
    || { cat "$work/build-prometheus.log" >&2; fail "building the Prometheus image failed"; }
  rm -rf "${ctx:?}"
  prometheus_version="$(docker run --rm "$prometheus_image" --version 2>&1 | sed -n 's/^prometheus, version \([^ ]*\).*/\1/p')"
  [ -n "$prometheus_version" ] || fail "the Prometheus image does not run"
}

monitoring_step() {
  log "the monitoring profile: docker compose --profile monitoring up -d (Prometheus, the watcher)"
  build_prometheus_image
  pass "Prometheus image $prometheus_image built (Debian's prometheus $prometheus_version, FROM scratch)"
  compose_monitoring config -q || fail "compose config rejects compose.yaml + the e2e override + --profile monitoring"
  compose_monitoring up -d --no-build >&2 || fail "compose --profile monitoring up -d failed"
  local id waited=0 up="" healthy="" rules="" alerts=""
  id="$(service_container prometheus)"
  [ -n "$id" ] || fail "no prometheus container"
  # The first scrape comes within one scrape interval (15 s) of the start, the first evaluation
  # within one evaluation interval.
  until [ "$up" = 1 ] && [ "$healthy" = 1 ] && [ "$rules" = "9 ok" ]; do
    [ "$waited" -lt 60 ] || { docker logs "$id" >&2; fail "Prometheus: up=$up healthy=$healthy rules=$rules after 60 s"; }
    sleep 1
    waited=$((waited + 1))
    up="$(prometheus_api /api/v1/query --data-urlencode 'query=up{job="couchdb-cluster-init-watch"}' 2>/dev/null \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if len(r)==1 else "")' 2>/dev/null || true)"
    healthy="$(prometheus_api /api/v1/query --data-urlencode 'query=couchdb_cluster_healthy' 2>/dev/null \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if len(r)==1 else "")' 2>/dev/null || true)"
    rules="$(prometheus_api /api/v1/rules 2>/dev/null | python3 -c '
import json, sys
rules = [r for g in json.load(sys.stdin)["data"]["groups"] for r in g["rules"]]
print(len(rules), "ok" if rules and all(r["health"] == "ok" for r in rules) else "not evaluated")' 2>/dev/null || true)"
  done
  pass "Prometheus scrapes the watcher by its service name (job couchdb-cluster-init-watch: up 1, healthy 1) and evaluates the 9 rules of monitoring/rules.yml, within $waited s"
  # What pended before the first scrape (the watcher absent) resolves at the next evaluation.
  waited=0
  until alerts="$(prometheus_api /api/v1/alerts | python3 -c '
import json, sys
print(" ".join(a["labels"]["alertname"] + ":" + a["state"] for a in json.load(sys.stdin)["data"]["alerts"]))')" \
      && [ -z "$alerts" ]; do
    [[ "$alerts" != *:firing* ]] || fail "alerts firing on a healthy cluster: $alerts"
    [ "$waited" -lt 40 ] || fail "alerts still pending on a healthy cluster after 40 s: $alerts"
    sleep 1
    waited=$((waited + 1))
  done
  pass "no alert pending or firing on the healthy cluster"

  local page json
  page="$(curl -fsS --max-time 5 "http://127.0.0.1:$watch_port/")" || fail "the status page does not answer on 127.0.0.1:$watch_port"
  grep -qF '<strong>HEALTHY</strong>' <<<"$page" || fail "the status page does not say healthy: $page"
  json="$(curl -fsS --max-time 5 "http://127.0.0.1:$watch_port/status.json")" || fail "/status.json does not answer"
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); sys.exit(0 if j["members"]==3 and j["nodes_up"]==3 and j["healthy"] else 1)' "$json" \
    || fail "/status.json does not show 3 members up: $json"
  local s
  for s in "$admin_password" "$cookie" "$secret"; do
    ! grep -qF -e "$s" <<<"$page$json" || fail "a secret is on the status page"
  done
  pass "the status page and /status.json answer on the published loopback port (healthy, 3 members up), no secret on them"

  compose_monitoring rm -sf prometheus couchdb-cluster-watch >/dev/null 2>&1 || fail "could not remove Prometheus and the watcher"
  docker volume rm "${project}_prometheus-data" >/dev/null || fail "could not remove Prometheus's volume"
  docker image rm "$prometheus_image" >/dev/null 2>&1 || true
}

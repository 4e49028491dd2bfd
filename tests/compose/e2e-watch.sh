# shellcheck shell=bash
# shellcheck disable=SC2154 # compose_cmd, project, env_file, root, work, … are e2e.sh's
# The `watch` profile's step of tests/compose/e2e.sh, sourced by it and run on its formed bundle
# (its helpers: compose, service_container, node_curl, writes_in, no_secret_in, pass, fail, …).
# Not run on its own.
#
# `--profile watch up -d` (interval 1 s) -> the watcher starts, and its metrics answer on the
# private network (asked from a node's container, by service name): healthy 1, 3 members, 3 up;
# /healthz 200 -> its idle looks on the formed cluster write nothing (its trace log counts every
# request) -> stop: exit 0 within seconds -> no secret in its log or its command line -> its
# container removed, so the steps after it see the bundle as before.

compose_watch() {
  COUCHDB_WATCH_INTERVAL=1s "${compose_cmd[@]}" --project-name "$project" --env-file "$env_file" \
    -f "$root/compose.yaml" -f "$root/compose/e2e.yaml" --profile watch "$@"
}

# `GET path` on the watcher, from couchdb-1's container (the private network, Docker's DNS).
watch_get() { node_curl "$(service_container couchdb-1)" "http://couchdb-cluster-watch:9985$1"; }

watch_step() {
  log "the watch profile: docker compose --profile watch up -d"
  compose_watch config -q || fail "compose config rejects compose.yaml + the e2e override + --profile watch"
  compose_watch up -d --no-build >&2 || fail "compose --profile watch up -d failed"
  local id page="" waited=0
  id="$(service_container couchdb-cluster-watch)"
  [ -n "$id" ] || fail "no couchdb-cluster-watch container"
  until grep -qx 'couchdb_cluster_healthy 1' <<<"$page"; do
    [ "$waited" -lt 150 ] || { docker logs "$id" >&2; fail "the watcher's metrics never said healthy: $page"; }
    sleep 0.2
    waited=$((waited + 1))
    page="$(watch_get /metrics 2>/dev/null || true)"
  done
  grep -qx 'couchdb_cluster_members 3' <<<"$page" && grep -qx 'couchdb_cluster_nodes_up 3' <<<"$page" \
    || fail "the watcher's metrics do not show 3 members up: $page"
  printf '%s\n' "$page" | sed 's/^/  metrics | /' >&2
  watch_get /healthz >/dev/null || fail "the watcher's /healthz does not answer 200"
  pass "--profile watch: the watcher runs and its metrics answer on the private network (healthy 1, 3 members up; /healthz 200)"

  # Idle looks on a formed cluster: GETs only.
  sleep 3
  docker logs "$id" >"$work/watch.log" 2>&1
  local looks
  looks="$(sed -n 's/^couchdb_watch_ticks_total //p' <<<"$(watch_get /metrics)")"
  [ "${looks:-0}" -ge 3 ] || fail "the watcher looked only ${looks:-0} times in 3 s at a 1 s interval"
  [ "$(writes_in "$work/watch.log")" = 0 ] || fail "the watcher sent $(writes_in "$work/watch.log") writes to a formed cluster"
  pass "the watcher's $looks looks at the formed cluster sent $(requests_in "$work/watch.log") requests, none of them a write"

  # SIGTERM (docker stop): exit 0, at once.
  local t0=$SECONDS code
  compose_watch stop -t 10 couchdb-cluster-watch >&2 || fail "could not stop the watcher"
  code="$(docker inspect --format '{{.State.ExitCode}}' "$id")"
  [ "$code" = 0 ] && [ $((SECONDS - t0)) -le 5 ] \
    || fail "the watcher stopped with exit $code after $((SECONDS - t0)) s (expected 0, within 5 s)"
  docker logs "$id" >"$work/watch.log" 2>&1
  grep -q 'stopped by a signal' "$work/watch.log" || fail "the watcher's log does not say it stopped on the signal"
  pass "docker stop: the watcher exits 0 within $((SECONDS - t0)) s"

  no_secret_in "$work/watch.log" "the watcher's log (RUST_LOG=trace)"
  docker inspect --format '{{json .Args}} {{json .Config.Cmd}} {{json .Config.Labels}}' "$id" >"$work/watch-inspect.txt"
  local s
  for s in "$admin_password" "$cookie" "$secret"; do
    ! grep -qF -e "$s" "$work/watch-inspect.txt" || fail "a secret is in the watcher's command line or labels"
  done
  pass "no secret in the watcher's log (trace) or command line"

  compose_watch rm -sf couchdb-cluster-watch >/dev/null 2>&1 || fail "could not remove the watcher"
}

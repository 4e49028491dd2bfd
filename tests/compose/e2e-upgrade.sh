# shellcheck shell=bash
# shellcheck disable=SC2154 # compose_cmd, project, env_file, root, work, name, … are e2e.sh's
# The rolling upgrade's step of tests/compose/e2e.sh (issue 23), sourced by it and run on its
# formed bundle (its helpers: compose, traefik_client, node_curl, service_container,
# healthy_routed_spread, run_logged, pass, fail, …). Not run on its own. The nodes run couchsim
# images tagged as CouchDB releases (<run>-couchdb:3.4.2 and :3.5.2, tests/compose/images.sh);
# a client writes a new document and reads it back through Traefik every 50 ms meanwhile
# (through_traefik.py load), keeping its sticky cookie as an application does.
#
# 1. the naive way, for the figure: COUCHDB_IMAGE=…:3.5.2 in the env file and `up -d`, with the
#    client: its failed requests are counted (docs/performance.md); then 3.4.2 back the same way;
# 2. `scripts/upgrade 3.5.2`, with the client: no answer that is not a 2xx, every acknowledged
#    write readable at the end, every node on 3.5.2 (its image, and GET / from inside it),
#    `check` healthy, the env file naming the new image; the times per node and in all, logged;
# 3. a node that never comes back (an image whose entrypoint exits at once): exit 14 after the
#    first node, the others still on 3.5.2 and routed, and it says how to go back — the commands
#    it prints bring the node back;
# 4. with E2E_UPGRADE_KILLS=1 (.ci/run: under Compose v2 only, for time): killed during a drain,
#    during a re-creation and during the wait for catch-up, run again each time (back to 3.4.2):
#    it carries on, and the last run finishes.
# Without the kills the bundle stays on 3.5.2 for the steps after this one (so they run on both
# releases over the two Composes). E2E_KEEP_LOGS=DIR keeps scripts/upgrade's logs there (for
# docs/upgrade.md).

upgrade_db="upgrade-e2e"

# scripts/upgrade on this run's project, with this run's Compose (COMPOSE_CMD: under the v1
# run `docker compose` answers too); quiet init logs (info). The shell's COUCHDB_INIT_TIMEOUT, when
# set, reaches the init container's runs through compose.yaml's interpolation.
upgrade() {
  COMPOSE_CMD="${compose_cmd[*]}" RUST_LOG=info "$root/scripts/upgrade" --project-name "$project" \
    --env-file "$env_file" -f "$root/compose.yaml" -f "$root/compose/e2e.yaml" "$@"
}

# Starts the client (`load`) writing documents named $1-N. It stops when `load_stop` creates
# its file (or the work directory is gone: a failed run's cleanup), then reports; `load_stop`
# sets `report` to that and returns the client's exit code.
load_start() {
  rm -f "$work/stop-load"
  traefik_client load --db "$upgrade_db" --prefix "$1" --until "$work/stop-load" "${@:2}" \
    >"$work/load.out" 2>&1 &
  loader=$!
  sleep 1 # a few requests before anything happens
}
load_stop() {
  touch "$work/stop-load"
  local code=0
  wait "$loader" || code=$?
  report="$(cat "$work/load.out")"
  return "$code"
}

# The release GET / of node $1 says, from inside its container.
release_of() {
  node_curl "$(service_container "couchdb-$1")" http://localhost:5984/ \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])'
}

# Every node's image is $1 and answers GET / as release $2.
all_on() {
  local n image
  for n in 1 2 3; do
    image="$(docker inspect --format '{{.Config.Image}}' "$(service_container "couchdb-$n")")"
    [ "$image" = "$1" ] || fail "couchdb-$n runs $image, not $1"
    [ "$(release_of "$n")" = "$2" ] || fail "couchdb-$n answers GET / as $(release_of "$n"), not $2"
  done
}

# The env file names image $1.
env_names() {
  [ "$(sed -n 's/^COUCHDB_IMAGE=//p' "$env_file" | tail -n 1)" = "$1" ] \
    || fail "the env file does not name COUCHDB_IMAGE=$1: $(grep '^COUCHDB_IMAGE=' "$env_file")"
}

upgrade_step() {
  local old="${name}-couchdb:3.4.2" new="${name}-couchdb:3.5.2" broken="${name}-couchdb:broken"
  local out t report=""
  node_curl "$(service_container couchdb-1)" -X PUT "http://localhost:5984/$upgrade_db" >/dev/null \
    || fail "could not create $upgrade_db"

  # 1. The naive way: the image changed in .env, `up -d`.
  log "the naive upgrade: COUCHDB_IMAGE=$new in the env file, then up -d, with a client through Traefik"
  load_start naive --allow-failures
  sed -i "s|^COUCHDB_IMAGE=.*|COUCHDB_IMAGE=$new|" "$env_file"
  t=$SECONDS
  compose up -d --no-build >&2 || fail "the naive up -d failed"
  healthy_routed_spread "after the naive up -d: "
  load_stop || fail "the client: $report"
  printf '%s\n' "$report" | sed 's/^/  client | /' >&2
  all_on "$new" 3.5.2
  pass "the naive up -d (all nodes at once, $((SECONDS - t)) s to healthy and routed): ${report%%$'\n'*}"
  sed -i "s|^COUCHDB_IMAGE=.*|COUCHDB_IMAGE=$old|" "$env_file"
  compose up -d --no-build >&2 || fail "up -d back to $old failed"
  healthy_routed_spread "back on $old: "
  all_on "$old" 3.4.2

  # 2. scripts/upgrade, with the client.
  log "scripts/upgrade 3.5.2, with a client writing and reading through Traefik every 50 ms"
  load_start rolling
  run_logged "$work/upgrade.log" upgrade 3.5.2
  load_stop || {
    sed 's/^/  upgrade | /' "$work/upgrade.log" >&2
    fail "during scripts/upgrade the client: $report"
  }
  sed 's/^/  upgrade | /' "$work/upgrade.log" | grep -E 'upgrade \| (upgrade:|error)' >&2 || true
  [ "$code" = 0 ] || { sed 's/^/  upgrade | /' "$work/upgrade.log" >&2; fail "scripts/upgrade 3.5.2 exited $code"; }
  no_secret_in "$work/upgrade.log" "scripts/upgrade (and the drain, undrain and check it ran)"
  all_on "$new" 3.5.2
  env_names "$new"
  run_logged "$work/check-upgraded.log" compose run --rm --no-deps -T couchdb-cluster-init check
  [ "$code" = 0 ] || { cat "$work/check-upgraded.log" >&2; fail "after the upgrade check exited $code"; }
  pass "scripts/upgrade 3.5.2: ${report%%$'\n'*}; every node on 3.5.2, healthy, the env file names $new"
  grep -E '^upgrade: (couchdb-[0-9]+: on |done:)' "$work/upgrade.log" | sed 's/^/  time | /' >&2

  # 3. A node that never comes back: its image does not start.
  printf 'FROM %s\nENTRYPOINT ["/bin/sh", "-c", "exit 3"]\nCMD []\n' "$sim_image" \
    | docker build -t "$broken" - >"$work/build-broken.log" 2>&1 \
    || { cat "$work/build-broken.log" >&2; fail "could not build $broken"; }
  log "scripts/upgrade to $broken, an image that does not start"
  COUCHDB_INIT_TIMEOUT=20s run_logged "$work/upgrade-broken.log" upgrade "$broken"
  grep -E '^upgrade:|^error' "$work/upgrade-broken.log" | sed 's/^/  upgrade | /' >&2
  [ "$code" = 14 ] || { cat "$work/upgrade-broken.log" >&2; fail "scripts/upgrade to a broken image exited $code, not 14"; }
  grep -q 'couchdb-3 did not come back' "$work/upgrade-broken.log" \
    || fail "scripts/upgrade did not say couchdb-3 did not come back"
  for n in 1 2; do
    [ "$(docker inspect --format '{{.Config.Image}}' "$(service_container "couchdb-$n")")" = "$new" ] \
      || fail "couchdb-$n was touched by the failed upgrade"
    out="$(traefik_client reaches --name "$(node_name "$n")" --deadline 20)" || fail "after the failed upgrade: $out"
  done
  out="$(traefik_client never --name "$(node_name 3)" --count 20)" || fail "after the failed upgrade: $out"
  env_names "$new"
  pass "an image that does not start: scripts/upgrade exits 14 after couchdb-3; couchdb-1 and -2 untouched on 3.5.2 and routed (${out#ok })"
  local back
  back="$(sed -n 's/^upgrade: to go back: //p; s/^upgrade: *then: //p' "$work/upgrade-broken.log")"
  [ "$(wc -l <<<"$back")" = 2 ] || fail "scripts/upgrade did not print the two commands to go back: $back"
  while read -r line; do
    log "as it says: $line"
    bash -c "$line" >&2 || fail "going back failed: $line"
  done <<<"$back"
  healthy_routed_spread "couchdb-3 back on $new as scripts/upgrade said: "
  all_on "$new" 3.5.2
  docker image rm -f "$broken" >/dev/null
  pass "the two commands it printed bring couchdb-3 back on 3.5.2: ${spread#ok }"

  # 4. Killed during each step, then run again (back to 3.4.2).
  if [ "${E2E_UPGRADE_KILLS:-0}" = 1 ]; then
    local step pid
    for step in drain re-create undrain; do
      log "scripts/upgrade 3.4.2, killed during a $step"
      # Its own process group, so that the kill reaches the Compose it runs too.
      COMPOSE_CMD="${compose_cmd[*]}" RUST_LOG=info setsid "$root/scripts/upgrade" --project-name "$project" \
        --env-file "$env_file" -f "$root/compose.yaml" -f "$root/compose/e2e.yaml" 3.4.2 \
        >"$work/upgrade-kill.log" 2>&1 &
      pid=$!
      for _ in $(seq 1 600); do
        grep -qE "^upgrade: couchdb-[0-9]+: $step" "$work/upgrade-kill.log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      grep -qE "^upgrade: couchdb-[0-9]+: $step" "$work/upgrade-kill.log" \
        || { cat "$work/upgrade-kill.log" >&2; fail "scripts/upgrade never reached a $step"; }
      sleep 0.5
      kill -TERM -- "-$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      grep -E '^upgrade:' "$work/upgrade-kill.log" | tail -n 2 | sed 's/^/  killed | /' >&2
    done
    log "scripts/upgrade 3.4.2 once more, to the end"
    run_logged "$work/upgrade-rerun.log" upgrade 3.4.2
    grep -E '^upgrade:' "$work/upgrade-rerun.log" | sed 's/^/  upgrade | /' >&2
    [ "$code" = 0 ] || { cat "$work/upgrade-rerun.log" >&2; fail "scripts/upgrade after three kills exited $code"; }
    pass "scripts/upgrade killed during a drain, a re-creation and a catch-up, then run again: it finished"
    healthy_routed_spread "back on 3.4.2 with scripts/upgrade: "
    all_on "$old" 3.4.2
    env_names "$old"
    pass "the bundle is on 3.4.2 again (scripts/upgrade 3.4.2): ${spread#ok }"
  else
    log "the bundle stays on 3.5.2 for the steps after this one"
  fi
  if [ -n "${E2E_KEEP_LOGS:-}" ]; then
    mkdir -p "$E2E_KEEP_LOGS"
    cp "$work"/upgrade*.log "$work/load.out" "$E2E_KEEP_LOGS/" 2>/dev/null || true
  fi
}

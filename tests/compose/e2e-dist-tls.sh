# shellcheck shell=bash
# shellcheck disable=SC2154 # compose_cmd, project, env_file, root, work, … are e2e.sh's
# The encrypted distribution's step of tests/compose/e2e.sh (compose/dist-tls.yaml), sourced by it
# (its helpers: pass, fail, log, wait_health, run_logged, show_log, writes_in, no_secret_in, …).
# It runs under whichever Compose e2e.sh drives (.ci/run: docker-compose 1.29 and Compose v2).
#
# 1. On e2e.sh's plain bundle: a capture of the nodes' distribution traffic (tshark on the
#    bundle's bridge, `tcp port 9100`) while documents are written and internally replicated
#    holds their contents in clear and no TLS record.
# 2. A bundle of its own (project <e2e's>-tls, fresh volumes) with compose/dist-tls.yaml and the
#    certificates scripts/gen-env --dist-tls makes: `up -d` forms it (the init checks every
#    node's distribution first), Traefik serves it; the same capture holds TLS records and none
#    of the documents' contents; no key material in any container's inspect or log.
# 3. A fourth node without TLS (compose/couchdb-4.yaml alone): the init refuses it before
#    writing anything (exit 15) and names it; a fourth node with a certificate from another CA:
#    refused the same way, and joined by hand it never connects — the nodes log `Unknown CA` and
#    `status` names it; its certificate from the cluster's CA (compose/dist-tls-couchdb-4.yaml):
#    the init joins it (growth over TLS).
# 4. down -v of that bundle; e2e.sh's own bundle is untouched.
#
# Capturing needs root and tshark (.ci/run installs Debian's, pinned); without them step 1's and
# step 2's captures are skipped, said loudly, and the rest runs.

dist_project="" # set by dist_tls_step; dist_tls_cleanup removes everything of it
dist_capture_pid=""

# docker compose for the TLS bundle (and its fourth node): its own project name and env file.
compose_dist() {
  "${compose_cmd[@]}" --project-name "$dist_project" --env-file "$work/dist.env" \
    -f "$root/compose.yaml" -f "$root/compose/dist-tls.yaml" -f "$root/compose/e2e.yaml" "$@"
}
compose_dist4() {
  local tls4=()
  [ "${1:-}" = --tls ] && { tls4=(-f "$root/compose/dist-tls-couchdb-4.yaml"); shift; }
  "${compose_cmd[@]}" --project-name "$dist_project" --env-file "$work/dist.env" \
    -f "$root/compose.yaml" -f "$root/compose/couchdb-4.yaml" -f "$root/compose/dist-tls.yaml" \
    "${tls4[@]}" -f "$root/compose/e2e.yaml" "$@"
}
dist_container() {
  docker ps -aq --filter "label=com.docker.compose.project=$dist_project" \
    --filter "label=com.docker.compose.service=$1" --filter "label=com.docker.compose.oneoff=False"
}

# Called by e2e.sh's cleanup, pass or fail: the TLS bundle's containers, networks and volumes,
# by its project label; a capture still running, by its pid.
dist_tls_cleanup() {
  if [ -n "$dist_capture_pid" ]; then
    kill "$dist_capture_pid" 2>/dev/null
    wait "$dist_capture_pid" 2>/dev/null
  fi
  [ -n "$dist_project" ] || return 0
  docker ps -aq --filter "label=com.docker.compose.project=$dist_project" | xargs -r docker rm -f -v >/dev/null 2>&1
  docker network ls -q --filter "label=com.docker.compose.project=$dist_project" | xargs -r docker network rm >/dev/null 2>&1
  docker volume ls -q --filter "label=com.docker.compose.project=$dist_project" | xargs -r docker volume rm -f >/dev/null 2>&1
}

can_capture=0
if [ "$(id -u)" = 0 ] && command -v tshark >/dev/null 2>&1; then can_capture=1; fi

# Starts tshark on the bridge of network $1, port 9100 only, into $2; returns once it captures.
capture_start() {
  local net="$1" file="$2" id
  id="$(docker network inspect --format '{{.Id}}' "$net")" || fail "no network $net"
  : >"$file.log"
  tshark -i "br-${id:0:12}" -f 'tcp port 9100' -w "$file" -q >"$file.log" 2>&1 &
  dist_capture_pid=$!
  for _ in $(seq 1 100); do
    grep -q 'Capturing on' "$file.log" && return 0
    kill -0 "$dist_capture_pid" 2>/dev/null || { cat "$file.log" >&2; fail "tshark did not start on br-${id:0:12}"; }
    sleep 0.1
  done
  fail "tshark never said it captures on br-${id:0:12}"
}

capture_stop() {
  sleep 1 # the last segments reach the capture
  kill -INT "$dist_capture_pid" 2>/dev/null
  wait "$dist_capture_pid" 2>/dev/null || true
  dist_capture_pid=""
}

# Writes through node container $1: database $2 (q=2, n=3: every document on the three nodes'
# copies, sent by the node that takes the write over the distribution), 20 documents whose
# field holds $3, then `_sync_shards` (internal replication of every copy), then every document
# read back through container $4 (fetched from the copies over the distribution).
distribution_writes() {
  local via="$1" db="$2" marker="$3" back="$4" docs i
  node_curl "$via" -X PUT "http://localhost:5984/$db" >/dev/null || fail "PUT /$db failed"
  docs=""
  for i in $(seq 1 20); do docs+="${docs:+,}{\"_id\":\"doc$i\",\"secret_word\":\"$marker-$i\"}"; done
  node_curl "$via" -X POST -H 'Content-Type: application/json' -d "{\"docs\":[$docs]}" \
    "http://localhost:5984/$db/_bulk_docs" >/dev/null || fail "POST /$db/_bulk_docs failed"
  node_curl "$via" -X POST "http://localhost:5984/$db/_sync_shards" >/dev/null || fail "_sync_shards failed"
  sleep 1
  node_curl "$back" "http://localhost:5984/$db/_all_docs?include_docs=true" | grep -qF "$marker-20" \
    || fail "the documents written through one node do not read back through another"
}

# Captures port 9100 on network $1 into $2 while `distribution_writes "${@:3}"` runs; sets tls
# (TLS records), frames (packets) and found (1 when the marker is in the bytes).
capture_writes() {
  local net="$1" file="$2"
  shift 2
  capture_start "$net" "$file"
  distribution_writes "$@"
  capture_stop
  read -r tls frames found <<<"$(capture_facts "$file" "$3")"
}

# "<TLS records> <segments> <marker found>" of capture $1.
capture_facts() {
  local tls frames found
  tls="$(tshark -r "$1" -Y tls -T fields -e frame.number 2>/dev/null | wc -l)"
  frames="$(tshark -r "$1" -T fields -e frame.number 2>/dev/null | wc -l)"
  found="$(python3 -c 'import sys; print(int(sys.argv[2].encode() in open(sys.argv[1], "rb").read()))' "$1" "$2")"
  echo "$tls $frames $found"
}

dist_tls_step() {
  local marker code out n health tls frames found since
  marker="cci-e2e-marker-$(rand | head -c 12)"

  # 1. The plain bundle: the documents cross port 9100 in clear.
  if [ "$can_capture" = 1 ]; then
    log "distribution: capturing port 9100 on the plain bundle while documents are written"
    capture_writes "${project}_couchdb" "$work/plain.pcap" \
      "$(service_container couchdb-1)" dist_plain "$marker" "$(service_container couchdb-3)"
    [ "$frames" -gt 0 ] || fail "the plain capture holds no packet on port 9100"
    [ "$found" = 1 ] && [ "$tls" = 0 ] || fail "plain distribution: $tls TLS records, marker found: $found ($frames packets)"
    pass "plain distribution: $frames packets on port 9100 during writes and internal replication, the documents' contents in clear, no TLS record"
  else
    log "SKIPPED: the captures need root and tshark (.ci/run installs tshark)"
  fi

  # 2. A bundle of its own with the override, its certificates from scripts/gen-env --dist-tls.
  dist_project="${project}-tls"
  local dist_port
  dist_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  grep -vE '^(COUCHDB_PUBLISH|COUCHDB_BUNDLE)=' "$env_file" >"$work/dist.env"
  scripts/gen-env --dist-tls-dir "$work/dist-tls" --output "$work/dist-gen.env" >"$work/gen-dist.log" 2>&1 \
    || { cat "$work/gen-dist.log" >&2; fail "scripts/gen-env --dist-tls failed"; }
  {
    grep -E '^COUCHDB_DIST_TLS_DIR=' "$work/dist-gen.env"
    echo "COUCHDB_PUBLISH=127.0.0.1:$dist_port"
    echo "COUCHDB_BUNDLE=$dist_project"
  } >>"$work/dist.env"
  compose_dist config -q || fail "compose config rejects compose.yaml + compose/dist-tls.yaml + compose/e2e.yaml"
  log "distribution: up -d of project $dist_project with compose/dist-tls.yaml"
  local started=$SECONDS
  compose_dist up -d --no-build >&2 || fail "up -d with compose/dist-tls.yaml failed"
  code="$(timeout 300 docker wait "$(dist_container couchdb-cluster-init)")"
  docker logs "$(dist_container couchdb-cluster-init)" >"$work/init-dist.log" 2>&1
  show_log "$work/init-dist.log"
  [ "$code" = 0 ] || fail "with compose/dist-tls.yaml the init exited $code"
  grep -q 'distribution: TLS on 3 node(s)' "$work/init-dist.log" || fail "the init did not check the nodes' TLS distribution"
  no_secret_in "$work/init-dist.log" "the init with compose/dist-tls.yaml"
  for n in 1 2 3; do
    health="$(wait_health "$(dist_container "couchdb-$n")" 60 healthy)" || fail "couchdb-$n is $health with compose/dist-tls.yaml"
  done
  curl -fsS -o /dev/null --retry 30 --retry-all-errors --retry-delay 1 "http://127.0.0.1:$dist_port/_up" \
    || fail "Traefik never served the TLS bundle"
  out="$(printf 'user = "%s:%s"\n' "$admin_user" "$admin_password" | curl -fsS -K - "http://127.0.0.1:$dist_port/_membership")"
  for n in 1 2 3; do [[ "$out" == *"$(node_name "$n")"* ]] || fail "through Traefik, _membership lacks couchdb-$n: $out"; done
  pass "compose/dist-tls.yaml: formed in $((SECONDS - started)) s with every node on TLS distribution (checked by the init), served through Traefik"

  if [ "$can_capture" = 1 ]; then
    log "distribution: capturing port 9100 on the TLS bundle while documents are written"
    capture_writes "${dist_project}_couchdb" "$work/tls.pcap" \
      "$(dist_container couchdb-1)" dist_tls "$marker" "$(dist_container couchdb-3)"
    [ "$tls" -gt 0 ] && [ "$found" = 0 ] || fail "TLS distribution: $tls TLS records, marker found: $found ($frames packets)"
    pass "TLS distribution: $tls TLS records in $frames packets on port 9100 during writes and internal replication, none of the documents' contents"
  fi

  # No key material anywhere Docker shows or logs.
  for id in $(docker ps -aq --filter "label=com.docker.compose.project=$dist_project"); do docker inspect "$id"; done >"$work/inspect-dist.json"
  compose_dist logs --no-color >"$work/logs-dist.txt" 2>&1
  local key line
  for key in "$work"/dist-tls/*.key; do
    while read -r line; do
      if grep -qF -e "$line" "$work/inspect-dist.json" "$work/logs-dist.txt" "$work/dist.env"; then
        fail "a line of $(basename "$key") is in docker inspect, a log or the env file"
      fi
    done < <(grep -v -- '-----' "$key")
  done
  pass "no key material in any container's inspect or log, nor in .env (keys are read-only mounts)"

  # 3. A fourth node without TLS: refused before anything is written, and named.
  log "distribution: couchdb-4 without TLS, then the init with four nodes"
  compose_dist4 up -d --no-build --no-deps couchdb-4 >&2 || fail "could not start couchdb-4 without TLS"
  wait_up_in "$(dist_container couchdb-4)"
  run_logged "$work/init-dist-plain4.log" compose_dist4 run --rm --no-deps -T couchdb-cluster-init
  show_log "$work/init-dist-plain4.log"
  [ "$code" = 15 ] || fail "with couchdb-4 on plain TCP the init exited $code, expected 15"
  grep -q 'couchdb-4 (couchdb@couchdb-4.couchdb.internal) (port 9100) run(s) the Erlang distribution on plain TCP while COUCHDB_DIST_TLS=true' \
    "$work/init-dist-plain4.log" || fail "the init does not name couchdb-4 as the plain node"
  [ "$(writes_in "$work/init-dist-plain4.log")" = 0 ] || fail "the init wrote with couchdb-4 on plain TCP"
  pass "couchdb-4 on plain TCP among TLS nodes: the init exits 15 naming it, nothing written"

  # A fourth node with a certificate from another CA: refused the same way; joined by hand all
  # the same, it never connects, the nodes log why, and status names it.
  log "distribution: couchdb-4 with a certificate from another CA"
  scripts/gen-dist-tls "$work/other-ca" couchdb-4.couchdb.internal >"$work/gen-other.log" 2>&1 \
    || { cat "$work/gen-other.log" >&2; fail "scripts/gen-dist-tls failed"; }
  init_with_tls_node4 "$work/other-ca" "$work/init-dist-ca4.log"
  [ "$code" = 15 ] || fail "with couchdb-4's certificate from another CA the init exited $code, expected 15"
  grep -q "couchdb-4 (couchdb@couchdb-4.couchdb.internal)'s distribution certificate is issued by" "$work/init-dist-ca4.log" \
    || fail "the init does not name couchdb-4's certificate"
  [ "$(writes_in "$work/init-dist-ca4.log")" = 0 ] || fail "the init wrote with couchdb-4's foreign certificate"
  node_curl "$(dist_container couchdb-1)" -X PUT -d '{}' "http://localhost:5984/_node/_local/_nodes/$(node_name 4)" >/dev/null \
    || fail "could not join couchdb-4 by hand"
  sleep 3
  out="$(node_curl "$(dist_container couchdb-1)" http://localhost:5984/_membership)"
  python3 -c 'import json, sys
m = json.loads(sys.argv[1])
sys.exit(0 if sys.argv[2] in m["cluster_nodes"] and sys.argv[2] not in m["all_nodes"] else 1)' "$out" "$(node_name 4)" \
    || fail "couchdb-4 with another CA's certificate: not a member that never connects: $out"
  docker logs "$(dist_container couchdb-1)" 2>&1 | grep -q "connection to '$(node_name 4)' failed: TLS client: In state certify generated CLIENT ALERT: Fatal - Unknown CA" \
    || fail "couchdb-1 does not log why couchdb-4 never connects"
  run_logged "$work/status-dist-ca4.log" compose_dist4 --tls run --rm --no-deps -T couchdb-cluster-init status
  [ "$code" != 0 ] || fail "status exits 0 with couchdb-4 joined but never connected"
  grep -q "couchdb-4 (couchdb@couchdb-4.couchdb.internal): do not list" "$work/status-dist-ca4.log" \
    && grep -q "couchdb-4 (couchdb@couchdb-4.couchdb.internal)'s distribution certificate is issued by" "$work/status-dist-ca4.log" \
    || { cat "$work/status-dist-ca4.log" >&2; fail "status does not name couchdb-4 and its certificate"; }
  no_secret_in "$work/status-dist-ca4.log" "status with couchdb-4's foreign certificate"
  pass "couchdb-4 with another CA's certificate: the init exits 15 naming it, nothing written; joined by hand it never connects (couchdb-1 logs Unknown CA), status (exit $code) names it"

  # Its certificate from the cluster's CA: growth over TLS. The hand-made _nodes doc goes first,
  # so that the init joins it as it joins any new node.
  local rev
  rev="$(node_curl "$(dist_container couchdb-1)" "http://localhost:5984/_node/_local/_nodes/$(node_name 4)" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["_rev"])')" || fail "no _nodes doc of couchdb-4"
  node_curl "$(dist_container couchdb-1)" -X DELETE "http://localhost:5984/_node/_local/_nodes/$(node_name 4)?rev=$rev" >/dev/null \
    || fail "could not delete the hand-made _nodes doc of couchdb-4"
  init_with_tls_node4 "$work/dist-tls" "$work/init-dist4.log"
  [ "$code" = 0 ] || fail "with couchdb-4's own certificate the init exited $code"
  health="$(wait_health "$(dist_container couchdb-4)" 60 healthy)" || fail "couchdb-4 is $health after joining over TLS"
  pass "couchdb-4 with the cluster's CA's certificate (compose/dist-tls-couchdb-4.yaml): joined over TLS, healthy"

  # 4. Gone again, volumes included; e2e.sh's bundle was never touched.
  compose_dist4 --tls --profile example down -v --remove-orphans --timeout 5 >&2 || fail "down -v of the TLS bundle failed"
  [ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$dist_project")$(docker volume ls -q --filter "label=com.docker.compose.project=$dist_project")" ] \
    || fail "down -v left containers or volumes of $dist_project"
  rm -rf "$work/dist-tls" "$work/other-ca"
  pass "the TLS bundle is gone (down -v)"
}

# couchdb-4 re-created on TLS with the CA and certificate in directory $1, then the init with
# four nodes, its log into $2 (shown) and its exit status into $code.
init_with_tls_node4() {
  COUCHDB_DIST_TLS_DIR="$1" compose_dist4 --tls up -d --no-build --no-deps --force-recreate couchdb-4 >&2 \
    || fail "could not re-create couchdb-4 with the certificate in $1"
  wait_up_in "$(dist_container couchdb-4)"
  run_logged "$2" compose_dist4 --tls run --rm --no-deps -T couchdb-cluster-init
  show_log "$2"
}

# Waits until the node in container $1 answers /_up (its distribution listens by then).
wait_up_in() {
  local _
  for _ in $(seq 1 100); do
    docker exec "$1" curl -fsS -o /dev/null http://localhost:5984/_up 2>/dev/null && return 0
    sleep 0.2
  done
  fail "container $1 never answered /_up"
}

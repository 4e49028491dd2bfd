#!/usr/bin/env bash
# End-to-end test of the bundle: compose.yaml as users run it, with two differences that live in
# compose/e2e.yaml (the couchsim image instead of couchdb:3.4.2, and no Traefik), because no image
# can be pulled here.
#
#   tests/compose/e2e.sh
#
# Steps: build both static binaries and their FROM scratch images (and check the source build's
# context) -> up -d -> the init container exits 0 -> every node's _membership lists the three
# nodes -> up -d again, with the example dependant -> the init exits 0 having sent no write, and
# the example app ran after it -> `run --rm couchdb-cluster-init check` exits 0 -> re-create a
# node: the init writes nothing (its volumes kept the admin hash) -> stop one node, run the init
# again -> non-zero, naming that node -> down -v -> no container, network or volume of the run is
# left. The init runs at RUST_LOG=trace, which logs every request it sends: that is how writes are
# counted, and no secret may appear in those logs.
#
# Everything it creates carries a unique compose project name and is removed on exit, pass or fail
# (containers, networks, volumes, the two image tags, the temporary directory).
#
# It first runs tests/compose/static.sh (schema, `config`, the label checks; no container).
#
# Environment (all optional):
#   E2E_SKIP_STATIC=1                     skip tests/compose/static.sh
#   E2E_INIT_BINARY, E2E_COUCHSIM_BINARY  use these static binaries instead of building them
#   E2E_KEEP_IMAGES=1                     keep the two image tags (for debugging)
#   CARGO_TARGET_DIR                      honoured by the build
# Uses `docker compose` (v2) when present, else docker-compose (1.29).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

passed=0
failed=0
log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pass() { passed=$((passed + 1)); log "ok: $*"; }
fail() { failed=$((failed + 1)); log "FAIL: $*"; exit 1; }

if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
else
  echo "e2e: neither 'docker compose' nor 'docker-compose' is available" >&2
  exit 1
fi

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
project="cci-e2e-${run_id}"
init_image="couchdb-cluster-init:e2e-${run_id}"
context_image="couchdb-cluster-init-context:e2e-${run_id}"
sim_image="couchsim:e2e-${run_id}"
work="$(mktemp -d "${TMPDIR:-/tmp}/cci-e2e.XXXXXX")"
env_file="$work/e2e.env"
admin_user="e2e-admin"
expected_members='["couchdb@couchdb-1.couchdb.internal","couchdb@couchdb-2.couchdb.internal","couchdb@couchdb-3.couchdb.internal"]'

# The shell's own COUCHDB_* would override the env file: this run uses only its own values.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(COUCHDB_|COUCHSIM_IMAGE$|RUST_LOG$)' || true)

compose() {
  "${compose_cmd[@]}" --project-name "$project" --env-file "$env_file" \
    -f "$root/compose.yaml" -f "$root/compose/e2e.yaml" "$@"
}

# The containers, networks and volumes of this run, by compose's project label.
project_containers() { docker ps -aq --filter "label=com.docker.compose.project=$project"; }
project_networks() { docker network ls -q --filter "label=com.docker.compose.project=$project"; }
project_volumes() { docker volume ls -q --filter "label=com.docker.compose.project=$project"; }
service_container() {
  docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" --filter "label=com.docker.compose.oneoff=False"
}

cleaned=0
cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ] && [ -s "$env_file" ]; then
    log "failed (exit $rc); the containers' last logs:"
    compose --profile example logs --no-color --tail=60 >&2 2>&1
  fi
  if [ "$cleaned" -eq 0 ] && [ -s "$env_file" ]; then
    compose --profile example down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  fi
  # Whatever compose left behind (an interrupted run, a one-off container).
  project_containers | xargs -r docker rm -f -v >/dev/null 2>&1
  project_networks | xargs -r docker network rm >/dev/null 2>&1
  project_volumes | xargs -r docker volume rm -f >/dev/null 2>&1
  if [ "${E2E_KEEP_IMAGES:-0}" != 1 ]; then
    docker image rm -f "$init_image" "$sim_image" >/dev/null 2>&1
  fi
  docker image rm -f "$context_image" >/dev/null 2>&1
  rm -rf "$work"
  if [ "$rc" -ne 0 ]; then
    echo "$passed passed, $((failed > 0 ? failed : 1)) failed"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
log "project $project, using ${compose_cmd[*]}"

# 1. The two static binaries.
triple="$(rustc -vV | sed -n 's/^host: //p')"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
if [ -n "${E2E_INIT_BINARY:-}" ] && [ -n "${E2E_COUCHSIM_BINARY:-}" ]; then
  init_bin="$E2E_INIT_BINARY"
  sim_bin="$E2E_COUCHSIM_BINARY"
else
  log "building couchdb-cluster-init and couchsim (release, static, $triple)"
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$triple" \
    -p couchdb-cluster-init --bin couchdb-cluster-init -p couchsim --bin couchsim >&2
  init_bin="${E2E_INIT_BINARY:-$target_dir/$triple/release/couchdb-cluster-init}"
  sim_bin="${E2E_COUCHSIM_BINARY:-$target_dir/$triple/release/couchsim}"
fi

# 2. Their images, built without pulling anything. The init image is the root Dockerfile's
#    `host` stage, from a context holding only the binary.
mkdir -p "$work/init/dist"
cp "$init_bin" "$work/init/dist/couchdb-cluster-init"
docker build --target host -f "$root/Dockerfile" -t "$init_image" "$work/init" >"$work/build-init.log" 2>&1 \
  || { cat "$work/build-init.log" >&2; fail "docker build --target host failed"; }
init_size="$(docker image inspect --format '{{.Size}}' "$init_image")"
[ "$init_size" -le $((5 * 1024 * 1024)) ] || fail "init image is $init_size bytes, over 5 MiB"
[ "$(docker image inspect --format '{{.Config.User}}' "$init_image")" = "65534:65534" ] \
  || fail "init image does not run as 65534"
pass "init image $init_image: $init_size bytes, runs as 65534:65534"

# The simulator's image, from couchsim/Dockerfile; its context holds dist/couchsim.
mkdir -p "$work/sim/dist"
cp "$sim_bin" "$work/sim/dist/couchsim"
docker build -f "$root/couchsim/Dockerfile" -t "$sim_image" "$work/sim" >"$work/build-sim.log" 2>&1 \
  || { cat "$work/build-sim.log" >&2; fail "building the simulator image failed"; }
pass "simulator image $sim_image built"

# The default target builds from source in the Rust image, which cannot be pulled here. Check the
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
(cd "$work/context/src" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
  cargo build --release --locked --offline --target "$triple" -p couchdb-cluster-init >"$work/context-build.log" 2>&1) \
  || { cat "$work/context-build.log" >&2; fail "the Dockerfile's cargo build fails on the context .dockerignore lets through"; }
pass "the source build's context ($(du -sh "$work/context/src" | cut -f1)) has no .env/target/.git, and cargo builds the binary from it"

# 3. A test .env: random credentials, the images just built.
rand() { head -c 48 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9' | head -c 24; }
admin_password="$(rand)"
cookie="$(rand)"
secret="$(rand)"
cat >"$env_file" <<EOF
COUCHDB_USER=$admin_user
COUCHDB_PASSWORD=$admin_password
COUCHDB_COOKIE=$cookie
COUCHDB_SECRET=$secret
COUCHDB_INIT_IMAGE=$init_image
COUCHSIM_IMAGE=$sim_image
COUCHDB_INIT_TIMEOUT=2m
RUST_LOG=trace
EOF

compose config -q || fail "compose config rejects compose.yaml + compose/e2e.yaml"

# An init log, without its per-request trace lines (counted, not shown).
show_log() { grep -vE ": (GET|HEAD|PUT|POST|DELETE) /[^ ]* -> [0-9]{3}" "$1" | sed 's/^/  init | /' >&2 || true; }

# Waits for the init container to exit; prints its exit code.
wait_init() {
  local id
  id="$(service_container couchdb-cluster-init)"
  [ -n "$id" ] || fail "no couchdb-cluster-init container"
  timeout 300 docker wait "$id"
}

# The _membership of node $1 (1..3), asked from inside the node's own container: the simulator's
# image answers to the name `curl` as the real image's curl would.
membership() {
  docker exec "$(service_container "couchdb-$1")" \
    curl -fsS -u "$admin_user:$admin_password" http://localhost:5984/_membership
}

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

# ---------------------------------------------------------------------------------------------
# 4. First `up -d`: the nodes turn healthy, then the init forms the cluster.
log "docker compose up -d"
compose up -d --no-build >&2 || fail "compose up -d failed"
code="$(wait_init)"
docker logs "$(service_container couchdb-cluster-init)" >"$work/init-1.log" 2>&1
show_log "$work/init-1.log"
[ "$code" = 0 ] || fail "first init exited $code, expected 0"
no_secret_in "$work/init-1.log" "the first run (RUST_LOG=trace)"
writes="$(writes_in "$work/init-1.log")"
[ "$writes" -gt 0 ] || fail "the first run logged no write request: did it form anything?"
pass "first run: the init exited 0 after $(requests_in "$work/init-1.log") requests ($writes writes), no secret in its trace log"

check_membership

# 5. Second `up -d`, with the example dependant: the init runs again on the formed cluster and
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
  *couchdb@couchdb-3.couchdb.internal*) ;;
  *) fail "the example app's output does not show the cluster: $example_out" ;;
esac
init_finished="$(docker inspect --format '{{.State.FinishedAt}}' "$(service_container couchdb-cluster-init)")"
example_started="$(docker inspect --format '{{.State.StartedAt}}' "$example")"
python3 - "$init_finished" "$example_started" <<'PY' || fail "the example app started ($example_started) before the init finished ($init_finished)"
import sys
from datetime import datetime
def t(s):  # Docker's RFC 3339 with nanoseconds -> microseconds
    s = s.rstrip("Z")
    head, _, frac = s.partition(".")
    return datetime.fromisoformat(head + "." + (frac + "000000")[:6])
sys.exit(0 if t(sys.argv[1]) <= t(sys.argv[2]) else 1)
PY
pass "the example dependant started after the init completed and saw the cluster"

# The read-only health check users can run by hand: `docker compose run --rm couchdb-cluster-init check`.
set +e
compose run --rm --no-deps -T couchdb-cluster-init check >"$work/check.log" 2>&1
code=$?
set -e
[ "$code" = 0 ] || { cat "$work/check.log" >&2; fail "'couchdb-cluster-init check' exited $code on the formed cluster"; }
writes="$(writes_in "$work/check.log")"
[ "$writes" = 0 ] || fail "'couchdb-cluster-init check' sent $writes write requests"
pass "'compose run --rm couchdb-cluster-init check' exits 0 on the formed cluster, read-only"

# A re-created node keeps its data and its config (admin hash, uuid) on its two volumes, so the
# cluster is still formed as it was: the init, run again, writes nothing (trap 5: without the
# local.d volume the node would re-hash the admin password and drift).
log "re-creating couchdb-2, running the init again"
compose up -d --no-build --no-deps --force-recreate couchdb-2 >&2 || fail "could not re-create couchdb-2"
for _ in $(seq 1 60); do
  health="$(docker inspect --format '{{.State.Health.Status}}' "$(service_container couchdb-2)")"
  [ "$health" = healthy ] && break
  sleep 1
done
[ "$health" = healthy ] || fail "the re-created couchdb-2 is $health"
set +e
compose run --rm --no-deps -T couchdb-cluster-init >"$work/init-recreated.log" 2>&1
code=$?
set -e
show_log "$work/init-recreated.log"
[ "$code" = 0 ] || fail "after re-creating couchdb-2 the init exited $code"
writes="$(writes_in "$work/init-recreated.log")"
[ "$writes" = 0 ] || fail "after re-creating couchdb-2 the init sent $writes write requests (drift?)"
check_membership
pass "a re-created node keeps its admin hash and membership (volumes): the init writes nothing"

# 6. A node goes down; the init, run again, fails and names it.
log "stopping couchdb-3, running the init again"
compose stop couchdb-3 >&2
set +e
compose run --rm --no-deps -T -e COUCHDB_INIT_TIMEOUT=15s couchdb-cluster-init >"$work/init-3.log" 2>&1
code=$?
set -e
show_log "$work/init-3.log"
no_secret_in "$work/init-3.log" "the failing run"
[ "$code" -ne 0 ] || fail "the init exited 0 with couchdb-3 stopped"
grep -q 'couchdb-3' "$work/init-3.log" || fail "the init's output does not name couchdb-3"
pass "with couchdb-3 stopped the init exits $code and names couchdb-3"

# 7. `down -v` leaves nothing behind.
log "docker compose down -v"
compose --profile example down -v --remove-orphans --timeout 5 >&2 || fail "compose down -v failed"
cleaned=1
left="$(project_containers) $(project_networks) $(project_volumes)"
[ -z "${left// /}" ] || fail "down -v left: $left"
leftover_names="$( (docker ps -a --format '{{.Names}}'; docker network ls --format '{{.Name}}'; docker volume ls --format '{{.Name}}') | grep -F "$project" || true)"
[ -z "$leftover_names" ] || fail "down -v left: $leftover_names"
pass "down -v left no container, network or volume"

echo "$passed passed, $failed failed"

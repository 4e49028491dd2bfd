# shellcheck shell=bash
# shellcheck disable=SC2154 # compose4, root, work, code, … are e2e.sh's
# The zones override's step of tests/compose/e2e.sh, sourced by it and run on its four-node
# bundle (its helpers: compose4, run_logged, show_log, writes_in, requests_in, pass, fail, …).
# Not run on its own.
#
# compose/zones.yaml as it comes (three zones, for compose.yaml's three nodes) with the fourth
# node -> the init refuses at once, exit 2, naming couchdb-4, and sends nothing -> COUCHDB_ZONES
# for all four (zone-a twice) -> the init writes the zones and [cluster] placement
# zone-a:1,zone-b:1,zone-c:1 on the four; run again it writes nothing -> `status` shows each
# node's zone and names the ranges made before the zones that share one -> `rebalance` spreads
# them: `status` then names none, and `rebalance` again writes nothing. The zones stay (the
# steps after it only stop nodes and take the bundle down).

compose4z() { compose4 -f "$root/compose/zones.yaml" "$@"; }

zones_four_step() {
  local zones="couchdb-1=zone-a,couchdb-2=zone-a,couchdb-3=zone-b,couchdb-4=zone-c"
  log "zones: compose/zones.yaml with the fourth node"
  compose4z config -q || fail "compose config rejects the bundle with compose/zones.yaml"
  run_logged "$work/zones-0.log" compose4z run --rm --no-deps -T couchdb-cluster-init
  show_log "$work/zones-0.log"
  [ "$code" = 2 ] || fail "with zones for three of four nodes the init exited $code, not 2"
  grep -q 'COUCHDB_ZONES gives no zone for couchdb-4' "$work/zones-0.log" \
    || fail "the init does not name couchdb-4 as the node without a zone"
  [ "$(requests_in "$work/zones-0.log")" = 0 ] || fail "the init sent requests with a zone missing"
  pass "zones for three of four nodes: the init exits 2 naming couchdb-4, and sends nothing"

  run_logged "$work/zones-1.log" compose4z run --rm --no-deps -T -e COUCHDB_ZONES="$zones" couchdb-cluster-init
  show_log "$work/zones-1.log"
  [ "$code" = 0 ] || fail "the init with COUCHDB_ZONES for all four exited $code"
  grep -q 'set \[cluster\] placement zone-a:1,zone-b:1,zone-c:1 on 4 node(s)' "$work/zones-1.log" \
    || fail "the init did not set the placement on the four nodes"
  run_logged "$work/zones-2.log" compose4z run --rm --no-deps -T -e COUCHDB_ZONES="$zones" couchdb-cluster-init
  [ "$code" = 0 ] && [ "$(writes_in "$work/zones-2.log")" = 0 ] \
    || fail "the init run again with the same zones exited $code after $(writes_in "$work/zones-2.log") writes"
  pass "the init writes the zones and [cluster] placement zone-a:1,zone-b:1,zone-c:1 on four nodes; again, nothing"

  run_logged "$work/zones-status.log" compose4z run --rm --no-deps -T -e COUCHDB_ZONES="$zones" \
    -e RUST_LOG=warn couchdb-cluster-init status
  sed 's/^/  status | /' "$work/zones-status.log" >&2
  [ "$code" = 0 ] || fail "status with ranges sharing a zone exited $code (a warning, not a problem)"
  grep -qE '^node +address +version +state +connected +member +copies +bytes +zone$' "$work/zones-status.log" \
    && grep -q 'of 3 copies in zone zone-a' "$work/zones-status.log" \
    || fail "status does not show the zones or the ranges sharing zone-a"
  pass "status shows each node's zone and names the ranges sharing zone-a (exit 0)"

  run_logged "$work/zones-rebalance.log" compose4z run --rm --no-deps -T -e COUCHDB_ZONES="$zones" \
    couchdb-cluster-init rebalance
  show_log "$work/zones-rebalance.log"
  [ "$code" = 0 ] || fail "rebalance with zones exited $code"
  run_logged "$work/zones-status-2.log" compose4z run --rm --no-deps -T -e COUCHDB_ZONES="$zones" \
    -e RUST_LOG=warn couchdb-cluster-init status
  [ "$code" = 0 ] && grep -q "every range's copies over as many zones" "$work/zones-status-2.log" \
    || { cat "$work/zones-status-2.log" >&2; fail "after rebalance status still names ranges sharing a zone"; }
  run_logged "$work/zones-rebalance-2.log" compose4z run --rm --no-deps -T -e COUCHDB_ZONES="$zones" \
    couchdb-cluster-init rebalance
  [ "$code" = 0 ] && [ "$(writes_in "$work/zones-rebalance-2.log")" = 0 ] \
    || fail "rebalance run again exited $code after $(writes_in "$work/zones-rebalance-2.log") writes"
  pass "rebalance spreads every range over the zones ($(grep -o '[0-9]* cop[a-z]* moved' "$work/zones-rebalance.log" | tail -n 1)); again, nothing"
}

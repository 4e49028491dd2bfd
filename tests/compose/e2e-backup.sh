# shellcheck shell=bash
# shellcheck disable=SC2154 # compose_cmd, project, env_file, root, work, … are e2e.sh's
# The `backup` profile's step of tests/compose/e2e.sh, sourced by it and run on its formed bundle
# (its helpers: compose, service_container, node_curl, pass, fail, …). Not run on its own.
#
# `--profile backup up -d` -> the backup CouchDB (couchsim, compose/e2e-backup.yaml) starts and
# the backup run exits 0: every database replicated, its documents on the backup -> a document
# written afterwards arrives by itself -> a database created later: the next run covers it -> a
# rerun writes nothing -> the backup CouchDB stopped: the run exits 11 naming it; started again,
# the run exits 0 -> no secret in any of its logs (trace level) or in its containers' command
# lines -> (e2e.sh runs the restore drill here) -> `backup_remove`: its containers and volumes
# removed, so the steps after it see the bundle as before.
# The recovery of a job that crashed while the backup was down is slow by design (CouchDB waits
# 30 s × 2^(crashes−1) for its next tick, trap 18): tests/backup.rs covers it on a faster clock.

compose_backup() {
  "${compose_cmd[@]}" --project-name "$project" --env-file "$env_file" \
    -f "$root/compose.yaml" -f "$root/compose/e2e.yaml" -f "$root/compose/e2e-backup.yaml" \
    --profile backup "$@"
}

# `docker compose --profile backup run --rm couchdb-backup-init [env…]`; its log in $1, its code printed.
backup_run() {
  local log="$1" code
  shift
  run_logged "$log" compose_backup run --rm --no-deps -T "$@" couchdb-backup-init
  show_log "$log"
  no_secret_in "$log" "the backup run"
  echo "$code"
}

# `db` on the cluster, through couchdb-1, with documents `prefix-0..n-1`.
cluster_db() {
  local db="$1" n="$2" docs
  docs="$(python3 -c 'import json, sys
print(json.dumps({"docs": [{"_id": "%s-%d" % (sys.argv[1], i), "i": i} for i in range(int(sys.argv[2]))]}))' "$db" "$n")"
  node_curl "$(service_container couchdb-1)" -X PUT "http://localhost:5984/$db" >/dev/null \
    || fail "could not create $db on the cluster"
  node_curl "$(service_container couchdb-1)" -X POST -H 'Content-Type: application/json' -d "$docs" \
    "http://localhost:5984/$db/_bulk_docs" >/dev/null || fail "could not write $n documents to $db"
}

# doc_count of `db` on the backup CouchDB (empty when it has no such database).
backup_count() {
  node_curl "$(service_container couchdb-backup)" "http://localhost:5984/$1" 2>/dev/null \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["doc_count"])' 2>/dev/null || true
}

backup_step() {
  log "the backup profile: two databases, then docker compose --profile backup up -d"
  compose_backup config -q || fail "compose config rejects compose.yaml + the e2e overrides + --profile backup"
  cluster_db orders 40
  cluster_db invoices 25
  compose_backup up -d --no-build >&2 || fail "compose --profile backup up -d failed"
  record_volumes
  local run code
  run="$(service_container couchdb-backup-init)"
  [ -n "$run" ] || fail "no couchdb-backup-init container"
  code="$(timeout 300 docker wait "$run")"
  docker logs "$run" >"$work/backup-1.log" 2>&1
  show_log "$work/backup-1.log"
  no_secret_in "$work/backup-1.log" "the first backup run (RUST_LOG=trace)"
  [ "$code" = 0 ] || fail "the first backup run exited $code, expected 0"
  grep -q '3 database(s) replicated and caught up: _users, invoices, orders' "$work/backup-1.log" \
    || fail "the first backup run does not say the three databases (_users included) are caught up"
  local counts
  counts="$(backup_count orders) $(backup_count invoices)"
  [ "$counts" = "40 25" ] || fail "the backup holds $counts documents in orders and invoices, expected 40 25"
  pass "--profile backup up -d: the backup run exited 0 and the backup CouchDB holds every document (40 + 25)"

  # Continuous: a document written afterwards arrives by itself.
  node_curl "$(service_container couchdb-2)" -X PUT -d '{"late":true}' http://localhost:5984/orders/late >/dev/null \
    || fail "could not write orders/late"
  local waited=0
  until node_curl "$(service_container couchdb-backup)" http://localhost:5984/orders/late >/dev/null 2>&1; do
    [ "$waited" -lt 150 ] || fail "orders/late never reached the backup CouchDB"
    sleep 0.2
    waited=$((waited + 1))
  done
  pass "a document written through couchdb-2 afterwards reached the backup CouchDB by itself"

  # A database created later is covered by the next run; a run after that writes nothing.
  cluster_db later 7
  code="$(backup_run "$work/backup-2.log")"
  [ "$code" = 0 ] || fail "the backup run after a new database exited $code"
  [ "$(backup_count later)" = 7 ] || fail "the new database holds $(backup_count later) documents on the backup, expected 7"
  pass "a database created later: the next run replicated it ($(writes_in "$work/backup-2.log") writes)"
  code="$(backup_run "$work/backup-3.log")"
  [ "$code" = 0 ] || fail "the backup rerun exited $code"
  [ "$(writes_in "$work/backup-3.log")" = 0 ] || fail "the backup rerun sent $(writes_in "$work/backup-3.log") writes"
  grep -q 'nothing written' "$work/backup-3.log" || fail "the backup rerun's summary does not say 'nothing written'"
  pass "a backup rerun: exit 0 after $(requests_in "$work/backup-3.log") requests, none of them a write"

  # The backup CouchDB stopped: named, exit 11. Back: exit 0.
  compose_backup stop couchdb-backup >&2
  code="$(backup_run "$work/backup-down.log" -e COUCHDB_INIT_TIMEOUT=5s)"
  [ "$code" = 11 ] || fail "with the backup CouchDB stopped the backup run exited $code, expected 11"
  grep -q 'the backup CouchDB couchdb-backup did not answer /_up in time' "$work/backup-down.log" \
    || fail "the backup run does not name the stopped backup CouchDB"
  compose_backup start couchdb-backup >&2
  code="$(backup_run "$work/backup-back.log")"
  [ "$code" = 0 ] || fail "with the backup CouchDB back the backup run exited $code"
  pass "the backup CouchDB stopped: the run exits 11 naming it; started again: the run exits 0"

  # Nothing of the profile holds a secret where docker inspect shows it.
  local id s
  for id in "$(service_container couchdb-backup)" "$run"; do
    docker inspect --format '{{json .Args}} {{json .Config.Cmd}} {{json .Config.Labels}} {{json .Config.Healthcheck}}' "$id"
  done >"$work/backup-inspect.txt"
  for s in "$admin_password" "$cookie" "$secret"; do
    ! grep -qF -e "$s" "$work/backup-inspect.txt" || fail "a secret is in a backup container's command line, labels or healthcheck"
  done
  pass "no secret in the backup profile's command lines, labels or healthchecks, nor in its trace logs"
}

# Leaves the bundle as the later steps expect it: the profile's containers and volumes gone (after
# the restore drill, tests/compose/e2e-restore.sh, which needs them).
backup_remove() {
  compose_backup rm -sfv couchdb-backup couchdb-backup-init >/dev/null 2>&1 || fail "could not remove the backup profile's containers"
  docker volume rm "${project}_couchdb-backup-data" "${project}_couchdb-backup-config" >/dev/null \
    || fail "could not remove the backup profile's volumes"
}

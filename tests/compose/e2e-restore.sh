# shellcheck shell=bash
# shellcheck disable=SC2154 # compose_cmd, project, env_file, root, work, … are e2e.sh's
# The disaster-recovery drill of tests/compose/e2e.sh (docs/backup.md, "Backup and restore"),
# sourced by it and run after the backup profile's step, with that profile still up (its helpers:
# compose, compose_backup, backup_run, node_curl, pass, fail, …). Not run on its own.
#
# The data an application has: `orders` readable by alice alone (its `_security`), a design doc
# with a view, alice in `_users` -> a backup run brings all of it to the backup CouchDB -> the
# cluster lost: its three nodes and their volumes removed, the backup kept -> `up -d`: the init
# forms a new, empty cluster -> `docker compose --profile backup run --rm couchdb-backup-init
# restore` exits 0 -> alice reads her database through Traefik; the view answers -> a rerun of the
# restore writes nothing -> the continuous backup, run again, finds the backup complete: it only
# re-creates its replications, and the backup's documents are unchanged.

restore_alice_password="alice-$(head -c 24 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9' | head -c 16)"

# A JSON document through couchdb-1 (PUT), failing the test with `what` otherwise.
cluster_put() {
  local path="$1" body="$2" what="$3"
  node_curl "$(service_container couchdb-1)" -X PUT -H 'Content-Type: application/json' -d "$body" \
    "http://localhost:5984/$path" >/dev/null || fail "could not write $what"
}

# GET `path` through Traefik as alice: the status code (her password from the environment only).
# While Traefik routes to no node yet (a new cluster's nodes pass their healthcheck a moment after
# the init: 404/502/503 from Traefik itself) it asks again, for up to 30 s.
as_alice() {
  ALICE_PASSWORD="$restore_alice_password" python3 - "$port" "$1" <<'PY'
import base64, http.client, os, sys, time
port, path = int(sys.argv[1]), sys.argv[2]
token = base64.b64encode(("alice:" + os.environ["ALICE_PASSWORD"]).encode()).decode()
deadline = time.monotonic() + 30
while True:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.request("GET", path, headers={"Authorization": "Basic " + token})
        resp = conn.getresponse()
        status, server = resp.status, resp.getheader("Server") or ""
    except OSError:
        status, server = 0, ""
    # CouchDB's answers carry `Server: CouchDB/…`; Traefik's own 404/502/503 do not.
    if server.startswith("CouchDB") or time.monotonic() > deadline:
        print(status)
        break
    time.sleep(0.2)
PY
}

# Writes a run sent, not counting `_revs_diff` (a read sent as POST).
restore_writes_in() { grep -E ": (PUT|POST|DELETE) /[^ ]* -> [0-9]{3}" "$1" | grep -cv '/_revs_diff ' || true; }

restore_step() {
  log "the restore drill: alice's database, its _security, a design doc, alice; a backup run"
  cluster_put "orders/_security" '{"admins":{"names":[],"roles":[]},"members":{"names":["alice"],"roles":[]}}' "orders/_security"
  cluster_put "orders/_design/report" '{"views":{"by_id":{"map":"function(d){ emit(d._id, null); }"}}}' "orders/_design/report"
  cluster_put "_users/org.couchdb.user:alice" \
    "{\"name\":\"alice\",\"password\":\"$restore_alice_password\",\"roles\":[],\"type\":\"user\"}" "the user alice"
  [ "$(as_alice /orders/orders-1)" = 200 ] || fail "alice cannot read orders on the cluster before the drill"
  local code
  code="$(backup_run "$work/restore-backup.log")"
  [ "$code" = 0 ] || fail "the backup run before the drill exited $code"
  grep -q 'wrote _security of 1 database(s) on the backup' "$work/restore-backup.log" \
    || fail "the backup run did not copy orders' _security"
  node_curl "$(service_container couchdb-backup)" "http://localhost:5984/_users/org.couchdb.user:alice" >/dev/null \
    || fail "alice is not in the backup's _users"
  local before
  before="$(backup_count orders) $(backup_count invoices) $(backup_count later)"
  pass "a backup run kept orders' _security, its design doc and alice (_users) on the backup CouchDB"

  log "the cluster lost: its nodes and their volumes removed; the backup CouchDB kept"
  compose rm -sfv couchdb-1 couchdb-2 couchdb-3 couchdb-cluster-init >/dev/null 2>&1 \
    || fail "could not remove the cluster's containers"
  local n kind
  for n in 1 2 3; do
    for kind in data config; do
      docker volume rm "${project}_couchdb-$n-$kind" >/dev/null || fail "could not remove couchdb-$n's $kind volume"
    done
  done
  [ "$(backup_count orders)" = "$(cut -d' ' -f1 <<<"$before")" ] || fail "the backup changed when the cluster went"
  compose up -d --no-build >&2 || fail "up -d of a new cluster failed"
  record_volumes
  code="$(wait_init)"
  [ "$code" = 0 ] || fail "the init of the new cluster exited $code"
  check_membership
  local status
  status="$(as_alice /orders/orders-1)"
  [ "$status" = 401 ] || fail "alice on the new cluster, before the restore: $status, expected 401 (unknown)"
  pass "up -d: a new, empty cluster formed on fresh volumes; alice is unknown to it (401)"

  run_logged "$work/restore-1.log" compose_backup run --rm --no-deps -T couchdb-backup-init restore
  show_log "$work/restore-1.log"
  no_secret_in "$work/restore-1.log" "the restore (RUST_LOG=trace)"
  ! grep -qF -e "$restore_alice_password" "$work/restore-1.log" || fail "the restore logged alice's password"
  [ "$code" = 0 ] || fail "the restore exited $code, expected 0"
  grep -q 'restore: 4 database(s) from couchdb-backup in place' "$work/restore-1.log" \
    || fail "the restore does not say the 4 databases (_users, invoices, later, orders) are in place"
  local counts
  counts="$(node_curl "$(service_container couchdb-2)" http://localhost:5984/orders \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["doc_count"])')"
  [ "$counts" = "$(($(cut -d' ' -f1 <<<"$before")))" ] || fail "orders holds $counts documents on the new cluster, the backup $(cut -d' ' -f1 <<<"$before")"
  pass "restore: exit 0, every database back ($(restore_writes_in "$work/restore-1.log") writes), orders with its $counts documents"

  [ "$(as_alice /orders/orders-1)" = 200 ] || fail "alice cannot read orders through Traefik after the restore"
  [ "$(as_alice /invoices/invoices-1)" = 403 ] || fail "alice reads invoices, which is not hers"
  [ "$(as_alice '/orders/_design/report/_view/by_id?limit=1')" = 200 ] || fail "the view does not answer alice"
  pass "alice logs in and reads orders through Traefik (and its view); invoices stays closed to her (403)"

  run_logged "$work/restore-2.log" compose_backup run --rm --no-deps -T couchdb-backup-init restore
  [ "$code" = 0 ] || { show_log "$work/restore-2.log"; fail "the restore rerun exited $code"; }
  [ "$(restore_writes_in "$work/restore-2.log")" = 0 ] \
    || fail "the restore rerun sent $(restore_writes_in "$work/restore-2.log") writes"
  grep -q 'nothing to do, nothing written' "$work/restore-2.log" || fail "the restore rerun does not say 'nothing written'"
  pass "a restore rerun: exit 0 after $(requests_in "$work/restore-2.log") requests, none of them a write"

  code="$(backup_run "$work/restore-backup-again.log")"
  [ "$code" = 0 ] || fail "the backup run after the restore exited $code"
  grep -q 'started 4 continuous replication(s)' "$work/restore-backup-again.log" \
    || fail "the backup run after the restore did not re-create its 4 replications"
  [ "$(backup_count orders) $(backup_count invoices) $(backup_count later)" = "$before" ] \
    || fail "the backup's documents changed after the restore: $(backup_count orders) $(backup_count invoices) $(backup_count later), were $before"
  pass "the continuous backup resumes after the restore: its replications re-created, nothing new on the backup"
}

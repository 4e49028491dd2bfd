# shellcheck shell=bash
# shellcheck disable=SC2154 # compose_cmd, project, env_file, root, work, port, … are e2e.sh's
# The HTTPS override's step of tests/compose/e2e.sh (compose/https.yaml), sourced by it and run on
# its formed bundle (its helpers: compose, service_container, traefik_client, pass, fail, …). Not
# run on its own; it runs under whichever Compose e2e.sh drives (.ci/run: docker-compose 1.29 and
# Compose v2).
#
# A throwaway CA and a certificate for couchdb.example.test (openssl) -> `up -d` with the override
# (DEFAULT_URL=example.test, the certificate as COUCHDB_TLS_CERT/COUCHDB_TLS_KEY, websecure on a
# free loopback port): the nodes are re-created with the new labels, the init runs again and
# writes nothing -> curl verifying against that CA (--cacert, --resolve; never -k for our name):
# /_up answers 200 through https://couchdb.example.test; Set-Cookie couchdb_sticky=…; Secure;
# 20/20 requests with the cookie on one node, spread without it; another host name on the same
# port gets Traefik's 404, no CouchDB answer; /_utils/ reaches a node (and /_utils redirects to
# https) through HTTPS and plain HTTP; http://127.0.0.1:<port> still answers, not redirected ->
# the pinned node stopped: no 5xx, another node answers, the cookie is rewritten -> no key
# material in any container's inspect (labels, command line, environment) or in any log; the key
# reaches Traefik as a read-only mount -> `up -d` without the override: the plain bundle as
# before, and nothing listens for HTTPS any more.

https_host=couchdb.example.test
https_tls="$work/tls"
https_port="" # websecure on 127.0.0.1, chosen by https_step
https_url=""

# curl as a client of https://couchdb.example.test:<port>, the name resolved to loopback and the
# certificate checked against the throwaway CA.
https_curl() { curl --cacert "$https_tls/ca.crt" --resolve "$https_host:$https_port:127.0.0.1" "$@"; }

# tests/compose/through_traefik.py over TLS to the websecure port (credentials from the
# environment, as traefik_client does).
tls_client() {
  CCI_E2E_USER="$admin_user" CCI_E2E_PASSWORD="$admin_password" \
    python3 "$root/tests/compose/through_traefik.py" --https "$https_host" --cacert "$https_tls/ca.crt" "$https_port" "$@"
}

compose_https() {
  "${compose_cmd[@]}" --project-name "$project" --env-file "$env_file" \
    -f "$root/compose.yaml" -f "$root/compose/e2e.yaml" -f "$root/compose/https.yaml" "$@"
}

# A CA and a server certificate for $1, valid two days, in directory $2: ca.crt, couchdb.crt,
# couchdb.key (mode 600). The CA's key is thrown away with the directory.
make_test_certificate() {
  local name="$1" dir="$2"
  mkdir -p "$dir"
  (
    cd "$dir"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=cci e2e throwaway CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout couchdb.key -out couchdb.csr
    printf '%s\n' "subjectAltName=DNS:$name" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
      "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >server.ext
    openssl x509 -req -in couchdb.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out couchdb.crt
    chmod 644 ca.crt couchdb.crt
  ) >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; fail "openssl could not make the test certificate"; }
}

https_step() {
  local out code n id health
  log "HTTPS: a throwaway CA and a certificate for $https_host, then up -d with compose/https.yaml"
  make_test_certificate "$https_host" "$https_tls"
  https_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  cp "$env_file" "$work/e2e.env.plain"
  {
    echo "DEFAULT_URL=example.test"
    echo "COUCHDB_TLS_CERT=$https_tls/couchdb.crt"
    echo "COUCHDB_TLS_KEY=$https_tls/couchdb.key"
    echo "COUCHDB_HTTPS_PUBLISH=127.0.0.1:$https_port"
  } >"$work/https.env"
  cat "$work/https.env" >>"$env_file"
  https_url="https://$https_host:$https_port"

  compose_https config -q || fail "compose config rejects compose.yaml + compose/e2e.yaml + compose/https.yaml"
  local since
  since="$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
  compose_https up -d --no-build >&2 || fail "up -d with compose/https.yaml failed"
  record_volumes
  code="$(wait_init)"
  docker logs --since "$since" "$(service_container couchdb-cluster-init)" >"$work/init-https.log" 2>&1
  show_log "$work/init-https.log"
  [ "$code" = 0 ] || fail "with compose/https.yaml the init exited $code"
  [ "$(writes_in "$work/init-https.log")" = 0 ] || fail "with compose/https.yaml the init wrote to the formed cluster"
  for n in 1 2 3; do
    health="$(wait_health "$(service_container "couchdb-$n")" 60 healthy)" || fail "couchdb-$n is $health with compose/https.yaml"
  done
  # Traefik answers 404 for a moment after it starts (it has not seen the nodes yet): -f retries.
  https_curl -fsS -o /dev/null --retry 30 --retry-all-errors --retry-delay 1 "$https_url/_up" \
    || fail "GET $https_url/_up (verified against the test CA) never answered 200"
  code="$(https_curl -s -o /dev/null -w '%{http_code}' "$https_url/_up")" || true
  [ "$code" = 200 ] || fail "GET $https_url/_up (verified against the test CA) answered '$code'"
  pass "up -d with compose/https.yaml: nodes re-created, the init wrote nothing; GET $https_url/_up answers 200, certificate verified against the test CA"

  # What docs/compose.md shows curl seeing.
  https_curl -si "$https_url/_up" >"$work/https-up.txt" || fail "curl $https_url/_up failed"
  tr -d '\r' <"$work/https-up.txt" | sed 's/^/  https | /' >&2
  sticky_checks tls_client "Path=/; HttpOnly; Secure; SameSite=Lax" "over HTTPS, "

  # Another host name on the same entry point: Traefik's own 404, never a CouchDB answer (with -k:
  # the certificate is not for that name; what matters is who answers).
  out="$(curl -sk -w ' %{http_code}' --resolve "other.example.test:$https_port:127.0.0.1" \
    "https://other.example.test:$https_port/_up")" || fail "curl https://other.example.test failed"
  [ "$out" = "404 page not found
 404" ] || fail "https://other.example.test/_up answered: $out"
  out="$(curl -sk -w ' %{http_code}' "https://127.0.0.1:$https_port/_up")" || fail "curl https://127.0.0.1 failed"
  [[ "$out" == *" 404" && "$out" != *'"status"'* ]] || fail "https://127.0.0.1/_up (no name) answered: $out"
  pass "over HTTPS another host name (or none) gets Traefik's 404, no CouchDB answer"

  # Fauxton (/_utils) through either entry point; /_utils redirects and stays on https.
  out="$(https_curl -s -w ' %{http_code} %{content_type}' "$https_url/_utils/")" || fail "curl $https_url/_utils/ failed"
  [[ "$out" == *"<title>Project Fauxton</title>"*" 200 text/html" ]] || fail "$https_url/_utils/ answered: $out"
  out="$(https_curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$https_url/_utils")"
  [ "$out" = "301 $https_url/_utils/" ] || fail "$https_url/_utils answered '$out', expected 301 to $https_url/_utils/"
  out="$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/_utils/")" || fail "curl http://127.0.0.1:$port/_utils/ failed"
  [[ "$out" == *"<title>Project Fauxton</title>"*" 200" ]] || fail "http://127.0.0.1:$port/_utils/ answered: $out"
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/_up")"
  [ "$code" = 200 ] || fail "with compose/https.yaml, http://127.0.0.1:$port/_up answered $code"
  pass "/_utils/ reaches a node through HTTPS and plain HTTP (/_utils: 301 to $https_url/_utils/); plain HTTP still answers, not redirected"

  # The pinned node stops: over HTTPS too, the client moves without seeing an error.
  local containers=()
  for n in 1 2 3; do containers+=(--container "$(node_name "$n")=$(service_container "couchdb-$n")"); done
  out="$(tls_client failover "${containers[@]}" --seconds 6)" || fail "over HTTPS: $out"
  pass "over HTTPS, $(head -n 1 <<<"${out#ok }")"
  local stopped
  stopped="$(sed -n 's/^pinned=couchdb@\(couchdb-[0-9]\).*/\1/p' <<<"$out")"
  compose_https start "$stopped" >&2 || fail "could not start $stopped again"
  health="$(wait_health "$(service_container "$stopped")" 60 healthy)" || fail "$stopped came back $health"

  # No key material anywhere Docker shows or logs: not in any container's inspect (labels,
  # command line, environment), not in any log. The key reaches Traefik as a read-only file.
  for id in $(project_containers); do docker inspect "$id"; done >"$work/inspect-https.json"
  compose_https logs --no-color >"$work/logs-https.txt" 2>&1
  docker logs "$(service_container traefik)" >>"$work/logs-https.txt" 2>&1
  local pem
  for pem in "$https_tls/couchdb.key" "$https_tls/ca.key"; do
    while read -r line; do
      if grep -qF -e "$line" "$work/inspect-https.json" "$work/logs-https.txt"; then
        fail "a line of $(basename "$pem") is in docker inspect or the logs"
      fi
    done < <(grep -v -- '-----' "$pem")
  done
  grep -q 'PRIVATE KEY' "$work/inspect-https.json" "$work/logs-https.txt" && fail "'PRIVATE KEY' in docker inspect or the logs"
  out="$(docker inspect --format '{{range .Mounts}}{{if eq .Destination "/run/secrets/couchdb_tls_key"}}{{.RW}}{{end}}{{end}}' \
    "$(service_container traefik)")"
  [ "$out" = false ] || fail "the key is not mounted read-only at /run/secrets/couchdb_tls_key (RW: '$out')"
  if grep -E 'ERR|level=error' "$work/logs-https.txt" | grep -iE 'tls|certif|secret|/etc/traefik/dynamic'; then
    fail "Traefik logged an error about the certificate"
  fi
  pass "no key material in any container's inspect (labels, command line, environment) or log ($(wc -l <"$work/logs-https.txt") lines); the key is a read-only mount in Traefik"

  # Back to the plain bundle, as the steps after this one expect it.
  log "up -d without compose/https.yaml"
  cp "$work/e2e.env.plain" "$env_file"
  compose up -d --no-build >&2 || fail "up -d without compose/https.yaml failed"
  [ "$(wait_init)" = 0 ] || fail "the init failed after leaving compose/https.yaml"
  healthy_routed_spread "after leaving HTTPS: "
  code="$(https_curl -s -o /dev/null -w '%{http_code}' "$https_url/_up")" || true
  [ "$code" = 000 ] || fail "without compose/https.yaml $https_url still answered $code"
  pass "up -d without the override: plain HTTP as before (${spread#ok }); nothing answers on HTTPS"
}

# With the fourth node (compose/couchdb-4.yaml + compose/https-couchdb-4.yaml), run after
# e2e.sh's step 10 joined couchdb-4: the override again, the init writes nothing, and over HTTPS
# couchdb-4 answers too, requests spread over the four nodes. The env file keeps the HTTPS
# settings from here on (the later steps ignore them).
https_four_step() {
  local out spread n health
  log "HTTPS with the fourth node: up -d with compose/https.yaml and compose/https-couchdb-4.yaml"
  cat "$work/https.env" >>"$env_file"
  "${compose_cmd[@]}" --project-name "$project" --env-file "$env_file" \
    -f "$root/compose.yaml" -f "$root/compose/couchdb-4.yaml" -f "$root/compose/https.yaml" \
    -f "$root/compose/https-couchdb-4.yaml" -f "$root/compose/e2e.yaml" \
    up -d --no-build >&2 || fail "up -d with the fourth node and compose/https.yaml failed"
  record_volumes
  [ "$(wait_init)" = 0 ] || fail "with the fourth node and compose/https.yaml the init failed"
  for n in 1 2 3 4; do
    health="$(wait_health "$(service_container "couchdb-$n")" 60 healthy)" || fail "couchdb-$n is $health with HTTPS and four nodes"
  done
  # Each node is routed once Traefik's health check passes: every one answers before the spread.
  for n in 1 2 3; do
    tls_client reaches --name "$(node_name "$n")" --deadline 30 >/dev/null || fail "over HTTPS with four nodes: couchdb-$n is not routed"
  done
  out="$(tls_client reaches --name "$(node_name 4)" --deadline 30)" || fail "over HTTPS with four nodes: $out"
  spread="$(tls_client spread --count 16 --nodes 4)" || fail "over HTTPS with four nodes: $spread"
  pass "with compose/https-couchdb-4.yaml, over HTTPS ${out#ok }; ${spread#ok }"
}

#!/usr/bin/env bash
# Static checks of the bundle; starts no container.
#
#   tests/compose/static.sh
#
# - compose.yaml and the overrides in compose/ against the compose-spec JSON schema
#   (check-jsonschema);
# - `config` accepts compose.yaml alone, with the fourth node (compose/couchdb-4.yaml) and with
#   the test overrides, with a test .env, under every Compose found here (docker-compose 1.29,
#   `docker compose` v2); the test overrides change nothing but images; the HTTPS overrides
#   (compose/https.yaml, with the fourth node, and compose/https-letsencrypt.yaml) are accepted,
#   refuse to start without their required variables naming them, and only add to compose.yaml;
# - `config` refuses to start when COUCHDB_USER, COUCHDB_PASSWORD, COUCHDB_COOKIE or COUCHDB_SECRET
#   is missing, naming it; an .env written by scripts/gen-env is accepted;
# - tests/compose/check_compose.py: the Traefik labels are one anchor, identical on every node,
#   name port 5984, the sticky cookie and the failover; the membership healthcheck's shape; no
#   secret in a label, command line or healthcheck; Traefik's static configuration; the
#   monitoring profile (Prometheus, its mounts, job name and ports); etc.
# - the monitoring profile: `config` accepts it and mounts this repository's monitoring/ files;
#   under Compose v2 it selects the watcher and Prometheus (and the watch profile no Prometheus);
# Installs PyYAML and check-jsonschema (pinned: tests/compose/requirements.txt) when missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

work="$(mktemp -d "${TMPDIR:-/tmp}/cci-static.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The shell's own values would override the env files below.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(COUCHDB_|COUCHSIM_IMAGE$|RUST_LOG$)' || true)

pin() { grep -E "^$1==" "$root/tests/compose/requirements.txt"; }
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet "$(pin pyyaml)" >&2
python3 -m check_jsonschema --version >/dev/null 2>&1 || python3 -m pip install --quiet "$(pin check-jsonschema)" >&2

# 1. The compose-spec schema (structure, before interpolation).
for f in compose.yaml compose/*.yaml; do
  if out="$(python3 -m check_jsonschema --builtin-schema vendor.compose-spec "$f" 2>&1)"; then
    ok "$f matches the compose-spec schema"
  else
    bad "$f does not match the compose-spec schema: $out"
  fi
done

# 2. `config` under each Compose available.
composes=()
command -v docker-compose >/dev/null 2>&1 && composes+=("docker-compose")
docker compose version >/dev/null 2>&1 && composes+=("docker compose")
[ "${#composes[@]}" -gt 0 ] || bad "no Compose found (docker-compose or docker compose)"

cat >"$work/test.env" <<'EOF'
COUCHDB_USER=admin
COUCHDB_PASSWORD=static-test-password
COUCHDB_COOKIE=static-test-cookie
COUCHDB_SECRET=static-test-secret
COUCHSIM_IMAGE=couchsim:static-test
DEFAULT_URL=example.test
COUCHDB_TLS_CERT=./tls/couchdb.crt
COUCHDB_TLS_KEY=./tls/couchdb.key
COUCHDB_ACME_EMAIL=ops@example.test
COUCHDB_HTTPS_PUBLISH=0.0.0.0:443
COUCHDB_DIST_TLS_DIR=./dist-tls
EOF

for c in "${composes[@]}"; do
  version="$($c version --short 2>/dev/null || $c version | head -n 1)"
  # shellcheck disable=SC2086 # $c is one or two words on purpose
  if out="$($c --env-file "$work/test.env" -f compose.yaml config -q 2>&1)"; then
    ok "$c ($version) config accepts compose.yaml"
  else
    bad "$c ($version) config rejects compose.yaml: $out"
  fi
  for files in "compose.yaml compose/couchdb-4.yaml" "compose.yaml compose/e2e.yaml" \
      "compose.yaml compose/couchdb-4.yaml compose/e2e.yaml" \
      "compose.yaml compose/https.yaml" "compose.yaml compose/e2e.yaml compose/https.yaml" \
      "compose.yaml compose/couchdb-4.yaml compose/https.yaml compose/https-couchdb-4.yaml" \
      "compose.yaml compose/https-letsencrypt.yaml" "compose.yaml compose/zones.yaml" \
      "compose.yaml compose/couchdb-4.yaml compose/e2e.yaml compose/zones.yaml" \
      "compose.yaml compose/dist-tls.yaml" \
      "compose.yaml compose/e2e.yaml compose/dist-tls.yaml" \
      "compose.yaml compose/couchdb-4.yaml compose/dist-tls.yaml compose/dist-tls-couchdb-4.yaml" \
      "compose.yaml compose/dist-tls.yaml compose/https.yaml"; do
    # shellcheck disable=SC2086,SC2046 # $c is one or two words, $files a list, on purpose
    if out="$($c --env-file "$work/test.env" $(printf -- '-f %s ' $files) config -q 2>&1)"; then
      ok "$c ($version) config accepts ${files// / + }"
    else
      bad "$c ($version) config rejects ${files// / + }: $out"
    fi
  done
  # What the end-to-end test runs differs from what users run in images only.
  # shellcheck disable=SC2086
  if python3 - <($c --env-file "$work/test.env" -f compose.yaml -f compose/couchdb-4.yaml config 2>/dev/null) \
      <($c --env-file "$work/test.env" -f compose.yaml -f compose/couchdb-4.yaml -f compose/e2e.yaml \
        config 2>/dev/null) <<'PY'
import sys, yaml
users, test = (yaml.safe_load(open(f)) for f in sys.argv[1:3])
def strip(doc):
    for svc in doc.get("services", {}).values():
        svc.pop("image", None)
    return doc
sys.exit(0 if users and strip(users) == strip(test) else 1)
PY
  then
    ok "$c: the e2e overrides change nothing but images (Traefik included, as users run it)"
  else
    bad "$c: the e2e overrides change more than images"
  fi

  for var in COUCHDB_USER COUCHDB_PASSWORD COUCHDB_COOKIE COUCHDB_SECRET; do
    grep -v "^$var=" "$work/test.env" >"$work/missing.env"
    if out="$($c --env-file "$work/missing.env" -f compose.yaml config -q 2>&1)"; then
      bad "$c config starts without $var"
    elif grep -q "$var is not set" <<<"$out"; then
      ok "$c config refuses to start without $var, and says so"
    else
      bad "$c config refuses to start without $var but does not name it: $out"
    fi
  done
  # The HTTPS overrides' own required variables (compose.yaml alone needs none of them).
  for case in "compose/https.yaml DEFAULT_URL" "compose/https.yaml COUCHDB_TLS_CERT" \
      "compose/https.yaml COUCHDB_TLS_KEY" "compose/https-letsencrypt.yaml DEFAULT_URL" \
      "compose/https-letsencrypt.yaml COUCHDB_ACME_EMAIL" "compose/https-letsencrypt.yaml COUCHDB_HTTPS_PUBLISH" \
      "compose/dist-tls.yaml COUCHDB_DIST_TLS_DIR"; do
    read -r file var <<<"$case"
    grep -v "^$var=" "$work/test.env" >"$work/missing.env"
    # shellcheck disable=SC2086
    if out="$($c --env-file "$work/missing.env" -f compose.yaml -f "$file" config -q 2>&1)"; then
      bad "$c config starts $file without $var"
    elif grep -q "$var is not set" <<<"$out"; then
      ok "$c config refuses to start $file without $var, and says so"
    else
      bad "$c config refuses to start $file without $var but does not name it: $out"
    fi
  done
  # The HTTPS override adds, and takes nothing away: compose.yaml's Traefik environment, ports and
  # volumes, and the nodes' labels, are all still there.
  # shellcheck disable=SC2086
  if python3 - <($c --env-file "$work/test.env" -f compose.yaml config 2>/dev/null) \
      <($c --env-file "$work/test.env" -f compose.yaml -f compose/https.yaml config 2>/dev/null) <<'PY'
import sys, yaml
plain, https = (yaml.safe_load(open(f)) for f in sys.argv[1:3])
def kv(x):
    if isinstance(x, dict):
        return {(k, str(v)) for k, v in x.items()}
    return {str(i) for i in x or []}
ok = bool(plain and https)
for name, svc in plain["services"].items():
    for field in ("environment", "labels", "ports", "volumes"):
        ok = ok and kv(svc.get(field)) <= kv(https["services"][name].get(field))
tr = https["services"]["traefik"]
ok = ok and "command" not in tr and any(str(p.get("target") if isinstance(p, dict) else p).split("/")[0].endswith(":443")
                                       or (isinstance(p, dict) and p.get("target") == 443) for p in tr["ports"])
sys.exit(0 if ok else 1)
PY
  then
    ok "$c: compose/https.yaml keeps all of compose.yaml's Traefik environment, ports, volumes and node labels"
  else
    bad "$c: compose/https.yaml loses part of compose.yaml's configuration (or Traefik got a command)"
  fi

  # The monitoring profile: accepted, and the files Prometheus mounts are this repository's
  # (resolved by Compose itself); where `config` applies profiles (v2), it selects the watcher and
  # Prometheus, and the watch profile alone no Prometheus.
  # shellcheck disable=SC2086
  if $c --env-file "$work/test.env" -f compose.yaml --profile monitoring config >"$work/monitoring.yaml" 2>"$work/err" \
      && python3 - "$work/monitoring.yaml" "$root" <<'PY'
import os, sys, yaml
doc, root = yaml.safe_load(open(sys.argv[1])), sys.argv[2]
prom = doc["services"]["prometheus"]
binds = {}
for v in prom.get("volumes") or []:
    if isinstance(v, dict) and v.get("type") == "bind":
        binds[v["target"]] = v["source"]
    elif isinstance(v, str) and v.startswith("/"):
        src, dst = v.split(":")[:2]
        binds[dst] = src
want = {"/etc/prometheus/prometheus.yml": "monitoring/prometheus.yml", "/etc/prometheus/rules.yml": "monitoring/rules.yml"}
ok = all(os.path.samefile(binds.get(t, "/nonexistent"), os.path.join(root, f)) if os.path.exists(binds.get(t, "/nonexistent")) else False
         for t, f in want.items())
sys.exit(0 if ok and "couchdb-cluster-watch" in doc["services"] else 1)
PY
  then
    ok "$c: --profile monitoring: config accepts it; Prometheus mounts monitoring/prometheus.yml and monitoring/rules.yml"
  else
    bad "$c: --profile monitoring: config rejects it, or Prometheus mounts other files: $(cat "$work/err")"
  fi
  if [ "$c" = "docker compose" ]; then
    # shellcheck disable=SC2086
    selected="$($c --env-file "$work/test.env" -f compose.yaml --profile monitoring config --services 2>/dev/null | sort | tr '\n' ' ')"
    # shellcheck disable=SC2086
    watch_only="$($c --env-file "$work/test.env" -f compose.yaml --profile watch config --services 2>/dev/null | sort | tr '\n' ' ')"
    if [[ " $selected" == *" couchdb-cluster-watch "* && " $selected" == *" prometheus "* && " $watch_only" != *" prometheus "* ]]; then
      ok "$c: --profile monitoring starts the watcher and Prometheus; --profile watch no Prometheus"
    else
      bad "$c: profiles select [$selected] for monitoring, [$watch_only] for watch"
    fi
  fi

  scripts/gen-env --output "$work/generated.env" 2>/dev/null
  if out="$($c --env-file "$work/generated.env" -f compose.yaml config -q 2>&1)"; then
    ok "$c config accepts an .env written by scripts/gen-env"
  else
    bad "$c config rejects an .env written by scripts/gen-env: $out"
  fi
  rm -f "$work/generated.env"
  scripts/gen-env --https example.test --output "$work/generated.env" 2>/dev/null
  if out="$($c --env-file "$work/generated.env" -f compose.yaml -f compose/https.yaml config 2>&1)" \
      && grep -qF 'Host(`couchdb.example.test`)' <<<"$out"; then
    ok "$c config accepts compose/https.yaml with an .env written by scripts/gen-env --https example.test"
  else
    bad "$c config rejects compose/https.yaml with an .env written by scripts/gen-env --https: $out"
  fi
  rm -f "$work/generated.env"
  scripts/gen-env --dist-tls-dir "$work/dist-tls" --output "$work/generated.env" 2>/dev/null
  if out="$($c --env-file "$work/generated.env" -f compose.yaml -f compose/dist-tls.yaml config 2>&1)" \
      && grep -qF "$work/dist-tls/couchdb-3.key" <<<"$out"; then
    ok "$c config accepts compose/dist-tls.yaml with an .env written by scripts/gen-env --dist-tls"
  else
    bad "$c config rejects compose/dist-tls.yaml with an .env written by scripts/gen-env --dist-tls: $out"
  fi
  rm -rf "$work/generated.env" "$work/dist-tls"
done

# 3. scripts/gen-env: strong values, private file, no overwrite.
scripts/gen-env --output "$work/gen.env" 2>/dev/null
mode="$(stat -c %a "$work/gen.env")"
if [ "$mode" = 600 ]; then ok "gen-env writes a file only its owner can read"; else bad "gen-env wrote mode $mode"; fi
if python3 - "$work/gen.env" <<'PY'; then ok "gen-env: password, cookie and secret are 32 random [A-Za-z0-9], all different; a random bundle name"; else bad "gen-env values are weak (or no COUCHDB_BUNDLE)"; fi
import re, sys
env = dict(l.split("=", 1) for l in open(sys.argv[1]).read().splitlines() if "=" in l and not l.startswith("#"))
vals = [env[k] for k in ("COUCHDB_PASSWORD", "COUCHDB_COOKIE", "COUCHDB_SECRET")]
ok = all(re.fullmatch(r"[A-Za-z0-9]{32}", v) for v in vals) and len(set(vals)) == 3 and "monster" not in vals
sys.exit(0 if ok and re.fullmatch(r"couchdb-[a-z0-9]{8}", env.get("COUCHDB_BUNDLE", "")) else 1)
PY
before="$(cat "$work/gen.env")"
if scripts/gen-env --output "$work/gen.env" 2>/dev/null; then
  bad "gen-env overwrote an existing file without --force"
elif [ "$(cat "$work/gen.env")" = "$before" ]; then
  ok "gen-env refuses to overwrite an existing file"
else
  bad "gen-env changed an existing file and failed"
fi
if scripts/gen-env --force --output "$work/gen.env" 2>/dev/null && [ "$(cat "$work/gen.env")" != "$before" ]; then
  ok "gen-env --force replaces it"
else
  bad "gen-env --force did not replace it"
fi

# scripts/gen-env --dist-tls: a CA and four node certificates, verified by openssl, each naming its
# host, for both TLS roles; the keys private to the directory, none of them in .env or the output.
out="$(scripts/gen-env --dist-tls-dir "$work/dt" --output "$work/dt.env" 2>&1)"
if python3 - "$work/dt" "$work/dt.env" "$out" <<'PY'; then ok "gen-env --dist-tls: CA + couchdb-{1..4} certificates that verify, name their host, serve both roles; dir 0700, keys 0640/0644 in it, ca.key 0600; no key in .env or the output"; else bad "gen-env --dist-tls made something else"; fi
import os, stat, subprocess, sys
d, env, said = sys.argv[1:4]
mode = lambda f: stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode)
ok = mode(".") == 0o700 and mode("ca.key") == 0o600
for n in range(1, 5):
    crt, key = f"couchdb-{n}.crt", f"couchdb-{n}.key"
    ok = ok and mode(key) in (0o640, 0o644)
    v = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(d, "ca.crt"), os.path.join(d, crt)], capture_output=True, text=True)
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", os.path.join(d, crt)], capture_output=True, text=True).stdout
    ok = ok and v.returncode == 0 and f"DNS:couchdb-{n}.couchdb.internal" in text and "TLS Web Server Authentication, TLS Web Client Authentication" in text
    body = [l for l in open(os.path.join(d, key)).read().splitlines() if "-----" not in l]
    ok = ok and not any(l in open(env).read() or l in said for l in body)
ok = ok and f"COUCHDB_DIST_TLS_DIR={d}" in open(env).read()
sys.exit(0 if ok else 1)
PY
rm -rf "$work/dt" "$work/dt.env"

# 4. The .dockerignore never sends .env (secrets) or target/ to the daemon.
if grep -qx '\*' .dockerignore && ! grep -qE '^!\.?env|^!target' .dockerignore; then
  ok ".dockerignore is an allow-list that leaves out .env and target/"
else
  bad ".dockerignore may send .env or target/ to the daemon"
fi

# 5. The compose file itself, read as YAML.
if out="$(python3 tests/compose/check_compose.py)"; then
  ok "check_compose.py: $(tail -n 1 <<<"$out")"
else
  printf '%s\n' "$out" | grep -v '^ok ' || true
  bad "check_compose.py: $(tail -n 1 <<<"$out")"
fi

# 6. The backup profile, read as YAML.
if out="$(python3 tests/compose/check_backup.py)"; then
  ok "check_backup.py: $(tail -n 1 <<<"$out")"
else
  printf '%s\n' "$out" | grep -v '^ok ' || true
  bad "check_backup.py: $(tail -n 1 <<<"$out")"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

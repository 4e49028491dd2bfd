#!/usr/bin/env bash
# Discovery through Kubernetes-style cluster DNS, offline: the rig of shared/KUBERNETES.md.
#
#   sudo tests/k8s/dns.sh        (needs root for `ip netns`; CI runs as root)
#
# A network namespace stands in for the cluster network: a "kube-dns" address with dnsmasq on
# it, and one address per pod, each with a couchsim node (binary mode, standing in for
# couchdb:3.4.2) named couchdb@<pod>.<service>.default.svc.cluster.local. Pods resolve short
# names through the search path of /etc/netns/<ns>/resolv.conf, as in a pod. The static release
# binary — what the image ships — runs inside the namespace:
#   1. a name that does not resolve: named, and said to be DNS (exit 3), for a node and a service;
#   2. brace ranges by short name: COUCHDB_NODES=couchdb-{0..2}.couchdb;
#   3. COUCHDB_SERVICE + COUCHDB_EXPECT=3 with the third pod appearing late;
#   4. scale 3 → 4, run again with the same variables: the new pod is joined;
#   5. 32 pods: the service's answer is longer than 512 bytes (truncated over UDP, checked with
#      dig), and every pod is found and joined; `check` then passes, read-only;
#   6. `watch` running while the "StatefulSet" grows 3 → 4 → 5: it forms the three, joins each
#      new pod within two intervals, its metrics say so, and SIGTERM ends it with exit 0.
# Everything it creates is named cci-k8s-dns-<pid> and removed on exit, by pid and by name.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
[ "$(id -u)" = 0 ] || { echo "dns: needs root for ip netns (CI runs as root)" >&2; exit 2; }
for tool in ip dnsmasq dig; do
  command -v "$tool" >/dev/null || { echo "dns: $tool missing (apt-get install iproute2 dnsmasq-base bind9-dnsutils)" >&2; exit 2; }
done

ns="cci-k8s-dns-$$"
work="$(mktemp -d "${TMPDIR:-/tmp}/cci-k8s-dns.XXXXXX")"
dns_ip=10.96.0.10
pids=()
dnsmasq_pid=""

cleanup() {
  set +e
  [ -n "$dnsmasq_pid" ] && kill "$dnsmasq_pid" 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  rm -rf "/etc/netns/$ns" "$work"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

echo "dns: building the static release binary (as the image ships it) and couchsim" >&2
triple="$(rustc -vV | sed -n 's/^host: //p')"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$triple" -p couchdb-cluster-init >&2
cargo build --locked -p couchsim >&2
init="$target_dir/$triple/release/couchdb-cluster-init"
couchsim="$target_dir/debug/couchsim"
ln -s "$couchsim" "$work/curl" # couchsim's multi-call curl, for reading membership

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$dns_ip/32" dev lo
mkdir -p "/etc/netns/$ns"
cat >"/etc/netns/$ns/resolv.conf" <<EOF
nameserver $dns_ip
search default.svc.cluster.local svc.cluster.local cluster.local
options ndots:5
EOF
in_ns() { ip netns exec "$ns" "$@"; }

user=admin
password="dns-rig-$$-password"
cookie="dns-rig-$$-cookie"
records="$work/records" # one line per pod: service index ip
: >"$records"

# dnsmasq as kube-dns: each pod's name, and one A record per pod under the service name.
# Records change only by a restart (what KUBERNETES.md found to work).
dns_restart() {
  [ -n "$dnsmasq_pid" ] && { kill "$dnsmasq_pid"; while kill -0 "$dnsmasq_pid" 2>/dev/null; do sleep 0.05; done; }
  local args=() service i ip
  while read -r service i ip; do
    args+=("--host-record=$service-$i.$service.default.svc.cluster.local,$ip")
    args+=("--host-record=$service.default.svc.cluster.local,$ip")
  done <"$records"
  in_ns dnsmasq --no-resolv --no-hosts --local=/cluster.local/ --bind-interfaces \
    --listen-address="$dns_ip" --pid-file="$work/dnsmasq.pid" --user=root "${args[@]}"
  for _ in $(seq 100); do [ -s "$work/dnsmasq.pid" ] && break; sleep 0.05; done
  dnsmasq_pid="$(cat "$work/dnsmasq.pid")"
}

# A pod: an address, a couchsim node listening on it, and (at the next dns_restart) its records.
pod() {
  local service="$1" i="$2" ip="$3"
  ip -n "$ns" addr add "$ip/32" dev lo
  echo "$service $i $ip" >>"$records"
  ip netns exec "$ns" env -i NODENAME="$service-$i.$service.default.svc.cluster.local" \
    COUCHSIM_LISTEN_IP="$ip" COUCHSIM_DELAYS=fast COUCHSIM_NO_PERSIST=1 \
    COUCHDB_USER="$user" COUCHDB_PASSWORD="$password" COUCHDB_ERLANG_COOKIE="$cookie" \
    COUCHDB_SECRET="dns-rig-secret" "$couchsim" 2>>"$work/couchsim.log" &
  pids+=("$!")
}

# Runs the init inside the namespace: `init_run NAME VAR=value… [-- ARGS]`; output in $work/NAME.
init_run() {
  local name="$1" env=() args=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do env+=("$1"); shift; done
  [ "${1:-}" = -- ] && { shift; args=("$@"); }
  set +e
  in_ns env -i COUCHDB_USER="$user" COUCHDB_PASSWORD="$password" COUCHDB_COOKIE="$cookie" \
    COUCHDB_INIT_TIMEOUT=30s RUST_LOG=info "${env[@]}" "$init" "${args[@]}" >"$work/$name" 2>&1
  local code=$?
  set -e
  return "$code"
}

says() { grep -qF -- "$2" "$work/$1"; }
show() { sed 's/^/  | /' "$work/$1"; }

# How many members a node lists, read with couchsim's curl inside the namespace.
members_of() {
  in_ns "$work/curl" -fsS -u "$user:$password" "http://$1:5984/_membership" |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(len(m["all_nodes"]), len(m["cluster_nodes"]))'
}

expect_run() {
  local what="$1" name="$2" code="$3" got=0
  shift 3
  init_run "$name" "$@" || got=$?
  if [ "$got" = "$code" ]; then ok "$what (exit $code)"; else bad "$what: exit $got, not $code"; show "$name"; fi
}

expect_says() {
  local what="$1" name="$2" missing=()
  shift 2
  for part in "$@"; do says "$name" "$part" || missing+=("$part"); done
  if [ ${#missing[@]} -eq 0 ]; then ok "$what"; else bad "$what: no ${missing[*]}"; show "$name"; fi
}

expect_members() {
  local what="$1" host="$2" want="$3" got
  got="$(members_of "$host" 2>&1 || true)"
  if [ "$got" = "$want $want" ]; then ok "$what"; else bad "$what: $host lists $got, not $want $want"; fi
}

started=$SECONDS
for i in 0 1 2; do pod couchdb "$i" "10.244.0.$((i + 1))"; done
dns_restart

# 1. Names that do not resolve.
expect_run "a node name that does not resolve fails the wait" nxnode 3 \
  'COUCHDB_NODES=couchdb-{0..3}.couchdb' COUCHDB_INIT_TIMEOUT=2s
expect_says "… naming it and saying DNS" nxnode "couchdb-3.couchdb (its name does not resolve (DNS"
expect_run "a service name that does not resolve fails the wait" nxservice 3 \
  COUCHDB_SERVICE=nosuch COUCHDB_EXPECT=1 COUCHDB_INIT_TIMEOUT=2s
expect_says "… naming it and saying DNS" nxservice "COUCHDB_SERVICE nosuch" "does not resolve (DNS" "headless Service"

# 2. Brace ranges, short names through the search path.
expect_run "COUCHDB_NODES=couchdb-{0..2}.couchdb forms the cluster" braces 0 'COUCHDB_NODES=couchdb-{0..2}.couchdb'
expect_says "… of the three pods, by their Erlang names" braces \
  "cluster of 3 nodes verified" "identify: 3 nodes: couchdb@couchdb-{0..2}.couchdb.default.svc.cluster.local"
expect_members "every pod lists the three" couchdb-2.couchdb 3

# 3. Discovery by the headless Service, the third pod late.
pod late 0 10.244.1.1
pod late 1 10.244.1.2
dns_restart
init_run late COUCHDB_SERVICE=late COUCHDB_EXPECT=3 &
late_run=$!
sleep 2
pod late 2 10.244.1.3
dns_restart
late_code=0
wait "$late_run" || late_code=$?
if [ "$late_code" = 0 ]; then ok "COUCHDB_SERVICE=late COUCHDB_EXPECT=3 waits for the late pod and forms (exit 0)"; else bad "late pod: exit $late_code"; show late; fi
expect_says "… saying what it waited for" late "2 of COUCHDB_EXPECT=3 addresses resolve" \
  "late resolves to 3 addresses" "coordinator late-0" "cluster of 3 nodes verified"
expect_members "every pod lists the three" late-1.late 3

# 4. Scale 3 → 4, the same Job again.
pod late 3 10.244.1.4
dns_restart
expect_run "a rerun after scale-up, variables unchanged" scaled 0 COUCHDB_SERVICE=late COUCHDB_EXPECT=3
expect_says "… joins only the new pod" scaled "added 1 of 1 nodes" "couchdb@late-3.late.default.svc.cluster.local" \
  "cluster of 4 nodes verified"
expect_members "every pod lists the four" late-0.late 4
expect_run "a third run writes nothing" again 0 COUCHDB_SERVICE=late COUCHDB_EXPECT=3
expect_says "… and says so" again "nothing to do, nothing written"

# 5. 32 pods: longer than a UDP answer.
for i in $(seq 0 31); do pod big "$i" "10.244.2.$((i + 1))"; done
dns_restart
flags="$(in_ns dig +ignore +notcp +noedns big.default.svc.cluster.local A | grep -m1 ';; flags:' || true)"
if [[ "$flags" == *" tc"* ]]; then ok "the 32-pod answer is truncated over UDP (dig: $flags)"; else bad "no TC bit for 32 pods: $flags"; fi
expect_run "COUCHDB_SERVICE=big COUCHDB_EXPECT=32 forms 32 pods" big 0 COUCHDB_SERVICE=big COUCHDB_EXPECT=32 COUCHDB_INIT_TIMEOUT=90s
expect_says "… every one of them" big "big resolves to 32 addresses" "cluster of 32 nodes verified"
expect_members "a pod lists all 32" big-31.big 32
longest="$(awk '{ print length }' "$work/big" | sort -n | tail -n 1)"
if [ "$longest" -le 400 ]; then ok "every log line is short at 32 nodes (longest $longest characters)"; else bad "a log line of $longest characters"; show big; fi
expect_run "check, read-only, on the 32" check 0 COUCHDB_SERVICE=big COUCHDB_EXPECT=32 -- check

# 6. A watcher while the StatefulSet grows 3 → 4 → 5.
interval=2
for i in 0 1 2; do pod grow "$i" "10.244.3.$((i + 1))"; done
dns_restart
# Not through in_ns: $! must be the watcher itself (ip netns exec and env exec into it).
ip netns exec "$ns" env -i COUCHDB_USER="$user" COUCHDB_PASSWORD="$password" COUCHDB_COOKIE="$cookie" \
  COUCHDB_SERVICE=grow COUCHDB_EXPECT=3 COUCHDB_WATCH_INTERVAL="${interval}s" \
  COUCHDB_METRICS_ADDR=127.0.0.1:9985 RUST_LOG=info "$init" watch >"$work/watch" 2>&1 &
watch_pid=$!
pids+=("$watch_pid")
metric() {
  in_ns "$work/curl" -fsS "http://127.0.0.1:9985/metrics" 2>/dev/null | sed -n "s/^$1 //p"
}
# Seconds (with a decimal) until `metric NAME` reads VALUE, or 30.
until_metric() {
  local t0=$SECONDS
  for _ in $(seq 300); do
    [ "$(metric "$1")" = "$2" ] && break
    sleep 0.1
  done
  echo $((SECONDS - t0))
}
took="$(until_metric couchdb_cluster_members 3)"
if [ "$(metric couchdb_cluster_healthy)" = 1 ]; then ok "watch forms the three pods (${took} s)"; else bad "watch: not formed"; show watch; fi
for n in 3 4; do
  pod grow "$n" "10.244.3.$((n + 1))"
  dns_restart
  took="$(until_metric couchdb_cluster_members $((n + 1)))"
  if [ "$(metric couchdb_cluster_members)" = $((n + 1)) ] && [ "$took" -le $((2 * interval)) ]; then
    ok "scaled to $((n + 1)): the watcher joined grow-$n within two intervals (${took} s)"
  else
    bad "scaled to $((n + 1)): members $(metric couchdb_cluster_members) after ${took} s"; show watch
  fi
done
until_metric couchdb_cluster_healthy 1 >/dev/null
expect_members "every pod lists the five" grow-4.grow 5
{ echo "dns: the watcher's /metrics at 5 pods:"; in_ns "$work/curl" -fsS "http://127.0.0.1:9985/metrics" | sed 's/^/  | /'; } >&2
kill -TERM "$watch_pid"
watch_code=0
wait "$watch_pid" || watch_code=$?
if [ "$watch_code" = 0 ]; then ok "SIGTERM ends the watcher with exit 0"; else bad "watcher: exit $watch_code"; show watch; fi
expect_says "… which logged each join in one line" watch "watch: joined couchdb@grow-3.grow" \
  "watch: joined couchdb@grow-4.grow" "stopped by a signal"

echo "dns: $((SECONDS - started)) s in the namespace" >&2
# DNS_KEEP_LOGS=DIR keeps the 32-pod Job's and the watcher's logs (for docs/kubernetes.md).
if [ -n "${DNS_KEEP_LOGS:-}" ]; then
  mkdir -p "$DNS_KEEP_LOGS"
  cp "$work/big" "$work/watch" "$DNS_KEEP_LOGS/"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

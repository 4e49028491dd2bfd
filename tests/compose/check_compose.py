#!/usr/bin/env python3
"""Static checks of compose.yaml and its overrides (compose/*.yaml), Traefik's static
configuration (its TRAEFIK_* environment) included: what Traefik and CouchDB need to be true of the files
before anything starts.

    python3 tests/compose/check_compose.py [compose.yaml]

Reads the YAML itself (PyYAML), so it also sees what `docker compose config` flattens away: that the
three nodes' Traefik labels are one YAML anchor, not three copies that could drift apart.
Prints one line per check and ends with "N passed, N failed"; exits 1 if any failed.
"""

import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - the e2e installs it; this is for a bare machine
    sys.exit("check_compose: PyYAML is missing: python3 -m pip install pyyaml")

ROOT = Path(__file__).resolve().parents[2]
NODES = ["couchdb-1", "couchdb-2", "couchdb-3"]
INIT = "couchdb-cluster-init"
SERVICE = "couchdb"  # the Traefik service name the labels define
REQUIRED_VARS = ["COUCHDB_USER", "COUCHDB_PASSWORD", "COUCHDB_COOKIE", "COUCHDB_SECRET"]
SECRETS = ["COUCHDB_PASSWORD", "COUCHDB_COOKIE", "COUCHDB_SECRET"]

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f": {detail}"))


# --- the YAML node graph: which mapping a key really comes from (merge keys followed) -------------


def node_get(mapping, key):
    """The value node of `key` in a MappingNode, following `<<` merge keys as YAML does (own keys
    first, then merged mappings in order). Returns the very node object, so that two lookups that
    end in the same anchor return the same object."""
    if not isinstance(mapping, yaml.MappingNode):
        return None
    merges = []
    for k, v in mapping.value:
        if k.tag == "tag:yaml.org,2002:merge" or k.value == "<<":
            merges.extend(v.value if isinstance(v, yaml.SequenceNode) else [v])
        elif k.value == key:
            return v
    for m in merges:
        found = node_get(m, key)
        if found is not None:
            return found
    return None


def as_dict(entries):
    """Compose labels or environment as a dict, whether written as a mapping or as a list of
    "k=v"; a key with no value (`KEY:` / `KEY`) maps to ""."""
    if isinstance(entries, dict):
        return {str(k): "" if v is None else str(v) for k, v in entries.items()}
    out = {}
    for item in entries or []:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def scalars(value):
    """Every scalar (as a string) in loaded YAML, keys included; comments are not data."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from scalars(v)
    elif isinstance(value, list):
        for v in value:
            yield from scalars(v)
    elif value is not None:
        yield str(value)


def depends(svc):
    d = svc.get("depends_on") or {}
    if isinstance(d, list):
        return {name: "service_started" for name in d}
    return {name: (cond or {}).get("condition", "service_started") for name, cond in d.items()}


def seconds(duration):
    """A Compose/Traefik duration ("1s", "500ms", "1m30s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(duration))
    return sum(float(v) * units[u] for v, u in parts) if parts else float("inf")


def traefik_static(svc):
    """Traefik's static configuration from a service's TRAEFIK_* environment, keyed by the rest
    of the variable's name (`PROVIDERS_DOCKER_CONSTRAINTS`)."""
    env = as_dict(svc.get("environment"))
    return {k[len("TRAEFIK_"):]: v for k, v in env.items() if k.startswith("TRAEFIK_")}


def check_node_healthcheck(n, hc):
    """The membership healthcheck: the node asks itself, with its own environment's credentials
    handed to curl on stdin, whether it serves the cluster's _users (a shard map of 2+ nodes)."""
    test = hc.get("test") or []
    script = test[1] if len(test) == 2 and test[0] == "CMD-SHELL" else ""
    check(f"{n}: healthcheck is CMD-SHELL (one script, run by the image's sh)", script, test)
    check(f"{n}: healthcheck asks /_up (maintenance mode and boot leave rotation)",
          "curl -fsS -o /dev/null http://localhost:5984/_up" in script, script)
    check(f"{n}: healthcheck needs the cluster's _users through this node, on 2+ nodes",
          re.search(r"curl -fsS -K - http://localhost:5984/_users/_shards \| grep -qF '\",\"'$", script), script)
    check(f"{n}: healthcheck credentials come from the node's environment via printf to curl -K -",
          re.search(r"printf 'user = \"%s:%s\"\\n' \"\$\$COUCHDB_USER\" \"\$\$COUCHDB_PASSWORD\" \|", script), script)
    check(f"{n}: healthcheck interval at most 1s (it is the delay from 'joined' to 'routed')",
          seconds(hc.get("interval", "30s")) <= 1, hc.get("interval"))
    check(f"{n}: healthcheck goes unhealthy after a few failures, and waits out a long start",
          1 <= int(hc.get("retries", 3)) <= 5 and seconds(hc.get("start_period", "0s")) >= 60,
          (hc.get("retries"), hc.get("start_period")))
    check(f"{n}: healthcheck has no start_interval (docker-compose 1.29 lacks it)", "start_interval" not in hc)


def check_failover_labels(lb):
    prefix = f"traefik.http.services.{SERVICE}.loadbalancer"
    mw = lb.get(f"traefik.http.routers.{SERVICE}.middlewares", "")
    retry = {k.split(".")[3] for k in lb if k.startswith("traefik.http.middlewares.") and ".retry." in k}
    check("labels: the router uses a retry middleware (a stopped node costs a retry, not a 502)",
          mw and all(m.split("@")[0] in retry for m in mw.split(",")), (mw, retry))
    check("labels: a passive health check marks a node down on its first failed request",
          lb.get(f"{prefix}.passivehealthcheck.maxfailedattempts") == "1", lb.get(f"{prefix}.passivehealthcheck.maxfailedattempts"))
    check("labels: Traefik's /_up check runs every few seconds (maintenance mode leaves within it)",
          seconds(lb.get(f"{prefix}.healthcheck.interval", "30s")) <= 5, lb.get(f"{prefix}.healthcheck.interval"))


def check_no_secret_on_command_lines(n, svc):
    """No secret reaches a label, a command line or a healthcheck: Compose would write its value
    there (visible in `docker inspect` and `docker ps --no-trunc`). `$$VAR` is fine: a literal
    `$VAR`, expanded by the container's shell from its own environment."""
    fields = {k: svc.get(k) for k in ("labels", "command", "entrypoint")}
    fields["healthcheck"] = (svc.get("healthcheck") or {}).get("test")
    for field, value in fields.items():
        text = " ".join(scalars(value))
        leaked = [v for v in SECRETS if re.search(r"(?<!\$)\$\{?" + v + r"\b", text)]
        check(f"{n}: no secret interpolated into its {field}", not leaked, leaked)


def check_fourth_node(services, anchor_labels, anchor_healthcheck):
    """compose/couchdb-4.yaml: a copy of a node that must not drift from compose.yaml's."""
    path = ROOT / "compose" / "couchdb-4.yaml"
    data = yaml.safe_load(path.read_text())
    node = (data.get("services") or {}).get("couchdb-4") or {}
    check("couchdb-4.yaml: labels identical to compose.yaml's anchor (else Traefik drops the service)",
          as_dict(node.get("labels")) == anchor_labels, as_dict(node.get("labels")))
    check("couchdb-4.yaml: healthcheck identical to compose.yaml's", node.get("healthcheck") == anchor_healthcheck,
          node.get("healthcheck"))
    env = as_dict(node.get("environment"))
    check("couchdb-4.yaml: dotted NODENAME, resolvable by its peers (network alias)",
          env.get("NODENAME") == "couchdb-4.couchdb.internal"
          and "couchdb-4.couchdb.internal" in ((node.get("networks") or {}).get("couchdb") or {}).get("aliases", []),
          (env.get("NODENAME"), node.get("networks")))
    base_env = as_dict(services[NODES[0]].get("environment"))
    check("couchdb-4.yaml: the same credentials, cookie and secret as the other nodes",
          all(env.get(k) == base_env.get(k) for k in REQUIRED_VARS[:2] + ["COUCHDB_SECRET", "COUCHDB_ERLANG_COOKIE"]),
          {k: env.get(k) for k in env if k != "NODENAME"})
    check("couchdb-4.yaml: image, restart and volumes like the others",
          node.get("image") == services[NODES[0]].get("image") and node.get("restart") == services[NODES[0]].get("restart")
          and sorted(str(v).split(":")[1] for v in node.get("volumes") or []) == ["/opt/couchdb/data", "/opt/couchdb/etc/local.d"],
          (node.get("image"), node.get("volumes")))
    init = (data.get("services") or {}).get(INIT) or {}
    check("couchdb-4.yaml: the init's COUCHDB_NODES names all four",
          as_dict(init.get("environment")).get("COUCHDB_NODES") == ",".join(NODES + ["couchdb-4"]), init.get("environment"))
    check_no_secret_on_command_lines("couchdb-4", node)

TLS_SERVICE = "couchdb-tls"  # the HTTPS override's Traefik router and service
SECRET_DIR = "/run/secrets"  # where Compose mounts a service's secrets


def check_zones(services):
    """compose/zones.yaml: COUCHDB_ZONES on every service that runs the init against the nodes (those with
    COUCHDB_NODES), and by default a zone for each of compose.yaml's nodes, named as COUCHDB_NODES does."""
    zones = yaml.safe_load((ROOT / "compose" / "zones.yaml").read_text())["services"]
    runners = {n for n, s in services.items() if "COUCHDB_NODES" in as_dict(s.get("environment"))}
    check("compose/zones.yaml sets COUCHDB_ZONES on every service that runs the init", set(zones) == runners,
          f"{sorted(zones)} vs {sorted(runners)}")
    for name, svc in zones.items():
        value = as_dict(svc.get("environment")).get("COUCHDB_ZONES", "")
        default = re.fullmatch(r"\$\{COUCHDB_ZONES:-([^}]*)\}", value)
        nodes = as_dict(services.get(name, {}).get("environment")).get("COUCHDB_NODES", "").split(",")
        given = [e.split("=", 1)[0] for e in default.group(1).split(",")] if default else []
        check(f"compose/zones.yaml: {name}'s default COUCHDB_ZONES gives every node of its COUCHDB_NODES a zone",
              given == nodes, f"{value!r} vs {nodes}")


def check_https(anchor_labels):
    """compose/https.yaml (and its companions https-couchdb-4.yaml, https-letsencrypt.yaml): a
    second router and service on every node for Host(couchdb.${DEFAULT_URL}) on `websecure`,
    sticky and `Secure`; Traefik's entry point, file provider and the certificate as secrets; no
    key material in any file; the copies identical to https.yaml's anchor."""
    path = ROOT / "compose" / "https.yaml"
    text = path.read_text()
    graph = yaml.compose(text)
    data = yaml.safe_load(text)
    services = data.get("services") or {}
    services_node = node_get(graph, "services")
    nodes = [node_get(node_get(services_node, n), "labels") for n in NODES]
    check("https.yaml: the three nodes' TLS labels are one YAML anchor",
          nodes[0] is not None and all(x is nodes[0] for x in nodes))
    tls = as_dict(services.get(NODES[0], {}).get("labels"))
    check("https.yaml: adds labels only, none of compose.yaml's (an override would replace them)",
          tls and not set(tls) & set(anchor_labels), sorted(set(tls) & set(anchor_labels)))
    r, sv = f"traefik.http.routers.{TLS_SERVICE}", f"traefik.http.services.{TLS_SERVICE}.loadbalancer"
    plain = f"traefik.http.services.{SERVICE}.loadbalancer"
    check("https.yaml: router on `websecure`, TLS, to its own service",
          tls.get(f"{r}.entrypoints") == "websecure" and tls.get(f"{r}.tls") == "true"
          and tls.get(f"{r}.service") == TLS_SERVICE, tls)
    check("https.yaml: the router's rule is Host(`couchdb.${DEFAULT_URL}`), DEFAULT_URL required",
          re.fullmatch(r"Host\(`couchdb\.\$\{DEFAULT_URL:\?DEFAULT_URL is not set[^}]*\}`\)", tls.get(f"{r}.rule", "")),
          tls.get(f"{r}.rule"))
    routers = {k.split(".")[3] for k in tls if k.startswith("traefik.http.routers.")}
    services_defined = {k.split(".")[3] for k in tls if k.startswith("traefik.http.services.")}
    check("https.yaml: one router and one service, couchdb-tls", routers == services_defined == {TLS_SERVICE},
          (routers, services_defined))
    check("https.yaml: sticky cookie couchdb_sticky, Secure, HttpOnly, same sameSite as plain HTTP",
          tls.get(f"{sv}.sticky.cookie") == "true" and tls.get(f"{sv}.sticky.cookie.name") == "couchdb_sticky"
          and tls.get(f"{sv}.sticky.cookie.secure") == "true" and tls.get(f"{sv}.sticky.cookie.httpOnly") == "true"
          and tls.get(f"{sv}.sticky.cookie.sameSite") == anchor_labels.get(f"{plain}.sticky.cookie.sameSite"), tls)
    same = ["server.port", "healthcheck.path", "healthcheck.interval", "healthcheck.timeout",
            "passivehealthcheck.maxfailedattempts", "passivehealthcheck.failurewindow"]
    check("https.yaml: port, Traefik health checks and passive health check as the plain service's",
          all(tls.get(f"{sv}.{k}") == anchor_labels.get(f"{plain}.{k}") for k in same),
          {k: (tls.get(f"{sv}.{k}"), anchor_labels.get(f"{plain}.{k}")) for k in same})
    check("https.yaml: the router retries like the plain one (same middleware)",
          tls.get(f"{r}.middlewares") == anchor_labels.get(f"traefik.http.routers.{SERVICE}.middlewares"),
          tls.get(f"{r}.middlewares"))

    tr = services.get("traefik") or {}
    static = traefik_static(tr)
    check("https.yaml: Traefik gets no command (its static configuration is the environment it adds to)",
          not tr.get("command") and not tr.get("entrypoint"), tr.get("command"))
    check("https.yaml: entry point websecure on :443", static.get("ENTRYPOINTS_WEBSECURE_ADDRESS") == ":443", static)
    check("https.yaml: websecure published on ${COUCHDB_HTTPS_PUBLISH:-127.0.0.1:443} (loopback by default)",
          [str(p) for p in tr.get("ports") or []] == ["${COUCHDB_HTTPS_PUBLISH:-127.0.0.1:443}:443"], tr.get("ports"))
    dynamic = static.get("PROVIDERS_FILE_FILENAME", "")
    mounts = [str(v) for v in tr.get("volumes") or []]
    check("https.yaml: the file provider reads traefik/dynamic/https.yaml, mounted read-only",
          mounts == [f"./traefik/dynamic/https.yaml:{dynamic}:ro"], (dynamic, mounts))
    secrets = data.get("secrets") or {}
    check("https.yaml: certificate and key are Compose secrets from COUCHDB_TLS_CERT/COUCHDB_TLS_KEY (required)",
          tr.get("secrets") == ["couchdb_tls_cert", "couchdb_tls_key"]
          and re.fullmatch(r"\$\{COUCHDB_TLS_CERT:\?COUCHDB_TLS_CERT is not set[^}]*\}", (secrets.get("couchdb_tls_cert") or {}).get("file", ""))
          and re.fullmatch(r"\$\{COUCHDB_TLS_KEY:\?COUCHDB_TLS_KEY is not set[^}]*\}", (secrets.get("couchdb_tls_key") or {}).get("file", "")),
          (tr.get("secrets"), secrets))
    dyn = yaml.safe_load((ROOT / "traefik" / "dynamic" / "https.yaml").read_text())
    certs = ((dyn.get("tls") or {}).get("certificates") or [{}])
    default = (((dyn.get("tls") or {}).get("stores") or {}).get("default") or {}).get("defaultCertificate") or {}
    want = {"certFile": f"{SECRET_DIR}/couchdb_tls_cert", "keyFile": f"{SECRET_DIR}/couchdb_tls_key"}
    check("traefik/dynamic/https.yaml: the certificate (and the default one) at the secrets' paths",
          certs == [want] and default == want, (certs, default))
    for f in [path, ROOT / "compose" / "https-couchdb-4.yaml", ROOT / "compose" / "https-letsencrypt.yaml",
              ROOT / "traefik" / "dynamic" / "https.yaml"]:
        check(f"{f.relative_to(ROOT)}: holds no key material", "-----BEGIN" not in f.read_text())
    check_no_secret_on_command_lines("https.yaml traefik", tr)

    four = yaml.safe_load((ROOT / "compose" / "https-couchdb-4.yaml").read_text())
    labels4 = as_dict((((four.get("services") or {}).get("couchdb-4")) or {}).get("labels"))
    check("https-couchdb-4.yaml: couchdb-4's TLS labels identical to https.yaml's anchor", labels4 == tls, labels4)

    le = yaml.safe_load((ROOT / "compose" / "https-letsencrypt.yaml").read_text())
    le_services = le.get("services") or {}
    le_labels = [as_dict((le_services.get(n) or {}).get("labels")) for n in NODES]
    check("https-letsencrypt.yaml: every node's labels are https.yaml's plus tls.certresolver=letsencrypt",
          all(lb == {**tls, f"{r}.tls.certresolver": "letsencrypt"} for lb in le_labels), le_labels[0])
    le_tr = le_services.get("traefik") or {}
    le_static = traefik_static(le_tr)
    acme = "CERTIFICATESRESOLVERS_LETSENCRYPT_ACME_"
    check("https-letsencrypt.yaml: websecure on :443, no file provider, no command",
          le_static.get("ENTRYPOINTS_WEBSECURE_ADDRESS") == ":443" and not any(k.startswith("PROVIDERS_FILE") for k in le_static)
          and not le_tr.get("command"), le_static)
    check("https-letsencrypt.yaml: resolver `letsencrypt`: TLS challenge, a required e-mail, storage on a volume",
          le_static.get(acme + "TLSCHALLENGE") == "true"
          and re.fullmatch(r"\$\{COUCHDB_ACME_EMAIL:\?[^}]+\}", le_static.get(acme + "EMAIL", ""))
          and any(str(v).startswith("traefik-letsencrypt:") and le_static.get(acme + "STORAGE", "").startswith(str(v).split(":")[1] + "/")
                  for v in le_tr.get("volumes") or []), (le_static, le_tr.get("volumes")))
    check("https-letsencrypt.yaml: COUCHDB_HTTPS_PUBLISH required (the challenge must reach :443)",
          [str(p) for p in le_tr.get("ports") or []] and all(
              re.fullmatch(r"\$\{COUCHDB_HTTPS_PUBLISH:\?[^}]+\}:443", str(p)) for p in le_tr.get("ports")), le_tr.get("ports"))


def check_monitoring(services, data):
    """The `monitoring` profile: Prometheus scrapes the watcher on the private network under the
    job name the rules ask for, loads monitoring/rules.yml where monitoring/prometheus.yml says,
    keeps its data on a volume, and publishes on loopback only; the watcher starts with it and
    publishes its status page on loopback only."""
    watch, prom = services.get("couchdb-cluster-watch", {}), services.get("prometheus", {})
    check("watch: started by the watch and the monitoring profiles",
          set(watch.get("profiles") or []) == {"watch", "monitoring"}, watch.get("profiles"))
    wenv = as_dict(watch.get("environment"))
    metrics_port = wenv.get("COUCHDB_METRICS_ADDR", "").rsplit(":", 1)[-1]
    check("watch: its status page published on ${COUCHDB_WATCH_PUBLISH:-127.0.0.1:9985} (loopback by default)",
          [str(p) for p in watch.get("ports") or []] == [f"${{COUCHDB_WATCH_PUBLISH:-127.0.0.1:9985}}:{metrics_port}"],
          watch.get("ports"))
    check("prometheus: only in the monitoring profile", prom.get("profiles") == ["monitoring"], prom.get("profiles"))
    check("prometheus: image ${PROMETHEUS_IMAGE:-prom/prometheus:vX.Y.Z}, pinned",
          re.fullmatch(r"\$\{PROMETHEUS_IMAGE:-prom/prometheus:v\d+\.\d+\.\d+\}", str(prom.get("image"))), prom.get("image"))
    check("prometheus: starts after the watcher it scrapes", "couchdb-cluster-watch" in depends(prom), prom.get("depends_on"))
    check("prometheus: on the bundle's private network", prom.get("networks") == ["couchdb"], prom.get("networks"))
    check("prometheus: published on ${PROMETHEUS_PUBLISH:-127.0.0.1:9090} (loopback by default)",
          [str(p) for p in prom.get("ports") or []] == ["${PROMETHEUS_PUBLISH:-127.0.0.1:9090}:9090"], prom.get("ports"))
    check("prometheus: no environment (nothing secret to hand it)", not prom.get("environment"), prom.get("environment"))
    args = dict(a.split("=", 1) for a in prom.get("command") or [] if "=" in a)
    mounts = {}
    for v in prom.get("volumes") or []:
        src, dst, *mode = str(v).split(":")
        mounts[dst] = (src, mode)
    config_path = args.get("--config.file", "")
    config_src = mounts.get(config_path, ("", []))
    check("prometheus: --config.file is monitoring/prometheus.yml, mounted read-only",
          config_src == ("./monitoring/prometheus.yml", ["ro"]), f"{config_path}: {config_src}")
    check("prometheus: --storage.tsdb.path is the prometheus-data volume",
          mounts.get(args.get("--storage.tsdb.path", ""), ("", []))[0] == "prometheus-data"
          and "prometheus-data" in (data.get("volumes") or {}), mounts)
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    rule_files = config.get("rule_files") or []
    check("prometheus: every rule file its config names is monitoring/rules.yml, mounted read-only",
          rule_files and all(mounts.get(f) == ("./monitoring/rules.yml", ["ro"]) for f in rule_files), rule_files)
    jobs = config.get("scrape_configs") or []
    targets = [t for j in jobs for sc in j.get("static_configs") or [] for t in sc.get("targets") or []]
    check("prometheus: scrapes the watcher by its service name, on COUCHDB_METRICS_ADDR's port",
          targets == [f"couchdb-cluster-watch:{metrics_port}"], targets)
    rules = yaml.safe_load((ROOT / "monitoring" / "rules.yml").read_text())
    down = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == "CouchDBWatcherDown"]
    check("prometheus: the job is named as the rules' CouchDBWatcherDown asks",
          len(jobs) == 1 and down and f'job="{jobs[0].get("job_name")}"' in down[0], [j.get("job_name") for j in jobs])


def check_dist_tls():
    """compose/dist-tls.yaml and dist-tls-couchdb-4.yaml: every node gets the same ERL_FLAGS (the
    TLS distribution with compose/dist-tls/ssl_dist.conf) and read-only mounts of its own
    certificate and key from COUCHDB_DIST_TLS_DIR (required); no key material in any file; the
    init and the watcher expect TLS; the optfile verifies peers both ways."""
    flags = "-proto_dist couch -ssl_dist_optfile /opt/couchdb/etc/dist-tls/ssl_dist.conf"
    base = yaml.safe_load((ROOT / "compose" / "dist-tls.yaml").read_text())["services"]
    four = yaml.safe_load((ROOT / "compose" / "dist-tls-couchdb-4.yaml").read_text())["services"]
    nodes = {**{n: base.get(n, {}) for n in NODES}, "couchdb-4": four.get("couchdb-4", {})}
    for n, svc in nodes.items():
        env = as_dict(svc.get("environment"))
        check(f"dist-tls: {n} runs the TLS distribution (ERL_FLAGS)", env.get("ERL_FLAGS") == flags, env)
        mounts = [str(v) for v in svc.get("volumes") or []]
        want = {"ca.crt": "ca.crt", f"{n}.crt": "node.crt", f"{n}.key": "node.key"}
        ok = all(any(re.fullmatch(r"\$\{COUCHDB_DIST_TLS_DIR:\?[^}]+\}/" + re.escape(src)
                                  + f":/opt/couchdb/etc/dist-tls/{dst}:ro", m) for m in mounts)
                 for src, dst in want.items())
        ok = ok and "./compose/dist-tls/ssl_dist.conf:/opt/couchdb/etc/dist-tls/ssl_dist.conf:ro" in mounts
        check(f"dist-tls: {n} mounts its own certificate and key read-only from ${{COUCHDB_DIST_TLS_DIR:?}}", ok, mounts)
        check(f"dist-tls: {n} changes nothing but its environment and volumes", set(svc) <= {"environment", "volumes"}, set(svc))
    for svc in (INIT, "couchdb-cluster-watch"):
        check(f"dist-tls: {svc} expects TLS (COUCHDB_DIST_TLS=true)",
              as_dict(base.get(svc, {}).get("environment")).get("COUCHDB_DIST_TLS") == "true", base.get(svc))
    conf = (ROOT / "compose" / "dist-tls" / "ssl_dist.conf").read_text()
    check("dist-tls/ssl_dist.conf: verify_peer on both sides, fail_if_no_peer_cert, no verify_none",
          conf.count("{verify, verify_peer}") == 2 and "{fail_if_no_peer_cert, true}" in conf and "verify_none" not in conf)
    for f in ["dist-tls.yaml", "dist-tls-couchdb-4.yaml", "dist-tls/ssl_dist.conf"]:
        check(f"{f}: no key material", "PRIVATE KEY" not in (ROOT / "compose" / f).read_text())


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "compose.yaml"
    text = path.read_text()
    graph = yaml.compose(text)
    data = yaml.safe_load(text)
    services = data.get("services", {})
    services_node = node_get(graph, "services")

    # --- the three nodes -------------------------------------------------------------------------
    check("services couchdb-1, couchdb-2, couchdb-3 exist", all(n in services for n in NODES))
    label_nodes = [node_get(node_get(services_node, n), "labels") for n in NODES]
    check(
        "the three nodes' labels are one YAML anchor (the same node, not copies)",
        label_nodes[0] is not None and all(ln is label_nodes[0] for ln in label_nodes),
        "each node must say `labels: *anchor` (directly or through a merged anchor)",
    )
    labels = [as_dict(services[n].get("labels")) for n in NODES]
    check("the three nodes' labels are identical", labels[0] and all(lb == labels[0] for lb in labels))

    lb = labels[0]
    prefix = f"traefik.http.services.{SERVICE}.loadbalancer"
    expect = {
        "traefik.enable": "true",
        f"{prefix}.server.port": "5984",
        f"{prefix}.sticky.cookie": "true",
        f"{prefix}.sticky.cookie.name": "couchdb_sticky",
        f"{prefix}.sticky.cookie.httpOnly": "true",
        f"{prefix}.healthcheck.path": "/_up",
    }
    for k, v in expect.items():
        check(f"label {k}={v}", lb.get(k) == v, f"found {lb.get(k)!r}")
    check(
        "sticky cookie has sameSite lax or strict",
        lb.get(f"{prefix}.sticky.cookie.sameSite") in ("lax", "strict"),
        f"found {lb.get(f'{prefix}.sticky.cookie.sameSite')!r}",
    )
    routers = {k.split(".")[3] for k in lb if k.startswith("traefik.http.routers.")}
    check(
        "every router sends to the one service",
        routers and all(lb.get(f"traefik.http.routers.{r}.service") == SERVICE for r in routers),
        f"routers {sorted(routers)}",
    )
    other_services = {k.split(".")[3] for k in lb if k.startswith("traefik.http.services.")} - {SERVICE}
    check("the labels define exactly one Traefik service", not other_services, f"also {other_services}")

    for n in NODES:
        svc = services.get(n, {})
        env = as_dict(svc.get("environment"))
        check(f"{n}: image ${{COUCHDB_IMAGE:-couchdb:3.4.2}} (scripts/upgrade changes it, one node at a time)",
              svc.get("image") == "${COUCHDB_IMAGE:-couchdb:3.4.2}", svc.get("image"))
        check(f"{n}: no host ports", not svc.get("ports"), svc.get("ports"))
        nodename = env.get("NODENAME", "")
        check(f"{n}: NODENAME has a dot (Erlang long names, trap 4)", "." in nodename, nodename)
        nets = svc.get("networks") or {}
        aliases = [a for cfg in (nets.values() if isinstance(nets, dict) else []) for a in ((cfg or {}).get("aliases") or [])]
        fqdn = f"{svc.get('hostname', '')}.{svc.get('domainname', '')}"
        check(
            f"{n}: peers can resolve its NODENAME (a network alias)",
            nodename in aliases,
            f"NODENAME {nodename!r}, aliases {aliases}, hostname {fqdn!r}",
        )
        check(
            f"{n}: COUCHDB_ERLANG_COOKIE comes from COUCHDB_COOKIE",
            re.fullmatch(r"\$\{COUCHDB_COOKIE:\?[^}]+\}", env.get("COUCHDB_ERLANG_COOKIE", "")),
            env.get("COUCHDB_ERLANG_COOKIE"),
        )
        for var in ["COUCHDB_USER", "COUCHDB_PASSWORD", "COUCHDB_SECRET"]:
            check(
                f"{n}: {var} is required (${{{var}:?...}})",
                re.fullmatch(r"\$\{" + var + r":\?[^}]+\}", env.get(var, "")),
                env.get(var),
            )
        targets = [str(v).split(":")[1] if ":" in str(v) else "" for v in svc.get("volumes") or []]
        check(
            f"{n}: named volumes on /opt/couchdb/data and /opt/couchdb/etc/local.d",
            "/opt/couchdb/data" in targets and "/opt/couchdb/etc/local.d" in targets,
            targets,
        )
        check_node_healthcheck(n, svc.get("healthcheck") or {})
    names = [as_dict(services[n].get("environment")).get("NODENAME") for n in NODES]
    check("the three NODENAMEs differ", len(set(names)) == 3, names)
    vols = [v for n in NODES for v in services[n].get("volumes") or []]
    check("no volume is shared between nodes", len({str(v).split(":")[0] for v in vols}) == len(vols), vols)

    # --- the init container ------------------------------------------------------------------------
    init = services.get(INIT, {})
    check("init: built from the repository's Dockerfile", init.get("build") in (".", {"context": "."}) or
          (isinstance(init.get("build"), dict) and init["build"].get("context") == "."), init.get("build"))
    check('init: restart "no"', init.get("restart") == "no", init.get("restart"))
    check("init: starts with the nodes (service_started; it waits for /_up itself, no health interval)",
          all(depends(init).get(n) == "service_started" for n in NODES), depends(init))
    ienv = as_dict(init.get("environment"))
    for var in REQUIRED_VARS:
        if var != "COUCHDB_SECRET":
            check(f"init: {var} is required", re.fullmatch(r"\$\{" + var + r":\?[^}]+\}", ienv.get(var, "")), ienv.get(var))
    check("init: COUCHDB_NODES names the three nodes",
          [h.strip() for h in ienv.get("COUCHDB_NODES", "").split(",")] == NODES, ienv.get("COUCHDB_NODES"))
    entry = traefik_static(services.get("traefik", {})).get("ENTRYPOINTS_COUCHDB_ADDRESS", "")
    check("init: COUCHDB_LB_URL is Traefik's entry point (drain proves through it that a node gets no requests)",
          ienv.get("COUCHDB_LB_URL") == f"http://traefik{entry}", (ienv.get("COUCHDB_LB_URL"), entry))

    # --- Traefik -----------------------------------------------------------------------------------
    tr = services.get("traefik", {})
    m = re.fullmatch(r"\$\{TRAEFIK_IMAGE:-traefik:v(\d+)\.(\d+)(\.\d+)?\}", str(tr.get("image", "")))
    check("traefik: image ${TRAEFIK_IMAGE:-traefik:vX.Y}, pinned to v3.6 or newer",
          m and (int(m[1]), int(m[2])) >= (3, 6), tr.get("image"))
    check("traefik: starts only after the init completed successfully",
          depends(tr).get(INIT) == "service_completed_successfully", depends(tr))
    ports = [str(p) for p in tr.get("ports") or []]
    check("traefik: publishes port 5984", any(p.endswith(":5984") for p in ports), ports)
    check("traefik: no dashboard port 8080 published", not any("8080" in p for p in ports), ports)
    mounts = [str(v) for v in tr.get("volumes") or []]
    check("traefik: no configuration file mounted (its static configuration is its command, one source)",
          not any("traefik.yml" in v or "traefik.toml" in v for v in mounts), mounts)
    static = traefik_static(tr)
    check("traefik: static configuration as TRAEFIK_* environment, and no command (flags would make "
          "Traefik ignore every variable)", static and not tr.get("command"), (tr.get("command"), static))
    check("traefik: Docker provider with exposedByDefault=false",
          static.get("PROVIDERS_DOCKER_EXPOSEDBYDEFAULT") == "false", static)
    check("traefik: no API or dashboard", not any(k.startswith("API") for k in static), static)
    bundle = lb.get("couchdb.bundle", "")
    check("traefik: routes only to this bundle's nodes (constraint on the nodes' couchdb.bundle label)",
          bundle and static.get("PROVIDERS_DOCKER_CONSTRAINTS") == f"Label(`couchdb.bundle`,`{bundle}`)",
          (bundle, static.get("PROVIDERS_DOCKER_CONSTRAINTS")))
    check("labels: the bundle's name comes from COUCHDB_BUNDLE", bundle == "${COUCHDB_BUNDLE:-couchdb}", bundle)
    router_eps = {lb.get(f"traefik.http.routers.{r}.entrypoints") for r in routers}
    check("traefik: the routers' entry point listens on :5984",
          router_eps and all(static.get(f"ENTRYPOINTS_{e.upper()}_ADDRESS") == ":5984" for e in router_eps),
          (router_eps, static))
    dial = static.get("SERVERSTRANSPORT_FORWARDINGTIMEOUTS_DIALTIMEOUT")
    check("traefik: a short dialTimeout (a stopped node's address swallows connects)",
          dial is not None and seconds(dial) <= 2, dial)
    hc = (tr.get("healthcheck") or {}).get("test") or []
    check("traefik: healthcheck `traefik healthcheck --ping`, with ping on",
          hc == ["CMD", "traefik", "healthcheck", "--ping"] and static.get("PING") == "true", (hc, static.get("PING")))
    check_failover_labels(lb)

    # --- the example dependant, the file as a whole -------------------------------------------------
    # The apps to copy: the `example` profile (the `backup` profile's run has its own checks,
    # tests/compose/check_backup.py).
    dependants = [n for n, s in services.items()
                  if "example" in (s.get("profiles") or []) and depends(s).get(INIT) == "service_completed_successfully"]
    check("an example dependant behind a profile waits for the init to complete successfully", dependants)
    for n in dependants:
        app = services[n]
        tmpfs = app.get("tmpfs") or []
        check(f"{n}: a tmpfs on /opt/couchdb/data (the image's VOLUME would leave an anonymous volume)",
              "/opt/couchdb/data" in ([tmpfs] if isinstance(tmpfs, str) else tmpfs), tmpfs)
        words = " ".join(map(str, (app.get("entrypoint") or []) + (app.get("command") or [])))
        check(f"{n}: talks to the cluster through Traefik", "http://traefik:5984/" in words, words)
    for n, svc in services.items():
        check_no_secret_on_command_lines(n, svc)
    check("no top-level name/include (docker-compose 1.29 lacks them)", not ({"name", "include"} & set(data)))
    for n, s in services.items():
        for dep, cond in (s.get("depends_on") or {}).items() if isinstance(s.get("depends_on"), dict) else []:
            check(f"{n}: depends_on.{dep} uses only `condition` (1.29 lacks restart/required)",
                  set(cond or {}) <= {"condition"}, cond)
    for var in REQUIRED_VARS:
        check(f"{var} is never given a default (${{{var}:-...}})", f"${{{var}:-" not in text and f"${{{var}-" not in text)
    check("no value is the cookie `monster` (CouchDB 3.4.2 refuses it)",
          not any("monster" in v.lower() for v in scalars(data)))

    check_fourth_node(services, labels[0], services[NODES[0]].get("healthcheck"))
    check_dist_tls()
    check_https(labels[0])
    check_zones(services)
    check_monitoring(services, data)

    example_env = (ROOT / ".env.example").read_text()
    keys = {line.split("=", 1)[0] for line in example_env.splitlines() if "=" in line and not line.startswith("#")}
    check(".env.example lists the required variables", set(REQUIRED_VARS) <= keys, sorted(keys))

    n_pass, n_fail = results.count(True), results.count(False)
    print(f"{n_pass} passed, {n_fail} failed")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())

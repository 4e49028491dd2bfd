#!/usr/bin/env python3
"""Static checks of the Kubernetes manifests: that the StatefulSet, the Services, the Job, the
example app and docs/kubernetes.md agree — names, ports, labels, the Secret's keys, exit codes.

    python3 tests/k8s/check_manifests.py ALL.yaml HELM.yaml ZONES.yaml HELM-GUARD.yaml [DIST.yaml]
    # ALL.yaml: `kubectl kustomize k8s/`; HELM.yaml: `kubectl kustomize k8s/helm/`;
    # ZONES.yaml: `kubectl kustomize k8s/zones-from-node/`;
    # HELM-GUARD.yaml: k8s/helm/post-render on tests/k8s/chart-statefulset.yaml;
    # DIST.yaml: `kubectl kustomize k8s/dist-tls/` (the TLS distribution overlay)

Also reads k8s/example-app.yaml, compose.yaml, src/util/exit.rs, src/client/zones.rs and docs/kubernetes.md. Prints one line per check and ends
with "N passed, N failed"; exits 1 if any failed.
"""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# The official Helm chart's Secret keys: a chart user can point the Job at the chart's Secret.
SECRET_KEYS = {"adminUsername", "adminPassword", "cookieAuthSecret", "erlangCookie"}
# Exit codes a retry cannot fix (src/util/exit.rs): configuration, wrong password, unsafe to join.
NEVER_RETRIED = {2, 4, 5}
# The watcher's Deployment and Service (k8s/watch/), and its metrics port (COUCHDB_METRICS_ADDR).
WATCH = "couchdb-cluster-init-watch"

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f": {detail}"))


def load(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def compose_node_healthcheck():
    """The shell script of the Compose bundle's node healthcheck, as the container's shell sees it."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    test = compose["services"]["couchdb-1"]["healthcheck"]["test"]
    return test[1].replace("$$", "$") if test[0] == "CMD-SHELL" else ""


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(found) != 1:
        sys.exit(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def secret_refs(pod_spec):
    """(secret name, key) of every secretKeyRef and secret volume item in a pod spec."""
    refs = []
    for c in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.append((ref["name"], ref["key"]))
    for v in pod_spec.get("volumes", []):
        if "secret" in v:
            for item in v["secret"].get("items", []):
                refs.append((v["secret"]["secretName"], item["key"]))
    return refs


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def file_vars_point_into_secret(name, pod_spec, container):
    """Every *_FILE variable names a file that the pod's secret volume really holds."""
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    files = set()
    for v in pod_spec.get("volumes", []):
        if "secret" in v and v["name"] in mounts:
            files |= {f"{mounts[v['name']]}/{i['path']}" for i in v["secret"].get("items", [])}
    wanted = {k: e.get("value") for k, e in env_of(container).items() if k.endswith("_FILE")}
    check(f"{name}: every *_FILE is a file of its secret volume", wanted and set(wanted.values()) <= files,
          f"{wanted} vs {sorted(files)}")
    check(f"{name}: the secrets are files, never plain environment values",
          not {"COUCHDB_PASSWORD", "COUCHDB_COOKIE"} & set(env_of(container)))


def restricted(name, pod_spec, container):
    pod, c = pod_spec.get("securityContext", {}), container.get("securityContext", {})
    check(f"{name}: runs as non-root", pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) != 0)
    check(f"{name}: read-only root filesystem", c.get("readOnlyRootFilesystem") is True)
    check(f"{name}: no capabilities, no privilege escalation",
          c.get("capabilities", {}).get("drop") == ["ALL"] and c.get("allowPrivilegeEscalation") is False)
    check(f"{name}: seccomp RuntimeDefault", pod.get("seccompProfile", {}).get("type") == "RuntimeDefault")
    check(f"{name}: no service account token", pod_spec.get("automountServiceAccountToken") is False)


ZONE_LABEL = "metadata.labels['topology.kubernetes.io/zone']"


def zone_section():
    """The config section a node reports its zone in (src/client/zones.rs)."""
    m = re.search(r'pub const ZONE_SECTION: &str = "([^"]+)";', (ROOT / "src" / "client" / "zones.rs").read_text())
    return m.group(1) if m else None


def zone_file(name, pod):
    """The pod's `zone` init container writes `[<section>]` / `zone = ` into a file of an emptyDir
    that the couchdb container mounts into etc/default.d (read by CouchDB, never written)."""
    section = zone_section()
    inits = [c for c in pod.get("initContainers", []) if c["name"] == "zone"]
    check(f"{name}: a `zone` init container", len(inits) == 1)
    if not inits:
        return None
    init = inits[0]
    script = " ".join(init.get("command", []))
    target = re.search(r"> (/\S+)$", script.strip())
    check(f"{name}: it writes [{section}] zone = (src/client/zones.rs's ZONE_SECTION)",
          section and f"[{section}]\\nzone = %s" in script and target, script)
    if not target:
        return init
    path = target.group(1)
    mount = next((m for m in init.get("volumeMounts", []) if path.startswith(m["mountPath"] + "/")), None)
    volume = next((v for v in pod.get("volumes", []) if mount and v["name"] == mount["name"]), None)
    couchdb = next(c for c in pod["containers"] if c["name"] == "couchdb")
    read = [m for m in couchdb["volumeMounts"] if mount and m["name"] == mount["name"]]
    check(f"{name}: into an emptyDir the couchdb container reads as an etc/default.d/*.ini file",
          volume is not None and "emptyDir" in volume and len(read) == 1
          and read[0].get("subPath") == path[len(mount["mountPath"]) + 1:]
          and re.fullmatch(r"/opt/couchdb/etc/default\.d/[^/]+\.ini", read[0]["mountPath"]), read)
    return init


def zones(sts, from_node_docs, labels):
    """The zones: from the pod's own label (1.35+) in k8s/, from the API with the least RBAC in
    k8s/zones-from-node/."""
    pod = sts["spec"]["template"]["spec"]
    init = zone_file("StatefulSet", pod)
    if init:
        check("StatefulSet: the zone from the pod's topology.kubernetes.io/zone label (downward API, no RBAC)",
              env_of(init).get("COUCHDB_ZONE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
              == ZONE_LABEL)
    spread = pod.get("topologySpreadConstraints", [])
    check("StatefulSet: pods spread over the zones",
          any(t["topologyKey"] == "topology.kubernetes.io/zone" and selects(t["labelSelector"]["matchLabels"], labels)
              for t in spread))
    check("StatefulSet: no service account token in k8s/ (the zone needs none there)",
          "serviceAccountName" not in pod)

    zsts = one(from_node_docs, "StatefulSet")
    zpod = zsts["spec"]["template"]["spec"]
    zinit = zone_file("zones-from-node", zpod)
    role = one(from_node_docs, "ClusterRole")
    binding = one(from_node_docs, "ClusterRoleBinding")
    account = one(from_node_docs, "ServiceAccount")
    check("zones-from-node: the ClusterRole may only get nodes",
          role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}], role["rules"])
    check("zones-from-node: bound to the StatefulSet's own ServiceAccount",
          binding["roleRef"]["name"] == role["metadata"]["name"]
          and [s["name"] for s in binding["subjects"]] == [account["metadata"]["name"]]
          and zpod.get("serviceAccountName") == account["metadata"]["name"])
    if zinit:
        script = " ".join(zinit.get("command", []))
        token = [v for v in zpod.get("volumes", []) if "projected" in v
                 and any("serviceAccountToken" in s for s in v["projected"]["sources"])]
        holders = [c["name"] for c in zpod.get("initContainers", []) + zpod["containers"]
                   if any(m["name"] in {v["name"] for v in token} for m in c.get("volumeMounts", []))]
        check("zones-from-node: only the zone init container holds a token, which expires",
              zpod.get("automountServiceAccountToken") is False and holders == ["zone"]
              and all(s["serviceAccountToken"].get("expirationSeconds", 0) <= 3600
                      for v in token for s in v["projected"]["sources"] if "serviceAccountToken" in s),
              holders)
        check("zones-from-node: it asks for its own node (spec.nodeName), its label, the token on stdin",
              env_of(zinit).get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
              == "spec.nodeName"
              and "/api/v1/nodes/$NODE_NAME" in script and "topology\\.kubernetes\\.io\\/zone" in script
              and "-K -" in script and "Bearer %s" in script and "COUCHDB_ZONE" not in env_of(zinit), script)
    page = (ROOT / "docs" / "kubernetes.md").read_text()
    check("docs/kubernetes.md: the zones, both ways",
          "topology.kubernetes.io/zone" in page and "kubectl apply -k k8s/zones-from-node/" in page
          and f"[{zone_section()}]" in page)


def check_helm_guard(path, guard):
    """The chart's StatefulSet after k8s/helm/post-render: what ours has for a rolling upgrade."""
    sts = one(load(path), "StatefulSet", "couchdb-couchdb")
    pod = sts["spec"]["template"]["spec"]
    couchdb, others = pod["containers"][0], pod["containers"][1:]
    hguard = next((c for c in others if c["name"] == "guard"), {})
    port = {p["name"]: p["containerPort"] for p in hguard.get("ports", [])}.get("guard")
    probe = " ".join(couchdb.get("readinessProbe", {}).get("exec", {}).get("command", []))
    pre = couchdb.get("lifecycle", {}).get("preStop", {}).get("httpGet", {})
    check("Helm post-render: the chart's CouchDB container drained by preStop and Ready only once the guard is",
          pre.get("path") == "/drain" and pre.get("port") == port and f"localhost:{port}/ready" in probe
          and couchdb["readinessProbe"].get("failureThreshold") == 1 and "httpGet" not in couchdb["readinessProbe"],
          (pre, probe))
    henv = env_of(hguard)
    check("Helm post-render: our guard (args, image, security, resources), on the chart's Secret",
          hguard.get("args") == guard["args"] and hguard.get("image") == guard["image"]
          and hguard.get("securityContext") == guard["securityContext"]
          and hguard.get("resources") == guard["resources"]
          and {n for n, _ in secret_refs(pod)} == {"couchdb-couchdb"} and {k for _, k in secret_refs(pod)} <= SECRET_KEYS
          and henv.get("COUCHDB_NODES") == env_of(guard).get("COUCHDB_NODES"), hguard)
    file_vars_point_into_secret("Helm guard", pod, hguard)
    check("Helm post-render: RollingUpdate, and a grace period for the drain",
          sts["spec"].get("updateStrategy", {}).get("type") == "RollingUpdate"
          and pod.get("terminationGracePeriodSeconds", 30) >= 45)


def main(all_yaml, helm_yaml, zones_yaml, helm_guard_yaml):
    docs = load(all_yaml)
    sts = one(docs, "StatefulSet")
    headless = one(docs, "Service", sts["spec"]["serviceName"])
    clients = [d for d in docs if d["kind"] == "Service" and d is not headless and d["metadata"]["name"] != WATCH]
    job = one(docs, "Job")
    pdb = one(docs, "PodDisruptionBudget")
    app = one(load(ROOT / "k8s" / "example-app.yaml"), "Deployment")

    pod = sts["spec"]["template"]["spec"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    couchdb = next(c for c in pod["containers"] if c["name"] == "couchdb")
    ports = {p["name"]: p["containerPort"] for p in couchdb["ports"]}

    # The StatefulSet and its Services.
    check("StatefulSet selector matches its pod labels", selects(sts["spec"]["selector"]["matchLabels"], labels))
    check("headless Service: clusterIP None, publishNotReadyAddresses",
          headless["spec"].get("clusterIP") == "None" and headless["spec"].get("publishNotReadyAddresses") is True)
    check("one client Service", len(clients) == 1, [c["metadata"]["name"] for c in clients])
    for svc in [headless] + clients:
        name = svc["metadata"]["name"]
        check(f"Service {name} selects the CouchDB pods", selects(svc["spec"]["selector"], labels))
        for p in svc["spec"]["ports"]:
            target = ports.get(p["targetPort"], p["targetPort"])
            check(f"Service {name} port {p['port']} reaches CouchDB's 5984", p["port"] == 5984 and target == 5984)
    check("PodDisruptionBudget selects the CouchDB pods", selects(pdb["spec"]["selector"]["matchLabels"], labels))
    check("StatefulSet: Parallel, couchdb:3.4.2",
          sts["spec"].get("podManagementPolicy") == "Parallel" and couchdb["image"] == "couchdb:3.4.2")
    check("StatefulSet: ERL_FLAGS=-name couchdb (the pod's own DNS name, any cluster domain)",
          env_of(couchdb).get("ERL_FLAGS", {}).get("value") == "-name couchdb")
    check("StatefulSet: Erlang ports 4369 and 9100 declared", {4369, 9100} <= set(ports.values()))
    probe = couchdb["readinessProbe"].get("exec", {}).get("command", [])
    compose_check = compose_node_healthcheck()
    guard = next((c for c in pod["containers"] if c["name"] == "guard"), {})
    guard_env = env_of(guard)
    guard_ports = {p["name"]: p["containerPort"] for p in guard.get("ports", [])}
    guard_port = guard_ports.get("guard")
    ready = f" && curl -fsS -o /dev/null http://localhost:{guard_port}/ready"
    check("StatefulSet: ready only while /_up answers and the node is a member with the system "
          "databases (the Compose bundle's node healthcheck, which its e2e runs), and the guard "
          "says it has caught up",
          probe == ["sh", "-c", compose_check + ready] and "/_up" in compose_check
          and "/_users/_shards" in compose_check, f"{probe!r} vs {compose_check + ready!r}")
    check("StatefulSet: no credential in the readiness probe but from the container's environment",
          "$COUCHDB_PASSWORD" in compose_check and "-u" not in compose_check.split())
    mounts = {m["mountPath"] for m in couchdb["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    kept = {"/opt/couchdb/data", "/opt/couchdb/etc/local.d"}
    check("StatefulSet: data and etc/local.d on a claim",
          kept <= mounts and all(m["name"] in claims for m in couchdb["volumeMounts"] if m["mountPath"] in kept))
    # The rolling upgrade (issue 23): drained before it stops, not Ready until caught up.
    check("StatefulSet: RollingUpdate (one pod at a time, each Ready before the next)",
          sts["spec"].get("updateStrategy", {}).get("type") == "RollingUpdate")
    check("guard: a sidecar running `guard` in the Job's image",
          guard.get("args") == ["guard"] and guard.get("image") == one(docs, "Job")["spec"]["template"]["spec"]
          ["containers"][0]["image"], (guard.get("args"), guard.get("image")))
    check("guard: guards its own pod's node (COUCHDB_NODES=localhost:<CouchDB's port>)",
          guard_env.get("COUCHDB_NODES", {}).get("value") == f"localhost:{ports['http']}",
          guard_env.get("COUCHDB_NODES"))
    client = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] not in
                  (sts["spec"]["serviceName"], WATCH))
    check("guard: COUCHDB_LB_URL is the client Service (drain proves through it)",
          guard_env.get("COUCHDB_LB_URL", {}).get("value") == f"http://{client['metadata']['name']}:5984",
          guard_env.get("COUCHDB_LB_URL"))
    gaddr = guard_env.get("COUCHDB_GUARD_ADDR", {}).get("value", "0.0.0.0:9986")
    check("guard: COUCHDB_GUARD_ADDR is its `guard` port, on every interface",
          gaddr == f"0.0.0.0:{guard_port}", (gaddr, guard_ports))
    pre = couchdb.get("lifecycle", {}).get("preStop", {}).get("httpGet", {})
    check("StatefulSet: preStop asks the guard's /drain (drained before the container stops)",
          pre.get("path") == "/drain" and guard_ports.get(pre.get("port"), pre.get("port")) == guard_port, pre)
    rp = couchdb["readinessProbe"]
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check("StatefulSet: a drained node leaves the Service within one probe period, and the grace period "
          "leaves the drain time to prove it",
          rp.get("failureThreshold") == 1 and grace >= 3 * rp.get("periodSeconds", 10) + 30,
          (rp.get("failureThreshold"), rp.get("periodSeconds"), grace))
    gsc = guard.get("securityContext", {})
    check("guard: non-root, read-only, no capabilities, seccomp RuntimeDefault (its own context: the "
          "pod's would reach CouchDB)",
          gsc.get("runAsNonRoot") is True and gsc.get("runAsUser", 0) != 0 and gsc.get("readOnlyRootFilesystem") is True
          and gsc.get("capabilities", {}).get("drop") == ["ALL"] and gsc.get("allowPrivilegeEscalation") is False
          and gsc.get("seccompProfile", {}).get("type") == "RuntimeDefault", gsc)
    file_vars_point_into_secret("guard", pod, guard)
    anti = pod.get("affinity", {}).get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
    check("StatefulSet: preferred anti-affinity over its own pods",
          any(selects(t["podAffinityTerm"]["labelSelector"]["matchLabels"], labels) for t in anti))

    # The Job.
    jpod = job["spec"]["template"]["spec"]
    init = jpod["containers"][0]
    jenv = env_of(init)
    check("Job: COUCHDB_SERVICE is the headless Service",
          jenv.get("COUCHDB_SERVICE", {}).get("value") == headless["metadata"]["name"])
    expect = int(jenv.get("COUCHDB_EXPECT", {}).get("value", "0"))
    check("Job: COUCHDB_EXPECT is the StatefulSet's replicas", expect == sts["spec"]["replicas"],
          f"{expect} vs {sts['spec']['replicas']}")
    rules = job["spec"].get("podFailurePolicy", {}).get("rules", [])
    fail = [r for r in rules if r["action"] == "FailJob" and "onExitCodes" in r]
    codes = {c for r in fail for c in r["onExitCodes"]["values"] if r["onExitCodes"]["operator"] == "In"}
    check("Job: fails at once on 2, 4 and 5, retries the rest", codes == NEVER_RETRIED, codes)
    check("Job: the failure policy names the init container",
          all(r["onExitCodes"].get("containerName") == init["name"] for r in fail))
    exit_rs = (ROOT / "src" / "util" / "exit.rs").read_text()
    for code, word in [(2, "Config"), (4, "Auth"), (5, "Unsafe")]:
        check(f"exit code {code} is still {word} in src/util/exit.rs", re.search(rf"Status::{word}, {code},", exit_rs))
    check("Job: restartPolicy Never, ttlSecondsAfterFinished",
          jpod.get("restartPolicy") == "Never" and job["spec"].get("ttlSecondsAfterFinished", 0) > 0)
    restricted("Job", jpod, init)
    file_vars_point_into_secret("Job", jpod, init)

    # The example app.
    apod = app["spec"]["template"]["spec"]
    wait = apod["initContainers"][0]
    check("example app: its init container runs `check --wait`", wait.get("args") == ["check", "--wait"])
    check("example app: finds the same pods as the Job",
          {k: env_of(wait).get(k, {}).get("value") for k in ("COUCHDB_SERVICE", "COUCHDB_EXPECT")}
          == {k: jenv[k]["value"] for k in ("COUCHDB_SERVICE", "COUCHDB_EXPECT")})
    check("example app: needs no Erlang cookie", not any(k.startswith("COUCHDB_COOKIE") for k in env_of(wait)))
    restricted("example app's init container", apod, wait)
    file_vars_point_into_secret("example app", apod, wait)
    url = env_of(apod["containers"][0]).get("COUCHDB_URL", {}).get("value", "")
    check("example app: talks to the client Service", url == f"http://{clients[0]['metadata']['name']}:5984", url)

    # One Secret, the chart's keys, the command in docs/kubernetes.md.
    refs = secret_refs(pod) + secret_refs(jpod) + secret_refs(apod)
    check("one Secret for everything", len({n for n, _ in refs}) == 1, sorted({n for n, _ in refs}))
    check("only the chart's Secret keys are used", {k for _, k in refs} <= SECRET_KEYS, {k for _, k in refs})
    check("the StatefulSet uses all four", {k for _, k in secret_refs(pod)} == SECRET_KEYS)
    page = (ROOT / "docs" / "kubernetes.md").read_text()
    created = set(re.findall(r"--from-literal=(\w+)=", page))
    check("docs/kubernetes.md's `kubectl create secret` sets exactly these keys", created == SECRET_KEYS, created)
    secret_name = refs[0][0]
    check("docs/kubernetes.md creates the Secret the manifests use",
          f"kubectl create secret generic {secret_name}" in page)

    # The Job for the official Helm chart (release `couchdb`): the chart's names, our Job.
    helm = one(load(helm_yaml), "Job")
    hpod = helm["spec"]["template"]["spec"]
    hinit = hpod["containers"][0]
    chart_name = "couchdb-couchdb"  # <release>-couchdb: the chart's headless Service and Secret
    check("Helm Job: COUCHDB_SERVICE is the chart's headless Service",
          env_of(hinit)["COUCHDB_SERVICE"]["value"] == chart_name)
    check("Helm Job: every secret is the chart's Secret, by the chart's keys",
          {n for n, _ in secret_refs(hpod)} == {chart_name} and {k for _, k in secret_refs(hpod)} <= SECRET_KEYS)
    check("Helm Job: otherwise our Job (failure policy, security, variables)",
          helm["spec"]["podFailurePolicy"] == job["spec"]["podFailurePolicy"]
          and hpod["securityContext"] == jpod["securityContext"]
          and set(env_of(hinit)) == set(jenv))
    file_vars_point_into_secret("Helm Job", hpod, hinit)
    check("docs/kubernetes.md: the Helm section turns autoSetup off and applies k8s/helm/",
          "autoSetup.enabled=false" in page and "kubectl apply -k k8s/helm/" in page)

    # The watcher: the Job's pods, security and Secret; one replica; its metrics Service.
    watch = one(docs, "Deployment", WATCH)
    wpod = watch["spec"]["template"]["spec"]
    wc = wpod["containers"][0]
    wenv = env_of(wc)
    check("watch: runs `watch`, one replica, never two during a rollout",
          wc.get("args") == ["watch"] and watch["spec"]["replicas"] == 1
          and watch["spec"].get("strategy", {}).get("type") == "Recreate")
    check("watch: selector matches its pod labels",
          selects(watch["spec"]["selector"]["matchLabels"], watch["spec"]["template"]["metadata"]["labels"]))
    check("watch: finds the same pods as the Job",
          {k: wenv.get(k, {}).get("value") for k in ("COUCHDB_SERVICE", "COUCHDB_EXPECT")}
          == {k: jenv[k]["value"] for k in ("COUCHDB_SERVICE", "COUCHDB_EXPECT")})
    check("watch: the Job's security context, pod and container",
          wpod["securityContext"] == jpod["securityContext"] and wc["securityContext"] == init["securityContext"])
    check("watch: the Job's Secret, as the same files",
          wpod["volumes"] == jpod["volumes"] and wc["volumeMounts"] == init["volumeMounts"]
          and {k: v for k, v in wenv.items() if k.endswith("_FILE") or k == "COUCHDB_USER"}
          == {k: v for k, v in jenv.items() if k.endswith("_FILE") or k == "COUCHDB_USER"})
    restricted("watch", wpod, wc)
    file_vars_point_into_secret("watch", wpod, wc)
    addr = wenv.get("COUCHDB_METRICS_ADDR", {}).get("value", "0.0.0.0:9985")
    metrics_port = int(addr.rsplit(":", 1)[1])
    wports = {p["name"]: p["containerPort"] for p in wc.get("ports", [])}
    check("watch: its metrics port is COUCHDB_METRICS_ADDR's, on every interface",
          wports.get("metrics") == metrics_port and addr.startswith("0.0.0.0:"), f"{wports} vs {addr}")
    live = wc.get("livenessProbe", {}).get("httpGet", {})
    check("watch: liveness on /healthz of the metrics port",
          live.get("path") == "/healthz" and live.get("port") in ("metrics", metrics_port), live)
    wsvc = one(docs, "Service", WATCH)
    check("watch Service selects the watcher, not CouchDB",
          selects(wsvc["spec"]["selector"], watch["spec"]["template"]["metadata"]["labels"])
          and not selects(wsvc["spec"]["selector"], labels))
    sport = wsvc["spec"]["ports"][0]
    notes = wsvc["metadata"].get("annotations", {})
    check("watch Service: the metrics port, with scrape annotations naming it",
          sport["name"] == "metrics" and sport["port"] == metrics_port
          and wports.get(sport["targetPort"], sport["targetPort"]) == metrics_port
          and notes.get("prometheus.io/scrape") == "true" and notes.get("prometheus.io/port") == str(metrics_port)
          and notes.get("prometheus.io/path") == "/metrics", notes)
    monitor = one(load(ROOT / "k8s" / "watch" / "servicemonitor.yaml"), "ServiceMonitor")
    ends = monitor["spec"]["endpoints"]
    check("the ServiceMonitor example selects the watch Service and scrapes its metrics port",
          selects(monitor["spec"]["selector"]["matchLabels"], wsvc["metadata"]["labels"])
          and [e["port"] for e in ends] == ["metrics"] and ends[0].get("path") == "/metrics")
    # The alert rules, for the Prometheus Operator: monitoring/rules.yml's groups, no copy drifting.
    rules = load(ROOT / "monitoring" / "rules.yml")[0]
    prule = one(load(ROOT / "k8s" / "watch" / "prometheusrule.yaml"), "PrometheusRule")
    differ = [r.get("alert") for r, o in zip(rules["groups"][0]["rules"], prule["spec"]["groups"][0]["rules"]) if r != o]
    check("the PrometheusRule example holds monitoring/rules.yml's groups, exactly",
          prule["spec"]["groups"] == rules["groups"], f"differ: {differ or 'the groups themselves'}")
    # The rule that tells a watcher gone names the job the ServiceMonitor gives it (the Service's name).
    job = f'job="{wsvc["metadata"]["name"]}"'
    check("the watcher-down rule asks for the job the ServiceMonitor scrapes (the watch Service's name)",
          any(r.get("alert") == "CouchDBWatcherDown" and job in r["expr"] for r in rules["groups"][0]["rules"]
              ) and "jobLabel" not in monitor["spec"], job)
    check("docs/kubernetes.md: scale-up is `kubectl scale`, the watcher joins",
          "kubectl scale statefulset couchdb --replicas=4" in page and "watch" in page)
    check("docs/kubernetes.md: an upgrade is `kubectl set image` on the StatefulSet's couchdb container",
          f"kubectl set image statefulset/{sts['metadata']['name']} {couchdb['name']}=couchdb:3.5.2" in page)

    hwatch = one(load(helm_yaml), "Deployment", WATCH)
    hwpod = hwatch["spec"]["template"]["spec"]
    hwc = hwpod["containers"][0]
    check("Helm watch: the chart's headless Service and Secret, otherwise our watcher",
          env_of(hwc)["COUCHDB_SERVICE"]["value"] == chart_name
          and {n for n, _ in secret_refs(hwpod)} == {chart_name}
          and set(env_of(hwc)) == set(wenv) and hwpod["securityContext"] == wpod["securityContext"]
          and env_of(hwc)["COUCHDB_EXPECT"] == env_of(hinit)["COUCHDB_EXPECT"])
    file_vars_point_into_secret("Helm watch", hwpod, hwc)
    # The backup CronJob and the restore Job (k8s/backup/): the same pod hardening, secrets as
    # files, the command they run, and never a retry of a configuration error or a wrong password.
    backup_dir = ROOT / "k8s" / "backup"
    for name, doc, pod, args in [
        ("backup CronJob", load(backup_dir / "cronjob.yaml")[0], None, ["backup"]),
        ("restore Job", load(backup_dir / "restore-job.yaml")[0], None, ["restore"]),
    ]:
        spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
        pod = spec["template"]["spec"]
        c = pod["containers"][0]
        check(f"{name}: runs `{' '.join(args)}`", c.get("args") == args, c.get("args"))
        restricted(name, pod, c)
        file_vars_point_into_secret(name, pod, c)
        env = env_of(c)
        check(f"{name}: the backup's password is a file, never a plain value",
              "COUCHDB_BACKUP_PASSWORD" not in env and "COUCHDB_BACKUP_PASSWORD_FILE" in env)
        rules = spec.get("podFailurePolicy", {}).get("rules", [])
        codes = {v for r in rules if r["action"] == "FailJob" for v in r["onExitCodes"]["values"]}
        check(f"{name}: fails at once on 2 and 4 (a retry could lock the account)", codes == {2, 4}, codes)
    check("the backup CronJob never runs twice at once",
          load(backup_dir / "cronjob.yaml")[0]["spec"].get("concurrencyPolicy") == "Forbid")

    # Zones.
    zones(sts, load(zones_yaml), labels)
    check_helm_guard(helm_guard_yaml, guard)

    # No cluster domain anywhere.
    hard_coded = [str(p.relative_to(ROOT)) for p in (ROOT / "k8s").rglob("*.yaml") if "cluster.local" in p.read_text()]
    check("no manifest hard-codes cluster.local", not hard_coded, hard_coded)

    passed, failed = results.count(True), results.count(False)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def check_dist_tls(base_docs, dist_docs):
    """k8s/dist-tls/: k8s/ with the CouchDB pods on the TLS distribution (compose's ssl_dist.conf,
    each pod's own certificate and key from the Secret couchdb-dist-tls by its name, read-only,
    group 5984), and the Job and the watcher expecting it; nothing else changed."""
    flags = "-name couchdb -proto_dist couch -ssl_dist_optfile /opt/couchdb/etc/dist-tls/ssl_dist.conf"
    sts = one(dist_docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "couchdb")
    env = env_of(c)
    check("dist-tls: CouchDB runs the TLS distribution, still with -name couchdb",
          env.get("ERL_FLAGS", {}).get("value") == flags, env.get("ERL_FLAGS"))
    check("dist-tls: POD_NAME from the pod's name (for subPathExpr)",
          env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    want = {"ca.crt": ("subPath", "ca.crt"), "node.crt": ("subPathExpr", "$(POD_NAME).crt"),
            "node.key": ("subPathExpr", "$(POD_NAME).key")}
    for f, (how, what) in want.items():
        m = mounts.get(f"/opt/couchdb/etc/dist-tls/{f}", {})
        check(f"dist-tls: {f} from the Secret, {how} {what}, read-only",
              m.get("name") == "dist-tls" and m.get(how) == what and m.get("readOnly") is True, m)
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    secret = vols.get("dist-tls", {}).get("secret", {})
    check("dist-tls: the Secret couchdb-dist-tls, mode 0440, and the pod's fsGroup is CouchDB's 5984",
          secret.get("secretName") == "couchdb-dist-tls" and secret.get("defaultMode") == 0o440
          and pod.get("securityContext", {}).get("fsGroup") == 5984, (secret, pod.get("securityContext")))
    conf_mount = mounts.get("/opt/couchdb/etc/dist-tls/ssl_dist.conf", {})
    cm_name = vols.get(conf_mount.get("name"), {}).get("configMap", {}).get("name", "")
    cm = next((d for d in dist_docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name), None)
    compose_conf = (ROOT / "compose" / "dist-tls" / "ssl_dist.conf").read_text()
    check("dist-tls: ssl_dist.conf is the Compose bundle's, mounted from its ConfigMap",
          cm is not None and cm["data"].get("ssl_dist.conf") == compose_conf
          and (ROOT / "k8s" / "dist-tls" / "ssl_dist.conf").read_text() == compose_conf, cm_name)
    for kind, name, cname in [("Job", None, "init"), ("Deployment", WATCH, "watch")]:
        w = one(dist_docs, kind, name)
        wc = next(x for x in w["spec"]["template"]["spec"]["containers"] if x["name"] == cname)
        check(f"dist-tls: the {kind} expects TLS (COUCHDB_DIST_TLS=true)",
              env_of(wc).get("COUCHDB_DIST_TLS", {}).get("value") == "true")
    # Nothing else differs from k8s/: strip what the overlay adds and compare.
    strip = yaml.safe_load(yaml.safe_dump([d for d in dist_docs if d["kind"] != "ConfigMap"]))
    for d in strip:
        spec = d.get("spec", {}).get("template", {}).get("spec", {})
        for ctr in spec.get("containers", []):
            ctr["env"] = [e for e in ctr.get("env", []) if e["name"] not in ("POD_NAME", "COUCHDB_DIST_TLS")]
            for e in ctr["env"]:
                if e["name"] == "ERL_FLAGS" and d["kind"] == "StatefulSet":
                    e["value"] = "-name couchdb"
            ctr["volumeMounts"] = [m for m in ctr.get("volumeMounts", []) if "/dist-tls/" not in m["mountPath"]]
            if not ctr["volumeMounts"]:
                del ctr["volumeMounts"]
        if d["kind"] == "StatefulSet":
            spec.pop("securityContext")
            spec["volumes"] = [v for v in spec["volumes"] if not v["name"].startswith("dist-tls")]
            if not spec["volumes"]:
                del spec["volumes"]
    check("dist-tls: changes nothing else of k8s/", strip == base_docs)
    page = (ROOT / "docs" / "kubernetes.md").read_text()
    check("docs/kubernetes.md: shows kubectl apply -k k8s/dist-tls/ and the Secret couchdb-dist-tls",
          "kubectl apply -k k8s/dist-tls/" in page and "couchdb-dist-tls" in page)


if __name__ == "__main__":
    if len(sys.argv) > 5:
        check_dist_tls(load(sys.argv[1]), load(sys.argv[5]))
    sys.exit(main(*sys.argv[1:5]))

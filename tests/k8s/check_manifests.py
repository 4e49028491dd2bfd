#!/usr/bin/env python3
"""Static checks of the Kubernetes manifests: that the StatefulSet, the Services, the Job, the
example app and docs/kubernetes.md agree — names, ports, labels, the Secret's keys, exit codes.

    python3 tests/k8s/check_manifests.py ALL.yaml HELM.yaml [HELM-GUARD.yaml]
    # ALL.yaml: `kubectl kustomize k8s/`; HELM.yaml: `kubectl kustomize k8s/helm/`;
    # HELM-GUARD.yaml: k8s/helm/post-render on tests/k8s/chart-statefulset.yaml

Also reads k8s/example-app.yaml, compose.yaml, src/util/exit.rs and docs/kubernetes.md. Prints one line per check and ends
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


def main(all_yaml, helm_yaml, helm_guard_yaml=None):
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
    check("StatefulSet: data and etc/local.d on a claim",
          {"/opt/couchdb/data", "/opt/couchdb/etc/local.d"} <= mounts
          and all(m["name"] in claims for m in couchdb["volumeMounts"]))
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

    if helm_guard_yaml:
        check_helm_guard(helm_guard_yaml, guard)

    # No cluster domain anywhere.
    hard_coded = [str(p.relative_to(ROOT)) for p in (ROOT / "k8s").rglob("*.yaml") if "cluster.local" in p.read_text()]
    check("no manifest hard-codes cluster.local", not hard_coded, hard_coded)

    passed, failed = results.count(True), results.count(False)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

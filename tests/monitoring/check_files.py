#!/usr/bin/env python3
"""Static checks of monitoring/: the dashboard is Grafana JSON whose every panel queries the
datasource picked on import and the watcher picker, and every metric the dashboard and the rules
name is one `watch` exports (src/commands/watch/metrics.rs) — the rules may also name
`couchdb_node_maintenance`, the drain's flag, exported once the drain is merged; each rule has a
`for:`, a severity and a summary naming what to run (promtool checks the rules' syntax and
behaviour in run.sh).

    python3 tests/monitoring/check_files.py

Prints one line per check and ends with "N passed, N failed"; exits 1 if any failed.
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Metrics the rules may use before this branch exports them: the shared contract's, which the
# watcher publishes once the drain (#23) is merged.
CONTRACT = {"couchdb_node_maintenance"}

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f": {detail}"))


def metrics_in(expr):
    return set(re.findall(r"\b(couchdb_[a-z_]+|up)\b", expr)) - {"up"}


exported = set(re.findall(r'"(couchdb_[a-z_]+)"', (ROOT / "src/commands/watch/metrics.rs").read_text()))
check("metrics.rs exports the series the page's alerts need",
      {"couchdb_node_up", "couchdb_backup_failing", "couchdb_watch_interval_seconds"} <= exported, sorted(exported))

dash = json.loads((ROOT / "monitoring/dashboard.json").read_text())
panels, stack = [], list(dash.get("panels", []))
while stack:
    p = stack.pop(0)
    panels.append(p)
    stack.extend(p.get("panels", []))
ids = [p.get("id") for p in panels]
check("dashboard: a uid, a title, panels with unique ids", dash.get("uid") and dash.get("title") and len(set(ids)) == len(ids), ids)
variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
check("dashboard: a Prometheus datasource picker and a watcher picker (All = .+)",
      variables.get("datasource", {}).get("type") == "datasource" and variables["datasource"].get("query") == "prometheus"
      and variables.get("instance", {}).get("allValue") == ".+", sorted(variables))
graphs = [p for p in panels if p.get("type") != "row"]
for p in graphs:
    title = p.get("title")
    targets = p.get("targets") or []
    check(f"dashboard `{title}`: a grid position and the picked datasource",
          {"x", "y", "w", "h"} <= set(p.get("gridPos", {})) and p.get("datasource", {}).get("uid") == "${datasource}", p.get("gridPos"))
    for t in targets:
        expr = t.get("expr", "")
        unknown = metrics_in(expr) - exported
        check(f"dashboard `{title}`: `{expr}` asks for the picked watchers and for metrics watch exports",
              'instance=~"$instance"' in expr and metrics_in(expr) and not unknown, unknown)
wanted = {"couchdb_cluster_members", "couchdb_cluster_healthy", "couchdb_node_copies", "couchdb_node_bytes",
          "couchdb_cluster_ranges_below_n", "couchdb_backup_docs_behind", "couchdb_node_up"}
shown = set().union(*(metrics_in(t.get("expr", "")) for p in graphs for t in p.get("targets") or []))
check("dashboard: members, health, copies and bytes per node, ranges below n, backup lag", wanted <= shown, wanted - shown)

rules = yaml.safe_load((ROOT / "monitoring/rules.yml").read_text())
for g in rules["groups"]:
    for r in g["rules"]:
        unknown = metrics_in(r["expr"]) - exported - CONTRACT
        summary = r.get("annotations", {}).get("summary", "")
        check(f"rule {r.get('alert')}: its metrics exist, a for:, a severity, a summary naming what to run",
              not unknown and r.get("for") and r.get("labels", {}).get("severity") in ("critical", "warning")
              and re.search(r"`couchdb-cluster-init [a-z]+|`kubectl|read (the watcher's|its) log", summary), unknown or summary)

n_pass, n_fail = results.count(True), results.count(False)
print(f"{n_pass} passed, {n_fail} failed")
sys.exit(1 if n_fail else 0)

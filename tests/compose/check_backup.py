#!/usr/bin/env python3
"""Static checks of compose.yaml's `backup` profile: a standalone backup CouchDB that needs
nothing but its databases, and the run that keeps every database replicated to it.

    python3 tests/compose/check_backup.py [compose.yaml]

Prints one line per check and ends with "N passed, N failed"; exits 1 if any failed.
"""

import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_compose import INIT, NODES, ROOT, as_dict, depends, scalars  # noqa: E402

BACKUP = "couchdb-backup"
RUN = "couchdb-backup-init"
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(("ok   " if ok else "FAIL ") + name + ("" if ok or not detail else f": {detail}"))


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "compose.yaml"
    services = yaml.safe_load(path.read_text()).get("services", {})
    node, run, init = services.get(BACKUP, {}), services.get(RUN, {}), services.get(INIT, {})

    # --- the backup CouchDB ------------------------------------------------------------------------
    check(f"{BACKUP}: in the backup profile only", node.get("profiles") == ["backup"], node.get("profiles"))
    check(f"{BACKUP}: image couchdb:3.4.2", node.get("image") == "couchdb:3.4.2", node.get("image"))
    check(f"{BACKUP}: no host ports", not node.get("ports"), node.get("ports"))
    labels = as_dict(node.get("labels"))
    check(f"{BACKUP}: no Traefik labels (never routed to)", not any(k.startswith("traefik.") for k in labels), labels)
    env = as_dict(node.get("environment"))
    for var in ["COUCHDB_USER", "COUCHDB_PASSWORD"]:
        check(f"{BACKUP}: {var} is required (${{{var}:?...}})",
              re.fullmatch(r"\$\{" + var + r":\?[^}]+\}", env.get(var, "")), env.get(var))
    check(f"{BACKUP}: not the cluster's Erlang cookie (it never joins)", "COUCHDB_ERLANG_COOKIE" not in env, env)
    targets = {str(v).split(":")[1]: str(v).split(":")[0] for v in node.get("volumes") or [] if ":" in str(v)}
    check(f"{BACKUP}: named volumes on /opt/couchdb/data and /opt/couchdb/etc/local.d (its admin hash)",
          {"/opt/couchdb/data", "/opt/couchdb/etc/local.d"} <= set(targets), targets)
    theirs = {str(v).split(":")[0] for n in NODES for v in services[n].get("volumes") or []}
    check(f"{BACKUP}: no volume shared with a node", not (set(targets.values()) & theirs), targets)
    check(f"{BACKUP}: a healthcheck on /_up", "/_up" in " ".join(map(str, (node.get("healthcheck") or {}).get("test") or [])))
    check("no service sets anything up with /_cluster_setup (enable_single_node re-hashes the admin)",
          not any("_cluster_setup" in v or "enable_single_node" in v for v in scalars(services)))

    # --- the backup run ----------------------------------------------------------------------------
    check(f"{RUN}: in the backup profile only", run.get("profiles") == ["backup"], run.get("profiles"))
    check(f"{RUN}: the init's image and build", (run.get("image"), run.get("build")) == (init.get("image"), init.get("build")),
          (run.get("image"), run.get("build")))
    check(f"{RUN}: runs `backup`", run.get("command") == ["backup"], run.get("command"))
    check(f'{RUN}: restart "no"', run.get("restart") == "no", run.get("restart"))
    check(f"{RUN}: after the init completed successfully, with the backup started",
          depends(run) == {INIT: "service_completed_successfully", BACKUP: "service_started"}, depends(run))
    renv, ienv = as_dict(run.get("environment")), as_dict(init.get("environment"))
    check(f"{RUN}: the init's COUCHDB_NODES, COUCHDB_USER, COUCHDB_PASSWORD",
          all(renv.get(v) == ienv.get(v) for v in ["COUCHDB_NODES", "COUCHDB_USER", "COUCHDB_PASSWORD"]), renv)
    check(f"{RUN}: COUCHDB_BACKUP_URL is {BACKUP}", renv.get("COUCHDB_BACKUP_URL") == BACKUP, renv.get("COUCHDB_BACKUP_URL"))

    n_pass, n_fail = results.count(True), results.count(False)
    print(f"{n_pass} passed, {n_fail} failed")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())

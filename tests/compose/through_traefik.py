#!/usr/bin/env python3
"""Requests through the bundle's Traefik, as a client sees them: tests/compose/e2e.sh and
scripts/bench-bundle call this. Standard library only.

    through_traefik.py PORT probe --deadline S        # poll / until the first answer; log every try
    through_traefik.py PORT cookie                    # the Set-Cookie header of GET /_up
    through_traefik.py PORT sticky --count N          # N requests with the cookie: one node
    through_traefik.py PORT spread --count N          # N requests without: every node seen
    through_traefik.py PORT never --name NODE --count N
    through_traefik.py PORT reaches --name NODE --deadline S
    through_traefik.py PORT failover --container NAME=ID ... --seconds S
    through_traefik.py PORT leaves --name NODE --seconds S --within S
    through_traefik.py PORT load --db DB --prefix P --until FILE [--every S] [--allow-failures]

With `--https NAME --cacert FILE` before PORT, every request goes over TLS to 127.0.0.1:PORT as
https://NAME (SNI and Host NAME, the certificate verified against FILE: curl's --resolve and
--cacert), as tests/compose/e2e-https.sh does through the HTTPS override.

Which node answered is GET /_node/_local's `name` (admin only): the credentials come from the
environment (CCI_E2E_USER, CCI_E2E_PASSWORD), never from the command line. Prints one line per
check; exits 1 with the reason when a check fails.
"""

import argparse
import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

COOKIE = "couchdb_sticky"
TLS = {}  # {"name": NAME, "context": ssl.SSLContext} with --https


class ResolvedHTTPS(http.client.HTTPSConnection):
    """https://NAME:PORT with NAME resolved to 127.0.0.1 (curl's --resolve): the certificate is
    checked for NAME, which is also the SNI and the Host header."""

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def connection(port, timeout):
    if TLS:
        return ResolvedHTTPS(TLS["name"], port, timeout=timeout, context=TLS["context"])
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


class Client:
    """One client with a cookie jar that holds at most the sticky cookie."""

    def __init__(self, port, auth=True):
        self.port = port
        self.cookie = None
        self.headers = {}
        if auth:
            user, password = os.environ.get("CCI_E2E_USER", ""), os.environ.get("CCI_E2E_PASSWORD", "")
            if not user or not password:
                sys.exit("through_traefik: set CCI_E2E_USER and CCI_E2E_PASSWORD")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def get(self, path, keep_cookie=True, timeout=15, method="GET", body=None):
        """(status, body, set_cookie header or None); status None when nothing answered."""
        headers = dict(self.headers)
        if keep_cookie and self.cookie:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn = connection(self.port, timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            set_cookie = resp.getheader("Set-Cookie")
            if keep_cookie and set_cookie and set_cookie.startswith(COOKIE + "="):
                self.cookie = set_cookie.split(";")[0].split("=", 1)[1]
            return resp.status, body, set_cookie
        except (OSError, http.client.HTTPException):
            return None, b"", None
        finally:
            conn.close()

    def node(self, keep_cookie=True):
        """(status, the answering node's Erlang name or None, Set-Cookie)."""
        status, body, set_cookie = self.get("/_node/_local", keep_cookie)
        name = None
        if status == 200:
            try:
                name = json.loads(body).get("name")
            except ValueError:
                pass
        return status, name, set_cookie


def fail(msg):
    print(f"FAIL {msg}")
    sys.exit(1)


def probe(args):
    """Every try, as `<unix time ns> <status or refused>`, until the first HTTP answer that is a
    200 (or the deadline). Other answers are logged and the polling goes on."""
    c = Client(args.port, auth=False)
    end = time.time() + args.deadline
    while time.time() < end:
        t = time.time_ns()
        status, _, _ = c.get("/", keep_cookie=False, timeout=2)
        print(f"{t} {status if status is not None else 'refused'}", flush=True)
        if status == 200:
            return
        time.sleep(args.every)
    fail(f"no 200 on / within {args.deadline} s")


def cookie(args):
    status, _, set_cookie = Client(args.port).get("/_up")
    if status != 200 or not set_cookie:
        fail(f"GET /_up answered {status} with Set-Cookie {set_cookie!r}")
    print(set_cookie)


def sticky(args):
    c = Client(args.port)
    names = [c.node()[1] for _ in range(args.count)]
    if c.cookie is None:
        fail("no sticky cookie was set")
    if None in names or len(set(names)) != 1:
        fail(f"with the cookie, {args.count} requests reached {names}")
    print(f"ok {args.count}/{args.count} requests with the cookie reached {names[0]}")


def spread(args):
    c = Client(args.port)
    names = [c.node(keep_cookie=False)[1] for _ in range(args.count)]
    seen = sorted({n for n in names if n})
    if None in names or len(seen) < args.nodes:
        fail(f"without the cookie, {args.count} requests reached only {seen} ({names.count(None)} failed)")
    print(f"ok without the cookie {args.count} requests spread over {len(seen)} nodes: {', '.join(seen)}")


def never(args):
    c = Client(args.port)
    names = [c.node(keep_cookie=False)[1] for _ in range(args.count)]
    if args.name in names:
        fail(f"{args.name} answered {names.count(args.name)} of {args.count} requests")
    if None in names:
        fail(f"{names.count(None)} of {args.count} requests failed")
    print(f"ok {args.name} answered none of {args.count} requests ({', '.join(sorted(set(names)))} did)")


def reaches(args):
    c = Client(args.port)
    start = time.time()
    tries = 0
    while time.time() - start < args.deadline:
        tries += 1
        if c.node(keep_cookie=False)[1] == args.name:
            print(f"ok {args.name} answered request {tries}, {time.time() - start:.1f} s after asking")
            return
        time.sleep(0.05)
    fail(f"{args.name} answered none of {tries} requests in {args.deadline} s")


def failover(args):
    """Pins a client, stops its node (docker stop) while the client keeps asking every 50 ms:
    another node must take over, the cookie be rewritten, and no request sent after the node
    stopped may fail or answer a 5xx. A request the node accepted and then died under, while
    `docker stop` ran, cannot be saved by any proxy (Traefik retries only requests no node
    received): at most one such is allowed, and reported."""
    containers = dict(kv.split("=", 1) for kv in args.container)
    c = Client(args.port)
    _, pinned, _ = c.node()
    old_cookie = c.cookie
    if pinned not in containers or not old_cookie:
        fail(f"pinned to {pinned} (cookie {old_cookie!r}); containers known: {sorted(containers)}")
    stop = {}

    def stop_node():
        stop["start"] = time.time()
        subprocess.run(["docker", "stop", "-t", "10", containers[pinned]], stdout=subprocess.DEVNULL, check=False)
        stop["end"] = time.time()

    stopper = threading.Thread(target=stop_node)
    log = []  # (sent, took, status, node, cookie rewritten)
    end = time.time() + args.seconds
    stopper.start()
    while time.time() < end:
        t = time.time()
        status, name, set_cookie = c.node()
        log.append((t, round(time.time() - t, 3), status, name, bool(set_cookie)))
        time.sleep(0.05)
    stopper.join()
    failed = [e for e in log if e[2] is None or e[2] >= 500]
    late = [e for e in failed if e[0] >= stop["end"]]
    during = [e for e in failed if e[0] < stop["end"]]
    if late or len(during) > 1:
        fail(f"while {pinned} stopped, {len(failed)} of {len(log)} requests failed "
             f"({len(late)} sent after it had stopped): {[e[1:] for e in failed[:5]]}")
    after = [e for e in log if e[3] != pinned and e[2] == 200]
    if not after or any(e[3] == pinned for e in log[log.index(after[0]):]):
        fail(f"requests did not move off {pinned} for good: {[e[1:] for e in log]}")
    if c.cookie == old_cookie or not after[0][4]:
        fail(f"the cookie was not rewritten when {after[0][3]} took over")
    note = f"; {len(during)} request in flight as it died answered {during[0][2]}" if during else ""
    print(f"ok {pinned} stopped: {len(log)} requests, no 5xx after it stopped{note}; {after[0][3]} took over "
          f"(slowest answer {max(e[1] for e in log):.2f} s) and the cookie was rewritten")
    print(f"pinned={pinned}")


def leaves(args):
    """Asks without the cookie for `seconds`; the node must not answer any request sent more than
    `within` seconds after the start."""
    c = Client(args.port)
    start = time.time()
    last_seen = None
    count = 0
    while time.time() - start < args.seconds:
        t = time.time() - start
        status, name, _ = c.node(keep_cookie=False)
        count += 1
        if status is None or status >= 500:
            fail(f"request {count} answered {status}")
        if name == args.name:
            last_seen = t
        time.sleep(0.05)
    if last_seen is not None and last_seen > args.within:
        fail(f"{args.name} still answered a request sent {last_seen:.2f} s after it left (allowed {args.within} s)")
    when = "never answered" if last_seen is None else f"last answered a request sent at {last_seen:.2f} s"
    print(f"ok {args.name} left the rotation: {when}, none after in {count} requests over {args.seconds} s")


def load(args):
    """A client of the cluster, as an application is: every `every` seconds it writes a new
    document and reads it back, keeping its sticky cookie, until the file `until` exists. Then it
    reads every document whose write was acknowledged. Prints the requests, the answers that were
    not 2xx (each as `METHOD status`, with when they came, seconds from the start) and the
    acknowledged writes that cannot be read; fails on any of them unless --allow-failures."""
    c = Client(args.port)
    start = time.time()
    sent, failed, acked = 0, [], []
    n = 0
    folder = os.path.dirname(os.path.abspath(args.until))
    # Also ends when its folder is gone (the test's cleanup after a failure) or after an hour.
    while not os.path.exists(args.until) and os.path.isdir(folder) and time.time() - start < 3600:
        n += 1
        doc = f"{args.prefix}-{n:05d}"
        t = time.time() - start
        status, _, _ = c.get(f"/{args.db}/{doc}", method="PUT", body=json.dumps({"n": n}), timeout=30)
        sent += 1
        if status is not None and 200 <= status < 300:
            acked.append(doc)
            status, _, _ = c.get(f"/{args.db}/{doc}", timeout=30)
            sent += 1
            if status is None or not 200 <= status < 300:
                failed.append((round(t, 2), "GET", status))
        else:
            failed.append((round(t, 2), "PUT", status))
        time.sleep(args.every)
    took = time.time() - start
    lost = []
    for doc in acked:
        status, _, _ = c.get(f"/{args.db}/{doc}", timeout=30)
        if status != 200:
            lost.append((doc, status))
    codes = {}
    for _, method, status in failed:
        codes[f"{method} {status or 'no answer'}"] = codes.get(f"{method} {status or 'no answer'}", 0) + 1
    line = (f"{len(failed)} of {sent} requests failed over {took:.1f} s ({len(acked)} writes acknowledged, "
            f"{len(lost)} of them not readable at the end)")
    if failed:
        line += f"; answers: {', '.join(f'{k} x{v}' for k, v in sorted(codes.items()))}; first at {failed[0][0]} s"
    if (failed or lost) and not args.allow_failures:
        fail(line + (f"; lost: {lost[:5]}" if lost else ""))
    print(f"ok {line}")
    print(f"failed={len(failed)} sent={sent} acked={len(acked)} lost={len(lost)} seconds={took:.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--https", metavar="NAME")
    p.add_argument("--cacert", metavar="FILE")
    p.add_argument("port", type=int)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("probe")
    s.add_argument("--deadline", type=float, default=60)
    s.add_argument("--every", type=float, default=0.02)
    sub.add_parser("cookie")
    for name in ("sticky", "spread", "never"):
        s = sub.add_parser(name)
        s.add_argument("--count", type=int, default=20)
        s.add_argument("--nodes", type=int, default=3)
        s.add_argument("--name")
    s = sub.add_parser("reaches")
    s.add_argument("--name", required=True)
    s.add_argument("--deadline", type=float, default=30)
    s = sub.add_parser("failover")
    s.add_argument("--container", action="append", default=[])
    s.add_argument("--seconds", type=float, default=6)
    s = sub.add_parser("leaves")
    s.add_argument("--name", required=True)
    s.add_argument("--seconds", type=float, default=6)
    s.add_argument("--within", type=float, required=True)
    s = sub.add_parser("load")
    s.add_argument("--db", required=True)
    s.add_argument("--prefix", required=True)
    s.add_argument("--until", required=True)
    s.add_argument("--every", type=float, default=0.05)
    s.add_argument("--allow-failures", action="store_true")
    args = p.parse_args()
    if args.https:
        if not args.cacert:
            p.error("--https needs --cacert")
        TLS.update(name=args.https, context=ssl.create_default_context(cafile=args.cacert))
    {"probe": probe, "cookie": cookie, "sticky": sticky, "spread": spread, "never": never,
     "reaches": reaches, "failover": failover, "leaves": leaves, "load": load}[args.cmd](args)


if __name__ == "__main__":
    main()

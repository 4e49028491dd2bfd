//! The metrics endpoint on COUCHDB_METRICS_ADDR: `GET /metrics`, `GET /healthz`, the status page
//! `GET /` and its data `GET /status.json`, nothing else (src/util/serve.rs answers the
//! requests). Every answer is rendered from what the watch loop last saw: none sends a request
//! to a node.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use anyhow::Result;

use super::metrics::{render, Shared};
use super::page;
use crate::util::serve::{self, Reply};
use crate::util::sync::lock;

pub fn start(addr: SocketAddr, shared: Arc<Mutex<Shared>>) -> Result<SocketAddr> {
    serve::start(
        addr,
        "COUCHDB_METRICS_ADDR",
        Arc::new(move |path: &str| {
            let s = lock(&shared);
            match path {
                "/metrics" => Reply {
                    status: 200,
                    body: render(&s, Instant::now()),
                    kind: "text/plain; version=0.0.4; charset=utf-8",
                },
                "/healthz" if s.live(Instant::now()) => Reply::text(200, "ok\n"),
                "/healthz" => Reply::text(503, "no look at the cluster finished lately\n"),
                "/" => Reply {
                    status: 200,
                    body: page::html(&s, SystemTime::now()),
                    kind: "text/html; charset=utf-8",
                },
                "/status.json" => Reply {
                    status: 200,
                    body: page::json(&s),
                    kind: "application/json",
                },
                _ => Reply::text(404, "only /, /status.json, /metrics and /healthz\n"),
            }
        }),
    )
}

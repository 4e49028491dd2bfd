//! The metrics endpoint: `GET /metrics` and `GET /healthz` on COUCHDB_METRICS_ADDR, nothing
//! else (src/util/serve.rs answers the requests).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;

use super::metrics::{render, Shared};
use crate::util::serve::{self, Reply};

pub fn start(addr: SocketAddr, shared: Arc<Mutex<Shared>>) -> Result<SocketAddr> {
    serve::start(
        addr,
        "COUCHDB_METRICS_ADDR",
        Arc::new(move |path: &str| {
            // A poisoned lock means the watch loop panicked; the page is still worth serving.
            let s = shared.lock().unwrap_or_else(|p| p.into_inner());
            match path {
                "/metrics" => Reply {
                    status: 200,
                    body: render(&s),
                    kind: "text/plain; version=0.0.4; charset=utf-8",
                },
                "/healthz" if s.live(Instant::now()) => Reply::text(200, "ok\n"),
                "/healthz" => Reply::text(503, "no look at the cluster finished lately\n"),
                _ => Reply::text(404, "only /metrics and /healthz\n"),
            }
        }),
    )
}

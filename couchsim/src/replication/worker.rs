//! One run of a replication job, over HTTP as CouchDB's replicator does it: wait the start-up
//! jitter, log in to both ends (`POST /_session`, then the `AuthSession` cookie), open both
//! databases, resume from the last checkpoint both ends agree on, then follow the source's
//! changes: `_revs_diff` on the target, `_bulk_get` from the source, `_bulk_docs` with
//! `new_edits:false` on the target, and a checkpoint (`_ensure_full_commit`, `_local` docs)
//! every `repl_checkpoint` when there was progress.
//!
//! A run ends when it is stopped or crashes; the crash reason is what `/_scheduler/*` shows,
//! worded as CouchDB words it (transcript 14). Nothing here ever logs a password.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::jobs::{RunHandle, Stats};
use super::repdoc::{Endpoint, Rep};
use crate::net::client::{self, ClientRequest};
use crate::spec::Delays;
use crate::util;

/// How long one `_changes` long-poll waits at most (so a stop is noticed soon).
const LONGPOLL: Duration = Duration::from_millis(200);

/// Everything a run needs.
pub struct Ctx {
    pub rep: Rep,
    pub rep_id: String,
    pub delays: Delays,
    pub jitter: Duration,
    /// The counters of the job's earlier runs (`None`: first run).
    pub carried: Option<Stats>,
    pub run: RunHandle,
    /// False once the node that runs the job stops.
    pub node_alive: Box<dyn Fn() -> bool + Send>,
}

/// Why a step did not complete.
enum Stop {
    /// Stopped on purpose (doc deleted, node stopping): not a crash.
    Asked,
    Crash(String),
    /// `method` to `url` never got an answer (refused through every retry).
    Unreachable(String, String),
}

/// Runs until stopped or crashed; a crash is left in the run's progress.
pub fn run(ctx: Ctx) {
    let reason = match replicate(&ctx) {
        Err(Stop::Crash(r)) => r,
        Err(Stop::Unreachable(method, url)) => conn_failed(&method, &url, 4),
        Ok(()) | Err(Stop::Asked) => return,
    };
    lock(&ctx.run.progress).crash = Some(reason);
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ctx {
    fn alive(&self) -> bool {
        !self.run.stop.load(Ordering::SeqCst) && (self.node_alive)()
    }

    fn pause(&self, d: Duration) -> Result<(), Stop> {
        if util::sleep_while(d, || self.alive()) {
            Ok(())
        } else {
            Err(Stop::Asked)
        }
    }

    fn report(&self, stats: &Stats) {
        lock(&self.run.progress).stats = Some(stats.clone());
    }

    /// The `_local` doc both ends keep the checkpoint in.
    fn checkpoint_doc(&self) -> String {
        let base = self.rep_id.split('+').next().unwrap_or("");
        format!("_local/{base}")
    }
}

/// What a one-shot run did: the checkpoint it wrote (or found, when there was nothing new).
pub struct OneShot {
    pub checkpoint: Value,
    pub no_changes: bool,
}

/// A one-shot replication run to its end on the calling thread (`POST /_replicate`): `Err` is
/// the crash reason.
pub fn run_once(ctx: Ctx) -> Result<OneShot, String> {
    let outcome = (|| {
        ctx.pause(ctx.jitter)?;
        let (source, target, since, stats) = open_both(&ctx)?;
        one_shot(&ctx, &source, &target, since, stats)
    })();
    match outcome {
        Ok(o) => Ok(o),
        Err(Stop::Crash(r)) => Err(r),
        Err(Stop::Unreachable(method, url)) => Err(conn_failed(&method, &url, 4)),
        Err(Stop::Asked) => Err("stopped".into()),
    }
}

fn open_both(ctx: &Ctx) -> Result<(Peer, Peer, String, Stats), Stop> {
    let stats = ctx.carried.clone().unwrap_or_default();
    let source = Peer::open(ctx, &ctx.rep.source, false)?;
    let target = Peer::open(ctx, &ctx.rep.target, ctx.rep.create_target)?;
    let since = resume_from(ctx, &source, &target);
    Ok((source, target, since, stats))
}

/// A one-shot run: every change since the checkpoint, then a checkpoint with this session in
/// its history, then done (`completed`). Nothing new: nothing written, the old checkpoint.
fn one_shot(
    ctx: &Ctx,
    source: &Peer,
    target: &Peer,
    since: String,
    mut stats: Stats,
) -> Result<OneShot, Stop> {
    let started = util::unix_now();
    let path = format!("_changes?style=all_docs&since={since}");
    let changes = source.call(ctx, "GET", &path, None, failed("changes_req_failed"))?;
    let last_seq = changes["last_seq"].as_str().unwrap_or(&since).to_string();
    let rows = changes["results"].as_array().cloned().unwrap_or_default();
    let doc = ctx.checkpoint_doc();
    let old = source
        .call(ctx, "GET", &doc, None, failed("checkpoint"))
        .unwrap_or(Value::Null);
    if rows.is_empty() && old.is_object() {
        lock(&ctx.run.progress).completed = true;
        return Ok(OneShot {
            checkpoint: old,
            no_changes: true,
        });
    }
    let mut session = Stats::default();
    copy_missing(ctx, source, target, &rows, &mut session)?;
    stats.revisions_checked += session.revisions_checked;
    stats.missing_revisions_found += session.missing_revisions_found;
    stats.docs_read += session.docs_read;
    stats.docs_written += session.docs_written;
    stats.source_seq = last_seq.clone();
    stats.through_seq = last_seq.clone();
    ctx.report(&stats);
    let session_id = util::sha256_hex(&[
        last_seq.as_bytes(),
        ctx.rep_id.as_bytes(),
        util::unix_now().as_nanos().to_string().as_bytes(),
    ])[..32]
        .to_string();
    let start_seq = if since == "0" { json!(0) } else { json!(since) };
    let mut history = vec![json!({
        "session_id": session_id,
        "start_time": util::http_date(started),
        "end_time": util::http_date(util::unix_now()),
        "start_last_seq": start_seq,
        "end_last_seq": last_seq,
        "recorded_seq": last_seq,
        "missing_checked": session.revisions_checked,
        "missing_found": session.missing_revisions_found,
        "docs_read": session.docs_read,
        "docs_written": session.docs_written,
        "doc_write_failures": 0,
        "bulk_get_docs": session.docs_read - session.deleted_read,
        "bulk_get_attempts": session.docs_read - session.deleted_read,
    })];
    history.extend(old["history"].as_array().cloned().unwrap_or_default());
    history.truncate(50);
    let body = json!({
        "session_id": session_id,
        "source_last_seq": last_seq,
        "replication_id_version": 4,
        "history": history,
    });
    write_checkpoint(ctx, source, target, &body)?;
    stats.checkpointed_source_seq = last_seq;
    // The final checkpoint is shown only with `completed`: CouchDB's scheduler showed the run
    // `running` with checkpoint "0" to its end, then nothing (`null`), then the doc completed
    // (transcript 17) — never a running job with its last checkpoint.
    let mut p = lock(&ctx.run.progress);
    p.stats = Some(stats);
    p.completed = true;
    drop(p);
    Ok(OneShot {
        checkpoint: body,
        no_changes: false,
    })
}

fn replicate(ctx: &Ctx) -> Result<(), Stop> {
    ctx.pause(ctx.jitter)?;
    let (source, target, mut since, mut stats) = open_both(ctx)?;
    if !ctx.rep.continuous {
        return one_shot(ctx, &source, &target, since, stats).map(|_| ());
    }
    let mut committed = since.clone();
    let mut next_checkpoint = Instant::now() + ctx.delays.repl_checkpoint;
    loop {
        let wait = next_checkpoint
            .saturating_duration_since(Instant::now())
            .min(LONGPOLL);
        let path = format!(
            "_changes?feed=longpoll&style=all_docs&since={since}&timeout={}",
            wait.as_millis()
        );
        let changes = source.call(ctx, "GET", &path, None, failed("changes_req_failed"))?;
        let last_seq = changes["last_seq"].as_str().unwrap_or(&since).to_string();
        let rows = changes["results"].as_array().cloned().unwrap_or_default();
        stats.source_seq = last_seq.clone();
        if !rows.is_empty() {
            copy_missing(ctx, &source, &target, &rows, &mut stats)?;
        }
        since = last_seq;
        stats.through_seq = since.clone();
        stats.changes_pending = None;
        ctx.report(&stats);
        if Instant::now() >= next_checkpoint {
            if since != committed {
                checkpoint(ctx, &source, &target, &since)?;
                committed = since.clone();
                stats.checkpointed_source_seq = since.clone();
                ctx.report(&stats);
            }
            next_checkpoint = Instant::now() + ctx.delays.repl_checkpoint;
        }
        if !ctx.alive() {
            return Err(Stop::Asked);
        }
    }
}

/// One batch of changes: ask the target what it lacks, fetch that from the source, write it.
fn copy_missing(
    ctx: &Ctx,
    source: &Peer,
    target: &Peer,
    rows: &[Value],
    stats: &mut Stats,
) -> Result<(), Stop> {
    let mut revs = serde_json::Map::new();
    for r in rows {
        let (Some(id), Some(changes)) = (r["id"].as_str(), r["changes"].as_array()) else {
            continue;
        };
        let list: Vec<Value> = changes.iter().map(|c| c["rev"].clone()).collect();
        stats.revisions_checked += list.len() as u64;
        revs.insert(id.to_string(), Value::Array(list));
    }
    let diff = target.call(
        ctx,
        "POST",
        "_revs_diff",
        Some(Value::Object(revs)),
        failed("revs_diff_failed"),
    )?;
    let mut wanted = Vec::new();
    for (id, d) in diff.as_object().into_iter().flatten() {
        for rev in d["missing"].as_array().into_iter().flatten() {
            wanted.push(json!({"id": id, "rev": rev}));
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    stats.missing_revisions_found += wanted.len() as u64;
    ctx.pause(ctx.delays.repl_latency)?;
    let got = source.call(
        ctx,
        "POST",
        "_bulk_get?revs=true&latest=true",
        Some(json!({ "docs": wanted })),
        failed("bulk_get_failed"),
    )?;
    let docs: Vec<Value> = got["results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["docs"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d.get("ok").cloned())
        .collect();
    stats.docs_read += docs.len() as u64;
    stats.deleted_read += docs.iter().filter(|d| d["_deleted"] == json!(true)).count() as u64;
    let n = docs.len() as u64;
    target.call(
        ctx,
        "POST",
        "_bulk_docs",
        Some(json!({"new_edits": false, "docs": docs})),
        failed("bulk_docs_failed"),
    )?;
    stats.docs_written += n;
    Ok(())
}

/// Where to start: the seq both ends' checkpoint docs agree on, else the beginning.
fn resume_from(ctx: &Ctx, source: &Peer, target: &Peer) -> String {
    let doc = ctx.checkpoint_doc();
    let read = |p: &Peer| -> Option<String> {
        let v = p.call(ctx, "GET", &doc, None, failed("checkpoint")).ok()?;
        v["source_last_seq"].as_str().map(str::to_string)
    };
    match (read(source), read(target)) {
        (Some(a), Some(b)) if a == b => a,
        _ => "0".to_string(),
    }
}

fn checkpoint(ctx: &Ctx, source: &Peer, target: &Peer, seq: &str) -> Result<(), Stop> {
    let commit_failure =
        |term: String| format!("Failure on target commit: {{'EXIT',\n    {term}}}");
    target
        .call(
            ctx,
            "POST",
            "_ensure_full_commit",
            Some(json!({})),
            |code, body| commit_failure(format!("{{{code},{}}}", ejson_term(body))),
        )
        .map_err(|e| match e {
            Stop::Unreachable(m, url) => Stop::Crash(commit_failure(conn_failed(&m, &url, 8))),
            other => other,
        })?;
    let body = json!({
        "session_id": util::sha256_hex(&[seq.as_bytes(), ctx.rep_id.as_bytes()])[..32],
        "source_last_seq": seq,
        "replication_id_version": 4,
    });
    write_checkpoint(ctx, source, target, &body)
}

/// The `_local` checkpoint doc, the same on both ends.
fn write_checkpoint(ctx: &Ctx, source: &Peer, target: &Peer, body: &Value) -> Result<(), Stop> {
    let doc = ctx.checkpoint_doc();
    for p in [source, target] {
        let cur = p.call(ctx, "GET", &doc, None, failed("checkpoint")).ok();
        let mut b = body.clone();
        if let Some(rev) = cur.as_ref().and_then(|c| c["_rev"].as_str()) {
            b["_rev"] = json!(rev);
        }
        p.call(
            ctx,
            "PUT",
            &doc,
            Some(b),
            failed("checkpoint_commit_failure"),
        )?;
    }
    Ok(())
}

/// How a refused request reads: `{<what>,<status>,<body as Erlang terms>}`.
fn failed(what: &'static str) -> impl Fn(u16, &Value) -> String {
    move |code, body| format!("{{{what},{code},\n                  {}}}", ejson_term(body))
}

/// An error body as Erlang prints it (`{[{<<"error">>,<<"unauthorized">>},…]}`), wrapped the
/// way transcript 14 shows it.
fn ejson_term(body: &Value) -> String {
    let bin = |s: &str| format!("<<\"{s}\">>");
    let error = body["error"].as_str().unwrap_or("unknown_error");
    let reason = body["reason"].as_str().unwrap_or("");
    format!(
        "{{[{{{},{}}},\n                    {{{},\n                     {}}}]}}",
        bin("error"),
        bin(error),
        bin("reason"),
        bin(reason)
    )
}

/// A request that never got an answer (the endpoint refused connections through every
/// retry), printed as Erlang does at `indent`.
fn conn_failed(method: &str, url: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!(
        "{{http_request_failed,\"{method}\",\n{pad}\"{url}\",\n{pad}{{error,{{error,{{conn_failed,{{error,econnrefused}}}}}}}}}}"
    )
}

/// One end, logged in.
struct Peer {
    ep: Endpoint,
    cookie: Option<String>,
}

impl Peer {
    /// Logs in, then opens the db: a missing db is `db_not_found` (or created when asked).
    fn open(ctx: &Ctx, ep: &Endpoint, create: bool) -> Result<Peer, Stop> {
        let mut peer = Peer {
            ep: ep.clone(),
            cookie: None,
        };
        peer.cookie = peer.session(ctx)?;
        let url = ep.shown().to_string();
        let opened = peer.send(ctx, "GET", "", None)?;
        match opened.0 {
            200 => Ok(peer),
            404 if create => match peer.send(ctx, "PUT", "", None)?.0 {
                201 | 202 | 412 => Ok(peer),
                _ => Err(Stop::Crash(format!(
                    "unauthorized: unauthorized to access or create database {url}"
                ))),
            },
            404 => Err(Stop::Crash(format!("db_not_found: could not open {url}"))),
            401 | 403 => Err(Stop::Crash(format!(
                "unauthorized: unauthorized to access or create database {url}"
            ))),
            code => Err(Stop::Crash(format!(
                "db_not_found: could not open {url} ({code})"
            ))),
        }
    }

    /// `POST /_session` with the endpoint's credentials: the cookie, if any.
    fn session(&self, ctx: &Ctx) -> Result<Option<String>, Stop> {
        let Some((user, password)) = &self.ep.creds else {
            return Ok(None);
        };
        let (host, port, _) = self.ep.parts().unwrap_or_default();
        let shown = format!("http://{host}:{port}/_session");
        let body = json!({"name": user, "password": password});
        let resp = self.exchange(ctx, "POST", "/_session", &shown, Some(body), None)?;
        Ok(resp.headers.iter().find_map(|(k, v)| {
            if !k.eq_ignore_ascii_case("set-cookie") {
                return None;
            }
            let pair = v.split(';').next()?;
            pair.strip_prefix("AuthSession=")
                .filter(|c| !c.is_empty())
                .map(|c| format!("AuthSession={c}"))
        }))
    }

    /// A request under the db URL; an answer that is not 2xx becomes the crash `reason`.
    fn call(
        &self,
        ctx: &Ctx,
        method: &str,
        sub: &str,
        body: Option<Value>,
        reason: impl Fn(u16, &Value) -> String,
    ) -> Result<Value, Stop> {
        let (code, v) = self.send(ctx, method, sub, body)?;
        if (200..300).contains(&code) {
            Ok(v)
        } else {
            Err(Stop::Crash(reason(code, &v)))
        }
    }

    fn send(
        &self,
        ctx: &Ctx,
        method: &str,
        sub: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), Stop> {
        let (_, _, path) = self.ep.parts().unwrap_or_default();
        let shown = format!("{}{sub}", self.ep.shown());
        let shown = shown.split('?').next().unwrap_or("");
        let path = format!("{path}{sub}");
        let r = self.exchange(ctx, method, &path, shown, body, self.cookie.clone())?;
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        Ok((r.status, v))
    }

    /// Sends with the replicator's retries: a refused connection is tried again after
    /// 1, 2, 4, 8 and 16 units of `repl_retries / 31`, then the request fails (named by
    /// `shown`, the URL without credentials).
    fn exchange(
        &self,
        ctx: &Ctx,
        method: &str,
        path: &str,
        shown: &str,
        body: Option<Value>,
        cookie: Option<String>,
    ) -> Result<client::ClientResponse, Stop> {
        let (host, port, _) = self.ep.parts().unwrap_or_default();
        let unit = ctx.delays.repl_retries / 31;
        let mut req = ClientRequest::new(method, path);
        req.host = format!("{host}:{port}");
        req.timeout = Duration::from_secs(30);
        if let Some(b) = &body {
            req = req.json(b);
        }
        req.headers
            .push(("User-Agent".into(), client::REPLICATOR_AGENT.into()));
        if let Some(c) = cookie {
            req.headers.push(("Cookie".into(), c));
        }
        for attempt in 0..=5u32 {
            if !ctx.alive() {
                return Err(Stop::Asked);
            }
            let addr: std::io::Result<SocketAddr> = client::resolve(&host, port);
            if let Ok(r) = addr.and_then(|a| client::send(a, &req)) {
                return Ok(r);
            }
            if attempt < 5 {
                ctx.pause(unit * (1 << attempt))?;
            }
        }
        Err(Stop::Unreachable(method.to_string(), shown.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_recorded() {
        let body =
            json!({"error": "unauthorized", "reason": "You are not authorized to access this db."});
        assert_eq!(
            failed("revs_diff_failed")(401, &body),
            "{revs_diff_failed,401,\n                  {[{<<\"error\">>,<<\"unauthorized\">>},\n                    {<<\"reason\">>,\n                     <<\"You are not authorized to access this db.\">>}]}}"
        );
        let c = conn_failed(
            "POST",
            "http://127.0.0.1:55984/app_backup/_ensure_full_commit",
            8,
        );
        assert_eq!(
            format!("Failure on target commit: {{'EXIT',\n    {c}}}"),
            "Failure on target commit: {'EXIT',\n    {http_request_failed,\"POST\",\n        \"http://127.0.0.1:55984/app_backup/_ensure_full_commit\",\n        {error,{error,{conn_failed,{error,econnrefused}}}}}}"
        );
    }
}

//! The public knobs: timings (`Delays`), injected faults (`Fault`), one node's start-up
//! description (`NodeSpec`) and the request log entry (`Request`).

use std::time::Duration;

/// How long things take. `Default` is what the transcripts of a real CouchDB 3.4.2 show;
/// [`Delays::fast`] keeps every behaviour but shrinks the waits for tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Delays {
    /// The first successful authentication per node (and per admin hash) costs this much
    /// (PBKDF2, 600 000 iterations); later ones are cached.
    pub first_auth: Duration,
    /// How `first_auth` is paid: `false` sleeps (cheap for tests), `true` burns that much of
    /// the answering thread's CPU time hashing, as PBKDF2 does — so N nodes hashing at once
    /// on fewer cores each take longer (for benchmarks).
    pub first_auth_cpu: bool,
    /// The first write to a node's `_nodes` since it was created (trap 22) takes this long;
    /// any other write to that `_nodes` meanwhile answers 500 `badmatch`/`file_exists`.
    pub nodes_create: Duration,
    /// Setting up one Erlang distribution connection.
    pub connect: Duration,
    /// How long a distribution handshake may take before either side gives up (Erlang's
    /// `net_setuptime`, 7 s): a TLS node calling a plain one waits this long for an answer.
    pub dist_setup: Duration,
    /// After a node gets its first connection, the `_nodes`/`_dbs` copy pushed to it lands
    /// after a delay in this range...
    pub nodes_copy: (Duration, Duration),
    /// ...except one time in `slow_copy_one_in`, when it takes `slow_copy`.
    pub slow_copy: Duration,
    pub slow_copy_one_in: u32,
    /// `finish_cluster` creating `_users` and `_replicator` (range).
    pub finish_create: (Duration, Duration),
    /// `_users` gets its `_design/_auth` doc (doc_count 0 → 1) this long after creation.
    pub auth_ddoc: Duration,
    /// `finish_cluster` waits this long for every `_nodes` member to answer a ping.
    pub finish_wait: Duration,
    /// How often `finish_cluster` re-pings while it waits.
    pub finish_poll: Duration,
    /// How long an account stays locked after `lockout_threshold` failures.
    pub lockout: Duration,
    pub lockout_threshold: u32,
    /// `_nodes` members that never connected are retried on this timer (±25 %).
    pub retry_timer: Duration,
    /// Members that were connected during this run and dropped are retried on this timer
    /// (a restarted or wiped member is found again without waiting `retry_timer`).
    pub lost_retry: Duration,
    /// From launch to listening (binary mode and `Node::start`).
    pub boot: Duration,
    /// The background distribution ticker's period.
    pub tick: Duration,
    /// One hop of `_dbs` round the ring (each node pushes to the next connected member).
    pub ring_hop: (Duration, Duration),
    /// One internal-replication push (`_sync_shards` fills a new copy in tens of ms).
    pub sync_push: (Duration, Duration),
    /// A write into a shard copy pushes it to the other copies this long after
    /// (`[mem3] sync_delay`).
    pub sync_delay: Duration,
    /// A read or write of a doc whose range has no copy in the map hangs this long, then 500.
    pub no_copy_timeout: Duration,
    /// A member that reconnects (restarted, re-created) gets what it missed: its peers push the
    /// copies they share with it this long after the link is up...
    pub catch_up: Duration,
    /// ...and each document it missed takes this much longer to arrive (transcript 18: the
    /// writes made while a node was away were in its copies within 0.9 s of its first answer,
    /// 30 of them; it grows with what was missed). `internal_replication_jobs` never shows it.
    pub catch_up_per_doc: Duration,
    /// The node removed by a `_nodes` DELETE hears of it one time in this many (0: never,
    /// 1: always); otherwise it keeps its own `_nodes` (trap 15).
    pub removed_hears_one_in: u32,
    /// `enable_single_node` answers after this long (it also re-hashes the admin: trap 19).
    pub single_node_setup: Duration,
    /// The replicator acts on new `_replicator` docs only once no node has connected or gone
    /// for this long (`[replicator] cluster_start_period`), during the first
    /// `repl_quiet_period` after boot; until then their state is `null`...
    pub repl_start_period: Duration,
    /// ...and for this long afterwards (`cluster_quiet_period`).
    pub repl_quiet_period: Duration,
    /// A doc's state stays `initializing` this long before its job is added (`running`).
    pub repl_job_add: Duration,
    /// A second doc for a replication that already runs turns `failed` after this long.
    pub repl_duplicate: Duration,
    /// A completed one-shot doc shows `completed` in `/_scheduler/docs` this long, then `null`
    /// (transcript 15: `completed`, then `null` 4 ms later, once its write-back was read).
    pub repl_completed: Duration,
    /// Each start of a job sleeps a random time in this range before it opens source and
    /// target (`startup_jitter`); its state is `running` meanwhile (trap 17).
    pub repl_jitter: (Duration, Duration),
    /// Missing revisions reach the target this long after `_revs_diff` found them.
    pub repl_latency: Duration,
    /// A running job checkpoints this often (only when it made progress); a failed commit
    /// crashes it (trap 17: a dead target shows only at the checkpoint).
    pub repl_checkpoint: Duration,
    /// A request to an endpoint that refuses connections fails after the replicator's retries
    /// (5 retries waiting 1, 2, 4, 8, 16 × `repl_retries / 31`).
    pub repl_retries: Duration,
    /// The scheduler's tick (`[replicator] interval`): crashed jobs restart only on a tick...
    pub repl_interval: Duration,
    /// ...and only once `repl_backoff` × 2^(consecutive crashes − 1) has passed (trap 18).
    pub repl_backoff: Duration,
    /// A crash later than this after the event before it starts a new streak
    /// (`health_threshold`).
    pub repl_health: Duration,
}

impl Default for Delays {
    fn default() -> Self {
        Delays {
            first_auth: Duration::from_millis(175),
            first_auth_cpu: false,
            nodes_create: Duration::from_millis(5),
            connect: Duration::from_millis(20),
            dist_setup: Duration::from_secs(7),
            nodes_copy: (Duration::from_millis(40), Duration::from_millis(100)),
            slow_copy: Duration::from_millis(1000),
            slow_copy_one_in: 5,
            finish_create: (Duration::from_millis(80), Duration::from_millis(100)),
            auth_ddoc: Duration::from_millis(300),
            finish_wait: Duration::from_secs(5),
            finish_poll: Duration::from_millis(100),
            lockout: Duration::from_secs(300),
            lockout_threshold: 5,
            retry_timer: Duration::from_secs(37),
            lost_retry: Duration::from_secs(2),
            boot: Duration::from_millis(1100),
            tick: Duration::from_millis(5),
            ring_hop: (Duration::from_millis(5), Duration::from_millis(25)),
            sync_push: (Duration::from_millis(5), Duration::from_millis(50)),
            sync_delay: Duration::from_secs(5),
            no_copy_timeout: Duration::from_secs(60),
            catch_up: Duration::from_millis(500),
            catch_up_per_doc: Duration::from_millis(5),
            removed_hears_one_in: 3,
            single_node_setup: Duration::from_millis(1150),
            repl_start_period: Duration::from_secs(5),
            repl_quiet_period: Duration::from_secs(60),
            repl_job_add: Duration::from_millis(100),
            repl_duplicate: Duration::from_millis(420),
            repl_completed: Duration::from_millis(4),
            repl_jitter: (Duration::ZERO, Duration::from_secs(5)),
            repl_latency: Duration::from_millis(135),
            repl_checkpoint: Duration::from_secs(30),
            repl_retries: Duration::from_millis(7750),
            repl_interval: Duration::from_secs(60),
            repl_backoff: Duration::from_secs(30),
            repl_health: Duration::from_secs(120),
        }
    }
}

impl Delays {
    /// A few milliseconds everywhere. Behaviours stay (the slow copy still happens one time
    /// in five, only shorter; the lockout still lasts 5 minutes; a removed node still hears
    /// of its removal one time in three). `finish_wait` is 500 ms, `sync_delay` 100 ms,
    /// `no_copy_timeout` 200 ms: set the fields to taste.
    pub fn fast() -> Delays {
        Delays {
            first_auth: Duration::from_millis(2),
            first_auth_cpu: false,
            nodes_create: Duration::from_millis(5),
            connect: Duration::from_millis(1),
            dist_setup: Duration::from_millis(300),
            nodes_copy: (Duration::from_millis(2), Duration::from_millis(6)),
            slow_copy: Duration::from_millis(40),
            slow_copy_one_in: 5,
            finish_create: (Duration::from_millis(2), Duration::from_millis(4)),
            auth_ddoc: Duration::from_millis(30),
            finish_wait: Duration::from_millis(500),
            finish_poll: Duration::from_millis(10),
            lockout: Duration::from_secs(300),
            lockout_threshold: 5,
            retry_timer: Duration::from_millis(60),
            lost_retry: Duration::from_millis(20),
            boot: Duration::from_millis(2),
            tick: Duration::from_millis(2),
            ring_hop: (Duration::from_millis(1), Duration::from_millis(3)),
            sync_push: (Duration::from_millis(1), Duration::from_millis(5)),
            sync_delay: Duration::from_millis(100),
            no_copy_timeout: Duration::from_millis(200),
            catch_up: Duration::from_millis(40),
            catch_up_per_doc: Duration::from_micros(200),
            removed_hears_one_in: 3,
            // replication: CouchDB's timings / 200, so events keep their order
            single_node_setup: Duration::from_millis(6),
            repl_start_period: Duration::from_millis(25),
            repl_quiet_period: Duration::from_millis(300),
            repl_job_add: Duration::from_millis(1),
            repl_duplicate: Duration::from_millis(2),
            repl_completed: Duration::from_millis(4),
            repl_jitter: (Duration::ZERO, Duration::from_millis(25)),
            repl_latency: Duration::from_millis(1),
            repl_checkpoint: Duration::from_millis(150),
            repl_retries: Duration::from_millis(40),
            repl_interval: Duration::from_millis(300),
            repl_backoff: Duration::from_millis(150),
            repl_health: Duration::from_millis(600),
        }
    }
}

/// A misbehaviour injected into one node (see `Node::inject`).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// `GET /_up` answers 404 `{"status":"<mode>"}` ("maintenance_mode" or "nolb").
    Maintenance(String),
    /// Every response is delayed by this much.
    Slow(Duration),
    /// The `nth` (1-based) request matching `method` and `path` gets `status` with a
    /// CouchDB-style error body. `path` matches with or without the query string.
    FailNth {
        method: String,
        path: String,
        nth: usize,
        status: u16,
    },
    /// 200 with a body that is not JSON.
    MalformedJson { path: String },
    /// 200 with a giant JSON-ish body of about `bytes` bytes.
    HugeBody { path: String, bytes: usize },
}

/// The CouchDB release a node answers as, where the recordings of the two differ (transcript
/// `upgrade/18`): `GET /` (`version`, `git_sha`), the `Server` header, `/_up`'s key order,
/// `/_node/_local/_versions`, and `/_node/<other>/_versions` (3.5.2 asks the other node by an
/// RPC that 3.4.2 lacks: 500 `invalid_ejson`; 3.4.2 ignores the name and answers for itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    #[default]
    V3_4_2,
    V3_5_2,
}

impl Version {
    pub const ALL: [Version; 2] = [Version::V3_4_2, Version::V3_5_2];

    /// `"3.4.2"` → `Version::V3_4_2`; `None` for a release the simulator does not know.
    pub fn parse(text: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == text.trim())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V3_4_2 => "3.4.2",
            Version::V3_5_2 => "3.5.2",
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request a node answered (internal distribution traffic excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path including the query string, as sent.
    pub path: String,
    /// The basic-auth user sent, if any.
    pub user: Option<String>,
    pub status: u16,
}

/// How one node starts. Built by `ClusterBuilder`/`Cluster::add_node`, adjusted by closures.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub(crate) name: String,
    pub(crate) cookie: String,
    pub(crate) admin: Option<(String, String)>,
    pub(crate) stopped: bool,
    pub(crate) bind_address: String,
    pub(crate) secret: Option<String>,
    pub(crate) uuid: Option<String>,
    pub(crate) erl_flags: Option<String>,
    pub(crate) version: Version,
}

impl NodeSpec {
    pub(crate) fn new(name: &str, cookie: &str, admin: Option<(String, String)>) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            cookie: cookie.to_string(),
            admin,
            stopped: false,
            bind_address: "any".to_string(),
            secret: None,
            uuid: None,
            erl_flags: None,
            version: Version::default(),
        }
    }

    /// The node's Erlang name (`NODENAME`), e.g. `couchdb@couchdb-1.cluster`.
    pub fn name(mut self, n: &str) -> Self {
        self.name = n.to_string();
        self
    }

    /// Started without `NODENAME`: the node is `nonode@nohost` and never connects.
    pub fn nonode(mut self) -> Self {
        self.name = crate::net::epmd::NONODE.to_string();
        self
    }

    pub fn cookie(mut self, c: &str) -> Self {
        self.cookie = c.to_string();
        self
    }

    pub fn admin(mut self, user: &str, password: &str) -> Self {
        self.admin = Some((user.to_string(), password.to_string()));
        self
    }

    /// No admin at all (`/_cluster_setup` then says `cluster_disabled`).
    pub fn no_admin(mut self) -> Self {
        self.admin = None;
        self
    }

    /// Not started by `Cluster::start`; its port refuses connections until `Node::start`.
    pub fn stopped(mut self) -> Self {
        self.stopped = true;
        self
    }

    /// `[chttpd] bind_address`: "any" (default, like the Docker image) or "127.0.0.1" (like
    /// the transcripts). Only the config value: the simulated node listens on loopback.
    pub fn bind_address(mut self, a: &str) -> Self {
        self.bind_address = a.to_string();
        self
    }

    /// `[chttpd_auth] secret` (`COUCHDB_SECRET`).
    pub fn secret(mut self, s: &str) -> Self {
        self.secret = Some(s.to_string());
        self
    }

    /// `[couchdb] uuid` (random by default, one per node).
    pub fn uuid(mut self, u: &str) -> Self {
        self.uuid = Some(u.to_string());
        self
    }

    /// `ERL_FLAGS`, read for the distribution only: `-proto_dist couch -ssl_dist_optfile FILE`
    /// turns on TLS (see the README's "Distribution"); the file is read at `Cluster::start`.
    pub fn erl_flags(mut self, flags: &str) -> Self {
        self.erl_flags = Some(flags.to_string());
        self
    }

    /// The release it answers as (3.4.2 by default); `Node::upgrade` changes it across a restart.
    pub fn version(mut self, v: Version) -> Self {
        self.version = v;
        self
    }
}

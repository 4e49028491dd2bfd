//! The replication layer: CouchDB's replicator as one node runs it — `_replicator` documents
//! as CouchDB reads them (`repdoc`), what the doc processor does with the docs a node owns
//! (`docproc`), the scheduler's jobs and their history (`jobs`, `scheduler`), one run of a job
//! over HTTP (`worker`), and the node's replicator driving them from its ticker
//! (`replicator`). It uses `cluster`, `node`, `net`, `spec` and `util`: it reads and marks its
//! documents through the cluster and keeps its state in the node's slot for it. The HTTP API
//! above it serves `/_scheduler/*` and the database endpoints a replication calls.

pub(crate) mod jobs;
pub(crate) mod repdoc;
pub(crate) mod replicator;

mod docproc;
mod scheduler;
mod worker;

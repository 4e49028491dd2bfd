//! The network layer: HTTP/1.1 messages as a node reads and writes them (`http`), the blocking
//! client nodes and the `curl` mode call out with (`client`), and Erlang's port mapper and node
//! names (`epmd`: where `name@host` listens, which names can take part, and an epmd that says
//! so), the distribution's transport (`tls`: plain TCP or TLS as the Erlang flags say, with the
//! `-ssl_dist_optfile` read by `erl_terms`). It uses only `util`; every layer above talks over
//! the network through it.

pub(crate) mod client;
pub(crate) mod epmd;
pub(crate) mod erl_terms;
pub(crate) mod http;
pub(crate) mod tls;

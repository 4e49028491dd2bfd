//! The HTTP API of a node: the layer above everything it serves.

pub(crate) mod scheduler;

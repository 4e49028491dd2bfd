//! Binary mode (`couchsim` standing in for `couchdb:3.4.2` in docker-compose) and the `curl`
//! multi-call mode. Kept in the library so it is testable; `main.rs` only dispatches.

/// Entry point used by `main.rs`. Returns the process exit code.
pub fn main_with_args(_args: Vec<String>) -> i32 {
    0
}

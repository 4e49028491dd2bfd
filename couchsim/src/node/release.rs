//! What a node says about the release it runs, as the two recorded releases say it
//! (`transcripts/upgrade/18`, and `01`/`07` for 3.4.2's `git_sha`): bytes in CouchDB's key order.

use crate::spec::Version;

/// `GET /`'s `git_sha`.
pub fn git_sha(v: Version) -> &'static str {
    match v {
        Version::V3_4_2 => "6e5ad2a5c",
        Version::V3_5_2 => "5b4d921",
    }
}

/// The `Server` header of every answer.
pub fn server_header(v: Version) -> &'static str {
    match v {
        Version::V3_4_2 => "CouchDB/3.4.2 (Erlang OTP/25)",
        Version::V3_5_2 => "CouchDB/3.5.2 (Erlang OTP/27)",
    }
}

/// `GET /_up` when the node is up: 3.5.2 sends the same two keys the other way round.
pub fn up_ok(v: Version) -> &'static str {
    match v {
        Version::V3_4_2 => r#"{"status":"ok","seeds":{}}"#,
        Version::V3_5_2 => r#"{"seeds":{},"status":"ok"}"#,
    }
}

/// `GET /_node/_local/_versions`: the JavaScript engine, Erlang and ICU of the official images
/// (SpiderMonkey 78, OTP 25, ICU 72 for 3.4.2; SpiderMonkey 128, OTP 27, ICU 76 for 3.5.2).
pub fn versions(v: Version) -> &'static str {
    match v {
        Version::V3_4_2 => concat!(
            r#"{"javascript_engine":{"version":"78","name":"spidermonkey"},"#,
            r#""erlang":{"version":"25.2.3","supported_hashes":["blake2s","blake2b","sha3_512","sha3_384","#,
            r#""sha3_256","sha3_224","sha512","sha384","sha256","sha224","sha","ripemd160","md5","md4"]},"#,
            r#""collation_driver":{"name":"libicu","library_version":"72.1","collator_version":"153.120","#,
            r#""collation_algorithm_version":"15"}}"#
        ),
        Version::V3_5_2 => concat!(
            r#"{"javascript_engine":{"version":"128","name":"spidermonkey"},"#,
            r#""collation_driver":{"library_version":"76.1","collator_version":"153.128","#,
            r#""collation_algorithm_version":"16","name":"libicu"},"#,
            r#""erlang":{"supported_hashes":["blake2s","blake2b","sm3","shake256","shake128","sha3_512","#,
            r#""sha3_384","sha3_256","sha3_224","sha512","sha384","sha256","sha224","sha","ripemd160","md5","#,
            r#""md4"],"version":"27.3.4.1"}}"#
        ),
    }
}

/// What 3.5.2 answers `GET /_node/<a 3.4.2 node>/_versions`: its RPC to
/// `chttpd_node:get_versions/0`, which 3.4.2 does not have.
pub const VERSIONS_OF_OLDER: &str = r#"{"error":"invalid_ejson","reason":"{badrpc,{'EXIT',{undef,[{chttpd_node,get_versions,[],[]}]}}}"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_is_json() {
        for v in Version::ALL {
            for text in [up_ok(v), versions(v)] {
                serde_json::from_str::<serde_json::Value>(text).expect(text);
            }
        }
        serde_json::from_str::<serde_json::Value>(VERSIONS_OF_OLDER).unwrap();
    }
}

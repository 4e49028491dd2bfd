//! `/_utils` (Fauxton), as the couchdb:3.4.2 image answers it and as a proxy in front sees it:
//! `/_utils/` a 200 HTML page without credentials, `/_utils` a 301 to `/_utils/` whose absolute
//! `Location` follows `X-Forwarded-Host`/`X-Forwarded-Proto` (Traefik terminating TLS sets
//! both), anything else below it a 404, other methods a 405.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use couchsim::{Cluster, Delays};

/// (status, headers as `name: value` lines with lower-case names, body) of one request.
fn get(addr: SocketAddr, method: &str, path: &str, extra: &str) -> (u16, Vec<String>, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .map(|l| match l.split_once(": ") {
            Some((k, v)) => format!("{}: {v}", k.to_ascii_lowercase()),
            None => l.to_string(),
        })
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find_map(|h| h.strip_prefix(&format!("{name}: ")))
}

#[test]
fn utils_serves_a_page_and_redirects_the_slashless_path_like_couchdb() {
    let c = Cluster::builder().nodes(1).delays(Delays::fast()).start();
    let a = c.node(0).addr();

    for path in ["/_utils/", "/_utils/index.html"] {
        let (status, headers, body) = get(a, "GET", path, "");
        assert_eq!(status, 200, "{path}: {headers:?}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/html"),
            "{path}"
        );
        assert!(
            body.contains("<title>Project Fauxton</title>"),
            "{path}: {body}"
        );
        assert!(
            header(&headers, "content-security-policy").is_some(),
            "{path}: {headers:?}"
        );
    }

    let (status, headers, _) = get(a, "GET", "/_utils", "");
    assert_eq!(status, 301);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("http://{a}/_utils/").as_str())
    );

    // Behind Traefik on https: the redirect keeps the client on the proxy's name and scheme.
    let forwarded = "X-Forwarded-Host: couchdb.example.test\r\nX-Forwarded-Proto: https\r\n";
    let (status, headers, _) = get(a, "GET", "/_utils", forwarded);
    assert_eq!(status, 301);
    assert_eq!(
        header(&headers, "location"),
        Some("https://couchdb.example.test/_utils/")
    );

    let (status, _, body) = get(a, "GET", "/_utils/no-such-file.js", "");
    assert_eq!(
        (status, body.trim()),
        (404, r#"{"error":"not_found","reason":"missing"}"#)
    );
    let (status, headers, _) = get(a, "POST", "/_utils/", "Content-Length: 0\r\n");
    assert_eq!((status, header(&headers, "allow")), (405, Some("GET,HEAD")));
}

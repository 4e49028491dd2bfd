//! A node's Erlang distribution as the tool can see it from outside, without a TLS library and
//! without the cookie: which port it listens on (epmd's `PORT_PLEASE2` on 4369), and whether
//! it speaks TLS there.
//!
//! The probe is one ClientHello, padded to exactly 5637 bytes. A TLS listener answers it with
//! a TLS record (its ServerHello, or an alert). A plain Erlang listener reads the first two
//! bytes as the length of a handshake message (0x1603 = 5635), reads that many, finds no `n`/`N`
//! tag and closes at once: nothing back. The hello offers TLS 1.2 only, so a server that takes
//! it shows its certificate in clear (whose issuer the tool compares between nodes) and whether
//! it asks the caller for one (`CertificateRequest`: peers verified). Nothing is written to the
//! node; its log may note a handshake that was not finished.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// What the probe found on a distribution port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tls(TlsSeen),
    /// Closed without a byte: a plain Erlang distribution.
    Plain,
    /// Could not tell: why.
    Unknown(String),
}

/// The server's side of the handshake, as far as TLS 1.2 shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSeen {
    /// The issuer of its certificate (DER, for comparing) and its common name (for people).
    pub issuer: Option<(Vec<u8>, String)>,
    /// It sent a `CertificateRequest`: it verifies the certificates of the nodes that call it.
    /// `None`: not seen (a TLS 1.3-only server answers the hello with an alert).
    pub asks_for_certificate: Option<bool>,
}

/// The distribution of the node named `name` on `host`: its port from epmd at `epmd_port`,
/// then the probe. `Err` says why nothing could be learnt.
pub fn probe_node(
    host: &str,
    epmd_port: u16,
    name: &str,
    timeout: Duration,
) -> Result<(u16, Transport), String> {
    let addr = resolve(host, epmd_port)?;
    let alive = name.split_once('@').map_or(name, |(a, _)| a);
    let port = port_please(addr, alive, timeout)?
        .ok_or_else(|| format!("epmd on {host}:{epmd_port} knows no node `{alive}`"))?;
    Ok((port, probe(SocketAddr::new(addr.ip(), port), timeout)))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .min_by_key(SocketAddr::is_ipv6)
        .ok_or_else(|| format!("{host} has no address"))
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("{addr} refuses connections"),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("{addr} does not answer (a firewall?)")
        }
        _ => format!("{addr}: {e}"),
    })?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    Ok(s)
}

/// `PORT_PLEASE2_REQ` (`z`): the port of the node whose name starts with `alive`; `None` when
/// epmd does not know it.
fn port_please(epmd: SocketAddr, alive: &str, timeout: Duration) -> Result<Option<u16>, String> {
    let mut s = connect(epmd, timeout).map_err(|e| format!("epmd: {e}"))?;
    let mut req = ((alive.len() + 1) as u16).to_be_bytes().to_vec();
    req.push(b'z');
    req.extend_from_slice(alive.as_bytes());
    s.write_all(&req)
        .map_err(|e| format!("epmd at {epmd}: {e}"))?;
    let mut head = [0u8; 2];
    s.read_exact(&mut head)
        .map_err(|e| format!("epmd at {epmd} did not answer: {e}"))?;
    match head {
        [b'w', 0] => {
            let mut port = [0u8; 2];
            s.read_exact(&mut port)
                .map_err(|e| format!("epmd at {epmd}: a short answer: {e}"))?;
            Ok(Some(u16::from_be_bytes(port)))
        }
        [b'w', _] => Ok(None),
        _ => Err(format!("{epmd} does not answer like epmd")),
    }
}

/// The padded ClientHello, then what came back.
pub fn probe(addr: SocketAddr, timeout: Duration) -> Transport {
    let mut s = match connect(addr, timeout) {
        Ok(s) => s,
        Err(e) => return Transport::Unknown(e),
    };
    if let Err(e) = s.write_all(&client_hello()) {
        return Transport::Unknown(format!("{addr}: {e}"));
    }
    let mut first = [0u8; 5];
    match read_some(&mut s, &mut first) {
        Err(why) => Transport::Unknown(format!("{addr}: {why}")),
        Ok(0) => Transport::Plain,
        Ok(n) if n == 5 && (0x14..=0x17).contains(&first[0]) && first[1] == 3 => {
            Transport::Tls(server_flight(&mut s, first))
        }
        Ok(_) => Transport::Unknown(format!(
            "{addr} answered something that is neither TLS nor Erlang's distribution"
        )),
    }
}

/// Reads up to `buf.len()` bytes; `Ok(0)` when the peer closed (or reset) at once.
fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> Result<usize, String> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if got == 0 && e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(0),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return match got {
                    0 => Err("no answer in time".into()),
                    n => Ok(n),
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(got)
}

/// The handshake messages of the server's first flight (records of type 22), until
/// ServerHelloDone, an alert, or 64 KiB.
fn server_flight(s: &mut TcpStream, first: [u8; 5]) -> TlsSeen {
    let mut seen = TlsSeen::default();
    if first[0] != 0x16 {
        return seen;
    }
    let mut messages = Vec::new();
    let mut header = first;
    loop {
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        let mut body = vec![0u8; len];
        if s.read_exact(&mut body).is_err() || header[0] != 0x16 {
            break;
        }
        messages.extend_from_slice(&body);
        let done = walk(&messages, &mut seen);
        if done || messages.len() > 64 * 1024 || s.read_exact(&mut header).is_err() {
            break;
        }
    }
    seen
}

/// Reads the whole handshake messages in `buf`; true once ServerHelloDone was among them.
fn walk(buf: &[u8], seen: &mut TlsSeen) -> bool {
    let mut rest = buf;
    while rest.len() >= 4 {
        let kind = rest[0];
        let len = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
        let Some(body) = rest.get(4..4 + len) else {
            return false;
        };
        match kind {
            // Certificate: a 3-byte list length, then each certificate with a 3-byte length.
            11 if body.len() > 6 => {
                let n = u32::from_be_bytes([0, body[3], body[4], body[5]]) as usize;
                if let Some(der) = body.get(6..6 + n) {
                    seen.issuer = issuer(der);
                }
            }
            13 => seen.asks_for_certificate = Some(true),
            14 => {
                seen.asks_for_certificate.get_or_insert(false);
                return true;
            }
            _ => {}
        }
        rest = &rest[4 + len..];
    }
    false
}

/// One DER element: (tag, contents, what follows).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let len = input
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + n)
    };
    let contents = input.get(start..start + len)?;
    Some((tag, contents, &input[start + len..]))
}

/// A certificate's issuer: its DER and its common name (or "unnamed").
fn issuer(cert: &[u8]) -> Option<(Vec<u8>, String)> {
    let (_, cert, _) = der(cert)?;
    let (_, tbs, _) = der(cert)?;
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature; then the issuer.
    let (tag, _, after) = der(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    let (_, _, rest) = der(rest)?;
    let (_, _, rest) = der(rest)?;
    let (_, name, after) = der(rest)?;
    let whole = rest[..rest.len() - after.len()].to_vec();
    Some((whole, common_name(name).unwrap_or_else(|| "unnamed".into())))
}

/// The CN (OID 2.5.4.3) of a Name: SEQUENCE OF SET OF SEQUENCE { OID, value }.
fn common_name(mut name: &[u8]) -> Option<String> {
    while let Some((_, set, rest)) = der(name) {
        let (_, pair, _) = der(set)?;
        let (_, oid, value) = der(pair)?;
        if oid == [0x55, 0x04, 0x03] {
            let (_, text, _) = der(value)?;
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        name = rest;
    }
    None
}

/// Total length of the probe: the 2-byte "length" a plain Erlang listener reads (0x1603) plus
/// that many bytes.
const PROBE_LEN: usize = 2 + 0x1603;

fn client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03]; // TLS 1.2
    body.extend_from_slice(&[0x5a; 32]); // random: nothing is negotiated for real
    body.push(0); // no session id
    let suites: [u16; 10] = [
        0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0x009c, 0x009d, 0x002f, 0x0035,
    ];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut ext = Vec::new();
    let mut add = |kind: u16, data: &[u8]| {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    add(0x000a, &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]); // groups: x25519, P-256, P-384
    add(0x000b, &[1, 0]); // EC point formats: uncompressed
    add(
        0x000d, // signature algorithms
        &[
            0, 16, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03, 0x08, 0x05, 0x05, 0x01, 0x08,
            0x06, 0x06, 0x01,
        ],
    );
    add(0xff01, &[0]); // renegotiation_info (secure_renegotiate)
                       // Padding (RFC 7685) up to the exact length.
    let used = 5 + 4 + body.len() + 2 + ext.len() + 4;
    let pad = PROBE_LEN - used;
    ext.extend_from_slice(&0x0015u16.to_be_bytes());
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.resize(ext.len() + pad, 0);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1]; // ClientHello
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_exactly_one_plain_erlang_message_long() {
        let hello = client_hello();
        assert_eq!(hello.len(), PROBE_LEN);
        assert_eq!(
            u16::from_be_bytes([hello[0], hello[1]]) as usize + 2,
            hello.len()
        );
        assert_eq!(
            u16::from_be_bytes([hello[3], hello[4]]) as usize + 5,
            hello.len()
        );
        // Its third byte, the tag a plain Erlang listener reads, is no handshake tag.
        assert!(!matches!(hello[2], b'n' | b'N'));
    }

    #[test]
    fn common_names_come_out_of_a_name() {
        // SEQUENCE { SET { SEQUENCE { OID 2.5.4.3, UTF8String "ca" } } }
        let name = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x02, b'c', b'a',
        ];
        assert_eq!(common_name(&name).as_deref(), Some("ca"));
        assert_eq!(common_name(&[0x31, 0x00]), None);
    }
}

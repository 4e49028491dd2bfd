//! Which transport the distribution stand-in runs, read the way CouchDB 3.4.2 reads it: from
//! the Erlang flags (`ERL_FLAGS` in the image). Plain TCP unless `-proto_dist couch` (CouchDB's
//! `couch_dist`: TLS to every node except those `-couch_dist no_tls PATTERN` names) or
//! `-proto_dist inet_tls` (OTP's: TLS to all), with the options of `-ssl_dist_optfile FILE`
//! (`server` and `client` proplists: `certfile`, `keyfile`, `cacertfile`, `verify`,
//! `fail_if_no_peer_cert`). Peers are verified against `cacertfile` where `verify_peer` says so;
//! a client also checks the server's certificate against the host part of the node name, as
//! OTP's `inet_tls_dist` does (its `server_name_indication`).
//!
//! A failed handshake is described the way OTP's ssl application logs it ("TLS server: … SERVER
//! ALERT: Fatal - Unknown CA"); the wording is modelled on OTP 25's, not recorded from a real
//! CouchDB. Nothing secret is ever in it (no key, no cookie).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme, StreamOwned,
};

use super::erl_terms::{self, Term};

/// The distribution's transport for one node.
#[derive(Clone, Default)]
pub struct Distribution {
    tls: Option<Arc<Tls>>,
    /// `-couch_dist no_tls` patterns (`true`: every node; a glob with `*` and `?`: those names).
    no_tls: Vec<String>,
}

struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tls.is_some() { "TLS" } else { "TCP" })
    }
}

/// A distribution connection, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The socket underneath (timeouts, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Server(s) => &s.sock,
            Stream::Client(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Server(s) => s.read(buf),
            Stream::Client(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Server(s) => s.write(buf),
            Stream::Client(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Server(s) => s.flush(),
            Stream::Client(s) => s.flush(),
        }
    }
}

impl Distribution {
    /// Plain TCP (no Erlang flags about the distribution).
    pub fn plain() -> Distribution {
        Distribution::default()
    }

    /// From the Erlang flags. `Err`: a message for the log; the node does not start (as an
    /// Erlang node whose distribution cannot start does not).
    pub fn from_erl_flags(flags: &str) -> Result<Distribution, String> {
        let words: Vec<String> = flags
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_string())
            .collect();
        let mut proto = None;
        let mut optfile = None;
        let mut no_tls = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let next = words.get(i + 1).cloned();
            match (words[i].as_str(), next) {
                ("-proto_dist", Some(p)) => {
                    proto = Some(p);
                    i += 1;
                }
                ("-ssl_dist_optfile", Some(f)) => {
                    optfile = Some(f);
                    i += 1;
                }
                ("-couch_dist", Some(k)) if k == "no_tls" => {
                    if let Some(p) = words.get(i + 2) {
                        no_tls.push(p.trim_matches('\\').trim_matches('"').to_string());
                    }
                    i += 2;
                }
                ("-ssl_dist_opt", _) => {
                    return Err(
                        "-ssl_dist_opt is not read by the simulator: put the options in an -ssl_dist_optfile"
                            .into(),
                    )
                }
                _ => {}
            }
            i += 1;
        }
        match proto.as_deref() {
            None | Some("inet_tcp") => Ok(Distribution::plain()),
            Some("couch") | Some("inet_tls") => {
                if proto.as_deref() == Some("inet_tls") {
                    no_tls.clear();
                }
                let file = optfile.ok_or(
                    "-proto_dist asks for TLS but no -ssl_dist_optfile names the certificates",
                )?;
                let tls = Tls::from_optfile(Path::new(&file))?;
                Ok(Distribution {
                    tls: Some(Arc::new(tls)),
                    no_tls,
                })
            }
            Some(other) => Err(format!(
                "-proto_dist {other} is not a distribution the simulator knows (inet_tcp, inet_tls, couch)"
            )),
        }
    }

    /// Whether connections to (or, for its own name, from) `name` use TLS.
    pub fn tls_for(&self, name: &str) -> bool {
        self.tls.is_some() && !self.no_tls.iter().any(|p| glob(p, name))
    }

    /// The server side of a connection accepted by the node named `own`.
    pub fn accept(&self, own: &str, tcp: TcpStream) -> Result<Stream, String> {
        match &self.tls {
            Some(tls) if self.tls_for(own) => {
                let conn = ServerConnection::new(tls.server.clone())
                    .map_err(|e| format!("TLS server: {e}"))?;
                let mut s = StreamOwned::new(conn, tcp);
                handshake(&mut s.conn, &mut s.sock, "server")?;
                Ok(Stream::Server(Box::new(s)))
            }
            _ => Ok(Stream::Plain(tcp)),
        }
    }

    /// The client side of a connection to the node named `peer`.
    pub fn connect(&self, peer: &str, tcp: TcpStream) -> Result<Stream, String> {
        match &self.tls {
            Some(tls) if self.tls_for(peer) => {
                let host = peer.split_once('@').map_or(peer, |(_, h)| h).to_string();
                let name = ServerName::try_from(host)
                    .map_err(|_| format!("TLS client: `{peer}` has no usable host name"))?;
                let conn = ClientConnection::new(tls.client.clone(), name)
                    .map_err(|e| format!("TLS client: {e}"))?;
                let mut s = StreamOwned::new(conn, tcp);
                handshake(&mut s.conn, &mut s.sock, "client")?;
                Ok(Stream::Client(Box::new(s)))
            }
            _ => Ok(Stream::Plain(tcp)),
        }
    }
}

/// Drives a handshake to its end; `Err` says why it failed as OTP's ssl logs it.
fn handshake<C, D>(conn: &mut C, sock: &mut TcpStream, side: &str) -> Result<(), String>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(sock) {
            // Our own alert, if rustls queued one, goes out before the socket closes.
            let _ = conn.write_tls(sock);
            return Err(describe(side, &e));
        }
    }
    Ok(())
}

fn describe(side: &str, e: &io::Error) -> String {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return format!(
            "TLS {side}: In state hello: no TLS answer before the connection closed or timed out \
             ({}; a node without TLS distribution?)",
            e.kind()
        );
    };
    let me = if side == "server" { "SERVER" } else { "CLIENT" };
    let them = if side == "server" { "CLIENT" } else { "SERVER" };
    use rustls::{CertificateError, Error};
    let (state, what) = match tls {
        Error::AlertReceived(a) => {
            let said = match a {
                rustls::AlertDescription::UnknownCA => "Unknown CA".to_string(),
                rustls::AlertDescription::BadCertificate => "Bad Certificate".to_string(),
                rustls::AlertDescription::CertificateRequired => "Certificate required".to_string(),
                rustls::AlertDescription::CertificateExpired => "Certificate Expired".to_string(),
                other => format!("{other:?}"),
            };
            return format!("TLS {side}: In state certify received {them} ALERT: Fatal - {said}");
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => ("certify", "Unknown CA"),
        Error::InvalidCertificate(CertificateError::BadSignature) => ("certify", "Unknown CA"),
        Error::InvalidCertificate(CertificateError::Expired) => ("certify", "Certificate Expired"),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => (
            "certify",
            "Handshake Failure - {bad_cert,hostname_check_failed}",
        ),
        Error::InvalidCertificate(_) => ("certify", "Bad Certificate"),
        Error::NoCertificatesPresented => (
            "wait_cert",
            "Certificate required - the peer sent no certificate",
        ),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => (
            "hello",
            "Unexpected Message - not a TLS handshake (a node without TLS distribution?)",
        ),
        _ => ("hello", "Handshake Failure"),
    };
    format!("TLS {side}: In state {state} generated {me} ALERT: Fatal - {what}")
}

impl Tls {
    fn from_optfile(path: &Path) -> Result<Tls, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("-ssl_dist_optfile {shown}: cannot read it: {e}"))?;
        let terms =
            erl_terms::parse(&text).map_err(|e| format!("-ssl_dist_optfile {shown}: {e}"))?;
        let side = |name: &str| terms.get(name).cloned().unwrap_or(Term::List(Vec::new()));
        let (server, client) = (side("server"), side("client"));
        // ring's provider: what builds statically for the FROM scratch image. Its lack of a
        // post-quantum key exchange (the deprecation) does not matter to a test double.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(Tls {
            server: Arc::new(
                server_config(&server, &provider).map_err(|e| format!("{shown}: server: {e}"))?,
            ),
            client: Arc::new(
                client_config(&client, &provider).map_err(|e| format!("{shown}: client: {e}"))?,
            ),
        })
    }
}

fn file_opt<'a>(opts: &'a Term, key: &str) -> Option<&'a str> {
    opts.get(key).and_then(Term::as_str)
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

/// `keyfile`, or the key in `certfile` (CouchDB's example puts both in one PEM file).
fn key(opts: &Term) -> Result<Option<PrivateKeyDer<'static>>, String> {
    let Some(path) = file_opt(opts, "keyfile").or_else(|| file_opt(opts, "certfile")) else {
        return Ok(None);
    };
    PrivateKeyDer::from_pem_file(path)
        .map(Some)
        .map_err(|_| format!("no private key readable in {path}"))
}

fn roots(opts: &Term) -> Result<Option<RootCertStore>, String> {
    let Some(path) = file_opt(opts, "cacertfile") else {
        return Ok(None);
    };
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("{path}: not a usable CA certificate: {e}"))?;
    }
    Ok(Some(store))
}

fn verify_peer(opts: &Term) -> bool {
    opts.get("verify").and_then(Term::as_atom) == Some("verify_peer")
}

fn server_config(opts: &Term, provider: &Arc<CryptoProvider>) -> Result<ServerConfig, String> {
    let certfile = file_opt(opts, "certfile").ok_or("no certfile")?;
    let chain = certs(certfile)?;
    let key = key(opts)?.ok_or("no private key")?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if verify_peer(opts) {
        let roots = roots(opts)?.ok_or("verify_peer without a cacertfile")?;
        let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if opts.get("fail_if_no_peer_cert") != Some(&Term::Atom("true".into())) {
            v = v.allow_unauthenticated();
        }
        builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
    } else {
        builder.with_no_client_auth()
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())
}

fn client_config(opts: &Term, provider: &Arc<CryptoProvider>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if verify_peer(opts) {
        builder.with_root_certificates(roots(opts)?.ok_or("verify_peer without a cacertfile")?)
    } else {
        // OTP 25's default for a client: verify_none.
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider.clone())))
    };
    match file_opt(opts, "certfile") {
        Some(certfile) => {
            let key = key(opts)?.ok_or("no private key")?;
            builder
                .with_client_auth_cert(certs(certfile)?, key)
                .map_err(|e| e.to_string())
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// `{verify, verify_none}`: any certificate is accepted (its signatures still checked).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `couch_dist`'s glob: `*` any run, `?` one character, `true` everything.
fn glob(pattern: &str, name: &str) -> bool {
    if pattern == "true" {
        return true;
    }
    if pattern == "false" {
        return false;
    }
    fn m(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_without_a_tls_proto_are_plain() {
        for flags in ["", "+K true -setcookie x", "-proto_dist inet_tcp"] {
            let d = Distribution::from_erl_flags(flags).unwrap();
            assert!(!d.tls_for("a@b.c"), "{flags}");
        }
        let e = Distribution::from_erl_flags("-proto_dist couch").unwrap_err();
        assert!(e.contains("-ssl_dist_optfile"), "{e}");
        let e = Distribution::from_erl_flags("-proto_dist couch -ssl_dist_optfile /nonexistent")
            .unwrap_err();
        assert!(e.contains("/nonexistent"), "{e}");
        assert!(Distribution::from_erl_flags("-proto_dist tcp6").is_err());
    }

    #[test]
    fn no_tls_globs_like_couch_dist() {
        assert!(glob("clouseau@*", "clouseau@127.0.0.1"));
        assert!(glob("n?de@x", "node@x"));
        assert!(!glob("clouseau@*", "couchdb@a.b"));
        assert!(glob("true", "anything"));
        assert!(!glob("false", "anything"));
    }
}

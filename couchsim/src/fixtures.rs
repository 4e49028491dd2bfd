//! Test fixtures for TLS distribution: a small CA and a certificate per node made with the
//! `openssl` command (as `scripts/gen-env --dist-tls` makes them for the bundle), and the
//! `-ssl_dist_optfile` with the `ERL_FLAGS` that point a node at them.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA named `ca_name` in `dir` (`ca.crt`; its key is removed), and for each `(stem, san)` a
/// certificate `stem.crt` + key `stem.key` for both TLS roles, `san` its subjectAltName (e.g.
/// `IP:127.0.0.1` or `DNS:couchdb-1.couchdb.internal`).
pub fn make_certificates(dir: &Path, ca_name: &str, nodes: &[(&str, &str)]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let run = |args: &[&str]| -> io::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "openssl {}: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    let subject = format!("/CN={ca_name}");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ])?;
    for (stem, san) in nodes {
        let (key, csr, crt, ext) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.crt"),
            format!("{stem}.ext"),
        );
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={stem}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ])?;
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )?;
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ])?;
        std::fs::remove_file(dir.join(&csr))?;
        std::fs::remove_file(dir.join(&ext))?;
    }
    std::fs::remove_file(dir.join("ca.key"))?;
    let _ = std::fs::remove_file(dir.join("ca.srl"));
    Ok(())
}

/// Writes `stem.conf`, the optfile of CouchDB's "TLS Erlang Distribution" page for the node
/// `stem` (peers verified against `ca.crt` both ways), and returns the `ERL_FLAGS` that use it.
pub fn erl_flags(dir: &Path, stem: &str) -> io::Result<String> {
    let p = |f: &str| -> PathBuf { dir.join(f) };
    let (ca, crt, key) = (
        p("ca.crt"),
        p(&format!("{stem}.crt")),
        p(&format!("{stem}.key")),
    );
    let side = |extra: &str| {
        format!(
            "[{{cacertfile, \"{}\"}}, {{certfile, \"{}\"}}, {{keyfile, \"{}\"}}, \
             {{secure_renegotiate, true}}, {{verify, verify_peer}}{extra}]",
            ca.display(),
            crt.display(),
            key.display()
        )
    };
    let conf = p(&format!("{stem}.conf"));
    std::fs::write(
        &conf,
        format!(
            "[{{server, {}}},\n {{client, {}}}].\n",
            side(", {fail_if_no_peer_cert, true}"),
            side("")
        ),
    )?;
    Ok(format!(
        "-proto_dist couch -ssl_dist_optfile {}",
        conf.display()
    ))
}

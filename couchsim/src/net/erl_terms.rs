//! Erlang terms as an `-ssl_dist_optfile` holds them (`[{server, [{certfile, "…"}]}, …].`):
//! lists, tuples, atoms (bare or quoted), strings and integers, `%` comments, the final dot.
//! Enough for the options CouchDB's "TLS Erlang Distribution" page shows; anything else is an
//! error naming where it stopped, never a guess.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    Atom(String),
    Str(String),
    Int(i64),
    List(Vec<Term>),
    Tuple(Vec<Term>),
}

impl Term {
    /// `{Key, Value}` pairs of a proplist, by key.
    pub fn get(&self, key: &str) -> Option<&Term> {
        let Term::List(items) = self else { return None };
        items.iter().find_map(|t| match t {
            Term::Tuple(kv) if kv.len() == 2 && kv[0] == Term::Atom(key.into()) => Some(&kv[1]),
            _ => None,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Term::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(a) => Some(a),
            _ => None,
        }
    }
}

/// One term followed by a dot (whitespace and comments around it).
pub fn parse(text: &str) -> Result<Term, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let t = p.term()?;
    p.skip();
    if p.peek() != Some(b'.') {
        return Err(p.err("expected the final `.`"));
    }
    p.i += 1;
    p.skip();
    if p.i != p.s.len() {
        return Err(p.err("text after the final `.`"));
    }
    Ok(t)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn err(&self, what: &str) -> String {
        let line = self.s[..self.i.min(self.s.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
            + 1;
        format!("{what} (line {line})")
    }

    fn skip(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() {
                self.i += 1;
            } else if c == b'%' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.i += 1;
                }
            } else {
                break;
            }
        }
    }

    fn term(&mut self) -> Result<Term, String> {
        self.skip();
        match self.peek() {
            Some(b'[') => self.seq(b']').map(Term::List),
            Some(b'{') => self.seq(b'}').map(Term::Tuple),
            Some(b'"') => self.quoted(b'"').map(Term::Str),
            Some(b'\'') => self.quoted(b'\'').map(Term::Atom),
            Some(c) if c.is_ascii_lowercase() => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'@')
                {
                    self.i += 1;
                }
                Ok(Term::Atom(
                    String::from_utf8_lossy(&self.s[start..self.i]).into_owned(),
                ))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' => {
                let start = self.i;
                self.i += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .map(Term::Int)
                    .ok_or_else(|| self.err("not a number"))
            }
            _ => Err(self.err("expected a list, tuple, atom, string or number")),
        }
    }

    fn seq(&mut self, close: u8) -> Result<Vec<Term>, String> {
        self.i += 1;
        let mut items = Vec::new();
        self.skip();
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok(items);
        }
        loop {
            items.push(self.term()?);
            self.skip();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok(items);
                }
                _ => return Err(self.err(&format!("expected `,` or `{}`", close as char))),
            }
        }
    }

    fn quoted(&mut self, q: u8) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated quote")),
                Some(c) if c == q => {
                    self.i += 1;
                    return String::from_utf8(out).map_err(|_| self.err("not UTF-8"));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.peek().ok_or_else(|| self.err("unterminated quote"))?;
                    out.push(match c {
                        b'n' => b'\n',
                        b't' => b'\t',
                        other => other,
                    });
                    self.i += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_optfile_parses() {
        let t = parse(
            "% CouchDB's example\n[{server,\n  [{cacertfile, \"/etc/ca.pem\"},\n   {certfile, \"/etc/s.pem\"},\n   \
             {secure_renegotiate, true},\n   {verify, verify_peer},\n   {fail_if_no_peer_cert, true}]},\n \
             {client, [{cacertfile, \"/etc/ca.pem\"}, {verify, verify_peer}, {depth, 2}]}].\n",
        )
        .unwrap();
        let server = t.get("server").unwrap();
        assert_eq!(
            server.get("certfile").and_then(Term::as_str),
            Some("/etc/s.pem")
        );
        assert_eq!(
            server.get("verify").and_then(Term::as_atom),
            Some("verify_peer")
        );
        assert_eq!(t.get("client").unwrap().get("depth"), Some(&Term::Int(2)));
    }

    #[test]
    fn the_bundles_optfile_parses() {
        let t = parse(include_str!("../../../compose/dist-tls/ssl_dist.conf")).unwrap();
        for side in ["server", "client"] {
            let opts = t.get(side).unwrap();
            assert_eq!(
                opts.get("verify").and_then(Term::as_atom),
                Some("verify_peer")
            );
            assert!(opts.get("keyfile").and_then(Term::as_str).is_some());
        }
    }

    #[test]
    fn broken_terms_are_errors_with_a_line() {
        for bad in [
            "[{server, []}]",
            "[{server, [}].",
            "[\"open].",
            "[a] b.",
            "[A].",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("[\n{x,\n[}].").unwrap_err().contains("line 3"));
    }
}

//! Document bodies as CouchDB keeps them (EJSON: objects keep their keys in the order they
//! came), and CouchDB's revision ids, which are an MD5 over Erlang's `term_to_binary` of the
//! body — so the simulator hands out the very revs a real 3.4.2 does (`{"n":0}` is always
//! `1-6a1adde9be9cd8e7d5ef76edc6836391`, a `_nodes` doc `1-967a00dff5e02add41819138abb3284d`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

use crate::util;

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Ej {
    #[default]
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    Arr(Vec<Ej>),
    Obj(Vec<(String, Ej)>),
}

impl Ej {
    /// `{}`
    pub fn empty() -> Ej {
        Ej::Obj(Vec::new())
    }

    /// Parses JSON text, keeping key order. `None` when it is not JSON.
    pub fn parse(bytes: &[u8]) -> Option<Ej> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".to_string())
    }

    pub fn get(&self, key: &str) -> Option<&Ej> {
        self.fields()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn fields(&self) -> Option<&[(String, Ej)]> {
        match self {
            Ej::Obj(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Ej]> {
        match self {
            Ej::Arr(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Ej::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The strings of an array (other items skipped); empty for anything but an array.
    pub fn strings(&self) -> Vec<String> {
        self.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets (or appends) a field of an object; no-op on anything else.
    pub fn set(&mut self, key: &str, value: Ej) {
        if let Ej::Obj(f) = self {
            match f.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => f.push((key.to_string(), value)),
            }
        }
    }

    /// From a `serde_json::Value` (its objects are sorted by key).
    pub fn from_value(v: &Value) -> Ej {
        match v {
            Value::Null => Ej::Null,
            Value::Bool(b) => Ej::Bool(*b),
            Value::Number(n) => Ej::Num(n.clone()),
            Value::String(s) => Ej::Str(s.clone()),
            Value::Array(a) => Ej::Arr(a.iter().map(Ej::from_value).collect()),
            Value::Object(o) => Ej::Obj(
                o.iter()
                    .map(|(k, v)| (k.clone(), Ej::from_value(v)))
                    .collect(),
            ),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Ej::Null => Value::Null,
            Ej::Bool(b) => Value::Bool(*b),
            Ej::Num(n) => Value::Number(n.clone()),
            Ej::Str(s) => Value::String(s.clone()),
            Ej::Arr(a) => Value::Array(a.iter().map(Ej::to_value).collect()),
            Ej::Obj(f) => Value::Object(f.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
        }
    }
}

impl From<&str> for Ej {
    fn from(s: &str) -> Ej {
        Ej::Str(s.to_string())
    }
}

impl Serialize for Ej {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Ej::Null => s.serialize_unit(),
            Ej::Bool(b) => s.serialize_bool(*b),
            Ej::Num(n) => n.serialize(s),
            Ej::Str(x) => s.serialize_str(x),
            Ej::Arr(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Ej::Obj(f) => {
                let mut map = s.serialize_map(Some(f.len()))?;
                for (k, v) in f {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct EjVisitor;

impl<'de> Visitor<'de> for EjVisitor {
    type Value = Ej;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Ej, E> {
        Ok(Ej::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Ej, E> {
        Ok(Ej::Null)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Ej, E> {
        Ok(Ej::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Ej, E> {
        Ok(Ej::Num(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Ej, E> {
        Ok(Ej::Num(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Ej, E> {
        Ok(Number::from_f64(n).map(Ej::Num).unwrap_or(Ej::Null))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Ej, E> {
        Ok(Ej::Str(s.to_string()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Ej, E> {
        Ok(Ej::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ej, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Ej::Arr(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ej, A::Error> {
        let mut out: Vec<(String, Ej)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Ej>()? {
            out.push((k, v));
        }
        Ok(Ej::Obj(out))
    }
}

impl<'de> Deserialize<'de> for Ej {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ej, D::Error> {
        d.deserialize_any(EjVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Revision ids: md5(term_to_binary([Deleted, OldStart, OldRev, Body, Atts], [{minor_version,1}]))
// (`couch_db:new_revid/1`, attachments always empty here)
// ---------------------------------------------------------------------------------------------

fn atom(out: &mut Vec<u8>, name: &str) {
    out.push(100); // ATOM_EXT (latin-1, minor_version 1)
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

fn binary(out: &mut Vec<u8>, b: &[u8]) {
    out.push(109); // BINARY_EXT
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn integer(out: &mut Vec<u8>, n: i128) {
    if (0..=255).contains(&n) {
        out.extend_from_slice(&[97, n as u8]); // SMALL_INTEGER_EXT
    } else if (i32::MIN as i128..=i32::MAX as i128).contains(&n) {
        out.push(98); // INTEGER_EXT
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        let mut mag = n.unsigned_abs();
        let mut digits = Vec::new();
        while mag > 0 {
            digits.push(mag as u8);
            mag >>= 8;
        }
        out.extend_from_slice(&[110, digits.len() as u8, (n < 0) as u8]); // SMALL_BIG_EXT
        out.extend_from_slice(&digits);
    }
}

/// One list, as Erlang writes it: `STRING_EXT` when every element is a small integer.
fn list(out: &mut Vec<u8>, items: &[Ej]) {
    if items.is_empty() {
        out.push(106); // NIL_EXT
        return;
    }
    let small: Option<Vec<u8>> = items
        .iter()
        .map(|v| match v {
            Ej::Num(n) => n.as_u64().filter(|x| *x <= 255).map(|x| x as u8),
            _ => None,
        })
        .collect();
    match small {
        Some(bytes) if bytes.len() < 65_536 => {
            out.push(107); // STRING_EXT
            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        _ => {
            out.push(108); // LIST_EXT
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for v in items {
                term(out, v);
            }
            out.push(106);
        }
    }
}

/// The EJSON term jiffy decodes a JSON value to: `{[{<<"k">>, V}, …]}`, binaries, lists,
/// integers, floats and the atoms `null`, `true`, `false`.
fn term(out: &mut Vec<u8>, v: &Ej) {
    match v {
        Ej::Null => atom(out, "null"),
        Ej::Bool(b) => atom(out, if *b { "true" } else { "false" }),
        Ej::Num(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => integer(out, i as i128),
            (None, Some(u)) => integer(out, u as i128),
            _ => {
                out.push(70); // NEW_FLOAT_EXT
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        },
        Ej::Str(s) => binary(out, s.as_bytes()),
        Ej::Arr(a) => list(out, a),
        Ej::Obj(fields) => {
            out.extend_from_slice(&[104, 1]); // {Proplist}
            if fields.is_empty() {
                out.push(106);
                return;
            }
            out.push(108);
            out.extend_from_slice(&(fields.len() as u32).to_be_bytes());
            for (k, v) in fields {
                out.extend_from_slice(&[104, 2]);
                binary(out, k.as_bytes());
                term(out, v);
            }
            out.push(106);
        }
    }
}

/// `N-<32 hex>` → (N, the 16 bytes CouchDB keeps). Revs that are not CouchDB-shaped keep
/// their text as the "bytes".
pub fn parse_rev(rev: &str) -> Option<(u64, Vec<u8>)> {
    let (pos, hash) = rev.split_once('-')?;
    let pos: u64 = pos.parse().ok()?;
    let bytes = util::unhex(hash).unwrap_or_else(|| hash.as_bytes().to_vec());
    Some((pos, bytes))
}

/// The rev CouchDB gives `body` written on top of `prev` (none: a new doc).
pub fn new_rev(deleted: bool, prev: Option<&str>, body: &Ej) -> String {
    let (start, old) = prev
        .and_then(parse_rev)
        .map(|(p, b)| (p, Some(b)))
        .unwrap_or((0, None));
    let mut buf = vec![131u8, 108, 0, 0, 0, 5];
    atom(&mut buf, if deleted { "true" } else { "false" });
    integer(&mut buf, start as i128);
    match old {
        Some(b) => binary(&mut buf, &b),
        None => integer(&mut buf, 0),
    }
    term(&mut buf, body);
    buf.push(106); // attachments: []
    buf.push(106); // end of the 5-element list
    format!("{}-{}", start + 1, util::hex(&util::md5(&buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ej(s: &str) -> Ej {
        Ej::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn revs_are_couchdbs() {
        // recorded in transcripts 01-13
        assert_eq!(
            new_rev(false, None, &Ej::empty()),
            "1-967a00dff5e02add41819138abb3284d"
        );
        assert_eq!(
            new_rev(
                true,
                Some("1-967a00dff5e02add41819138abb3284d"),
                &Ej::empty()
            ),
            "2-eec205a9d413992850a6e32678485900"
        );
        assert_eq!(
            new_rev(
                false,
                Some("2-eec205a9d413992850a6e32678485900"),
                &Ej::empty()
            ),
            "3-5570e8bbb34412db757c2df4bfa1099b"
        );
        assert_eq!(
            new_rev(false, None, &ej(r#"{"n":0}"#)),
            "1-6a1adde9be9cd8e7d5ef76edc6836391"
        );
        assert_eq!(
            new_rev(false, None, &ej(r#"{"ghost":true}"#)),
            "1-ad9c9f139386921dfeae12c3e53ba93c"
        );
        assert_eq!(
            new_rev(
                true,
                Some("9-086404764a27ab6c98d7a815d5f80c1a"),
                &Ej::empty()
            ),
            "10-068eec62fff86cf8bfa4d2dddec44653"
        );
    }

    #[test]
    fn shard_map_revs_are_couchdbs() {
        // transcript 11 line 32: `moveme`'s first `_dbs` doc (shard_suffix is a STRING_EXT)
        let body = ej(concat!(
            r#"{"shard_suffix":[46,49,55,57,53,53,50,52,57,54,49],"changelog":["#,
            r#"["add","00000000-7fffffff","node1@127.0.0.1"],["add","00000000-7fffffff","node2@127.0.0.1"],"#,
            r#"["add","00000000-7fffffff","node3@127.0.0.1"],["add","80000000-ffffffff","node1@127.0.0.1"],"#,
            r#"["add","80000000-ffffffff","node2@127.0.0.1"],["add","80000000-ffffffff","node3@127.0.0.1"]],"#,
            r#""by_node":{"node1@127.0.0.1":["00000000-7fffffff","80000000-ffffffff"],"#,
            r#""node2@127.0.0.1":["00000000-7fffffff","80000000-ffffffff"],"#,
            r#""node3@127.0.0.1":["00000000-7fffffff","80000000-ffffffff"]},"#,
            r#""by_range":{"00000000-7fffffff":["node1@127.0.0.1","node2@127.0.0.1","node3@127.0.0.1"],"#,
            r#""80000000-ffffffff":["node1@127.0.0.1","node2@127.0.0.1","node3@127.0.0.1"]},"props":{}}"#
        ));
        assert_eq!(
            new_rev(false, None, &body),
            "1-0293fe5aaf3ccc3d035c10d3a2a5654a"
        );
    }

    #[test]
    fn key_order_survives_and_numbers_encode() {
        let v = ej(r#"{"b":1,"a":[1,2,300],"c":{"z":null,"y":-5,"x":1.5,"w":12345678901}}"#);
        assert_eq!(
            v.text(),
            r#"{"b":1,"a":[1,2,300],"c":{"z":null,"y":-5,"x":1.5,"w":12345678901}}"#
        );
        assert_eq!(v.get("b"), Some(&Ej::Num(1.into())));
        // different key order, different rev (as in CouchDB)
        assert_ne!(
            new_rev(false, None, &ej(r#"{"a":1,"b":2}"#)),
            new_rev(false, None, &ej(r#"{"b":2,"a":1}"#))
        );
        assert!(Ej::from_value(&v.to_value()).get("c").is_some());
        assert!(Ej::parse(b"{not json").is_none());
    }
}

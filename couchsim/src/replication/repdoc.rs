//! `_replicator` documents as CouchDB 3.4.2 reads them: what its validation refuses (403),
//! what a doc asks for (source, target, their credentials, options), how endpoints are shown
//! without credentials (trap 21), the replication id, and which node runs a doc's job.
//! Pure functions; the replicator (`replicator.rs`) acts on them.

use serde_json::{Map, Value};

use crate::net::client;
use crate::node::ejson::Ej;
use crate::util;

/// One end of a replication.
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    /// `http://host:port/db/`: credentials removed, a trailing slash added.
    pub url: String,
    /// Basic credentials, from `auth.basic` or from the URL.
    pub creds: Option<(String, String)>,
    /// The URL carried `user:password@` (then the doc-based view masks it).
    inline: bool,
}

// Never print a password, not even in a test failure.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.creds.as_ref().map(|(u, _)| u.as_str());
        write!(f, "Endpoint({}, user {:?})", self.url, user)
    }
}

impl Endpoint {
    /// The URL as `/_scheduler/*` shows a running job's endpoint: no credentials at all.
    pub fn shown(&self) -> &str {
        &self.url
    }

    /// The URL as `/_scheduler/docs` shows it from the doc itself (before the scheduler took
    /// the doc, or when it failed): a password in the URL becomes `*****`.
    pub fn shown_from_doc(&self) -> String {
        match (&self.creds, self.inline) {
            (Some((user, _)), true) => match self.url.split_once("://") {
                Some((scheme, rest)) => format!("{scheme}://{user}:*****@{rest}"),
                None => self.url.clone(),
            },
            _ => self.url.clone(),
        }
    }

    /// `(host, port, path)` of the URL.
    pub fn parts(&self) -> Option<(String, u16, String)> {
        let u = client::parse_url(&self.url)?;
        Some((u.host, u.port, u.path))
    }
}

/// What a replication doc asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Rep {
    pub source: Endpoint,
    pub target: Endpoint,
    pub continuous: bool,
    pub create_target: bool,
}

/// The 403 reason CouchDB's `_replicator` validation gives a doc, if it refuses it (deletions
/// and docs the replicator marked `failed` pass; the caller is an admin).
pub fn validate(body: &Map<String, Value>) -> Result<(), String> {
    if body.get("_deleted") == Some(&Value::Bool(true))
        || body.get("_replication_state").and_then(Value::as_str) == Some("failed")
    {
        return Ok(());
    }
    for field in ["source", "target"] {
        validate_endpoint(body.get(field), field)?;
    }
    for field in ["create_target", "continuous"] {
        if body.get(field).is_some_and(|v| !v.is_boolean()) {
            return Err(format!("The `{field}' field must be a boolean."));
        }
    }
    if body.get("doc_ids").is_some_and(|v| !v.is_array()) {
        return Err("The `doc_ids' field must be an array of strings.".into());
    }
    if body
        .get("filter")
        .is_some_and(|v| v.as_str().is_none_or(str::is_empty))
    {
        return Err("The `filter' field must be a non-empty string.".into());
    }
    Ok(())
}

fn validate_endpoint(v: Option<&Value>, field: &str) -> Result<(), String> {
    match v {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Object(o)) => {
            if o.get("url")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(format!(
                    "The url property must exist in the `{field}' field and must be a \
                     non-empty string."
                ));
            }
            for sub in ["auth", "headers"] {
                if o.get(sub).is_some_and(|a| !a.is_object()) {
                    return Err(format!("`{field}.{sub}' must be a non-null object."));
                }
            }
            Ok(())
        }
        _ => Err(format!(
            "The `{field}' property must exist and be either a string or an object."
        )),
    }
}

/// CouchDB's `before_doc_update`: a doc written by an admin without an owner (or with a null
/// one) gets `"owner":"<user>"`, appended last as `GET /_replicator/<id>` shows it.
pub fn add_owner(body: &mut Ej, user: &str) {
    if matches!(body.get("owner"), None | Some(Ej::Null)) {
        body.set("owner", Ej::from(user));
    }
}

/// How `/_scheduler/docs` shows a doc's `source`/`target` when no job holds it
/// (`strip_url_creds`): the URL with a trailing slash and a masked password, or the value
/// itself when it is no URL.
pub fn shown_field(v: Option<&Value>) -> String {
    match endpoint(v) {
        Ok(e) => e.shown_from_doc(),
        Err(_) => match v {
            Some(Value::String(s)) => mask(s),
            Some(Value::Object(o)) => o
                .get("url")
                .and_then(Value::as_str)
                .map(mask)
                .unwrap_or_default(),
            _ => String::new(),
        },
    }
}

/// What the replicator makes of a doc that passed validation; `Err` is the reason it marks
/// the doc `failed` with.
pub fn parse(body: &Map<String, Value>) -> Result<Rep, String> {
    let flag = |k: &str| body.get(k).and_then(Value::as_bool).unwrap_or(false);
    Ok(Rep {
        source: endpoint(body.get("source"))?,
        target: endpoint(body.get("target"))?,
        continuous: flag("continuous"),
        create_target: flag("create_target"),
    })
}

fn endpoint(v: Option<&Value>) -> Result<Endpoint, String> {
    let (url, auth) = match v {
        Some(Value::String(u)) => (u.as_str(), None),
        Some(Value::Object(o)) => (
            o.get("url").and_then(Value::as_str).unwrap_or(""),
            o.get("auth"),
        ),
        _ => return Err("Missing replicator database".into()),
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err("local_endpoints_not_supported".into());
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if hostport.is_empty() {
        return Err(format!("Could not parse the url of {}", mask(url)));
    }
    let inline = userinfo.map(|u| {
        let (n, p) = u.split_once(':').unwrap_or((u, ""));
        (util::pct_decode(n), util::pct_decode(p))
    });
    let basic = auth
        .and_then(|a| a.get("basic"))
        .and_then(|b| Some((b.get("username")?.as_str()?, b.get("password")?.as_str()?)))
        .map(|(u, p)| (u.to_string(), p.to_string()));
    let mut clean = format!("{scheme}://{hostport}{path}");
    if !clean.contains('?') && !clean.ends_with('/') {
        clean.push('/');
    }
    Ok(Endpoint {
        url: clean,
        inline: basic.is_none() && inline.is_some(),
        creds: basic.or(inline),
    })
}

/// A URL for an error message: any `user:password@` reduced to the host.
fn mask(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// The replication id: a hash of the server uuid, both endpoints (user included, password
/// not) and the options that change what is replicated, plus `+continuous` /
/// `+create_target`. Same inputs, same id, on every node that shares the uuid.
pub fn rep_id(server_uuid: &str, rep: &Rep) -> String {
    let user = |e: &Endpoint| e.creds.as_ref().map(|(u, _)| u.clone()).unwrap_or_default();
    let base = util::sha256_hex(&[
        server_uuid.as_bytes(),
        b"\0",
        rep.source.url.as_bytes(),
        b"\0",
        user(&rep.source).as_bytes(),
        b"\0",
        rep.target.url.as_bytes(),
        b"\0",
        user(&rep.target).as_bytes(),
    ]);
    let mut id = base[..32].to_string();
    if rep.continuous {
        id.push_str("+continuous");
    }
    if rep.create_target {
        id.push_str("+create_target");
    }
    id
}

/// The node that runs a doc's job (`mem3:owner`): among the live nodes holding the doc's
/// range of `_replicator`, sorted, the one at `crc32(term_to_binary({<<"_replicator">>,
/// DocId}))` modulo their count — transcript 14 ran `backup-missing-target` on node1 and
/// `backup` on node3.
pub fn owner(doc_id: &str, holders: &[String]) -> Option<String> {
    let mut nodes = holders.to_vec();
    nodes.sort();
    nodes.dedup();
    if nodes.is_empty() {
        return None;
    }
    let mut term = vec![131u8, 104, 2];
    for part in ["_replicator", doc_id] {
        term.push(109);
        term.extend_from_slice(&(part.len() as u32).to_be_bytes());
        term.extend_from_slice(part.as_bytes());
    }
    let i = util::crc32(&term) as usize % nodes.len();
    Some(nodes[i].clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn recorded_doc() -> Map<String, Value> {
        obj(json!({
            "_id": "backup",
            "source": {"url": "http://127.0.0.1:15984/app",
                       "auth": {"basic": {"username": "admin", "password": "password"}}},
            "target": {"url": "http://127.0.0.1:55984/app_backup",
                       "auth": {"basic": {"username": "admin", "password": "password"}}},
            "continuous": true
        }))
    }

    #[test]
    fn the_recorded_doc_passes_and_parses() {
        let d = recorded_doc();
        assert_eq!(validate(&d), Ok(()));
        let r = parse(&d).unwrap();
        assert_eq!(r.source.shown(), "http://127.0.0.1:15984/app/");
        assert_eq!(r.target.shown(), "http://127.0.0.1:55984/app_backup/");
        assert_eq!(
            r.target.shown_from_doc(),
            "http://127.0.0.1:55984/app_backup/"
        );
        assert_eq!(r.source.creds, Some(("admin".into(), "password".into())));
        assert!(r.continuous && !r.create_target);
        assert!(!format!("{r:?}").contains("password\""));
    }

    #[test]
    fn validation_reasons() {
        let cases = [
            (
                json!({"target": "http://h/db"}),
                "The `source' property must exist and be either a string or an object.",
            ),
            (
                json!({"source": 3, "target": "http://h/db"}),
                "The `source' property must exist and be either a string or an object.",
            ),
            (
                json!({"source": {"url": ""}, "target": "http://h/db"}),
                "The url property must exist in the `source' field and must be a non-empty string.",
            ),
            (
                json!({"source": {"url": "http://h/a", "auth": "x"}, "target": "http://h/db"}),
                "`source.auth' must be a non-null object.",
            ),
            (
                json!({"source": "http://h/a", "target": null}),
                "The `target' property must exist and be either a string or an object.",
            ),
            (
                json!({"source": "http://h/a", "target": "http://h/b", "continuous": "yes"}),
                "The `continuous' field must be a boolean.",
            ),
            (
                json!({"source": "http://h/a", "target": "http://h/b", "create_target": 1}),
                "The `create_target' field must be a boolean.",
            ),
        ];
        for (doc, reason) in cases {
            assert_eq!(
                validate(&obj(doc.clone())),
                Err(reason.to_string()),
                "{doc}"
            );
        }
        assert_eq!(validate(&obj(json!({"_deleted": true}))), Ok(()));
        assert_eq!(
            validate(&obj(json!({"_replication_state": "failed"}))),
            Ok(())
        );
    }

    #[test]
    fn owner_is_appended_once() {
        let mut d = Ej::from_value(&Value::Object(recorded_doc()));
        add_owner(&mut d, "admin");
        let keys: Vec<&str> = d
            .fields()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys.last(), Some(&"owner"));
        d.set("owner", Ej::from("someone"));
        add_owner(&mut d, "admin");
        assert_eq!(d.get("owner"), Some(&Ej::from("someone")));
    }

    #[test]
    fn inline_credentials_are_moved_out_of_the_url_and_masked_from_the_doc() {
        let d = obj(json!({"source": "http://adm:p%40ss@h:5984/db",
                          "target": {"url": "http://h:5984/b?x=1"}}));
        let r = parse(&d).unwrap();
        assert_eq!(r.source.url, "http://h:5984/db/");
        assert_eq!(r.source.creds, Some(("adm".into(), "p@ss".into())));
        assert_eq!(r.source.shown_from_doc(), "http://adm:*****@h:5984/db/");
        assert_eq!(r.target.url, "http://h:5984/b?x=1");
        assert_eq!(r.target.creds, None);
        assert_eq!(
            parse(&obj(json!({"source": "app", "target": "http://h/b"}))),
            Err("local_endpoints_not_supported".into())
        );
        let bad = parse(&obj(
            json!({"source": "http://u:secret@/x", "target": "http://h/b"}),
        ));
        assert!(!bad.unwrap_err().contains("secret"));
    }

    #[test]
    fn the_replication_id_depends_on_uuid_endpoints_user_and_options_not_the_password() {
        let r = parse(&recorded_doc()).unwrap();
        let id = rep_id("fb2b1ef6", &r);
        assert!(id.ends_with("+continuous"));
        assert_eq!(id.len(), 32 + "+continuous".len());
        assert!(id[..32].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, rep_id("fb2b1ef6", &r.clone()));
        let mut other_pw = r.clone();
        other_pw.target.creds = Some(("admin".into(), "changed".into()));
        assert_eq!(rep_id("fb2b1ef6", &other_pw), id);
        assert_ne!(rep_id("another-uuid", &r), id);
        let mut other_user = r.clone();
        other_user.source.creds = Some(("backup".into(), "password".into()));
        assert_ne!(rep_id("fb2b1ef6", &other_user), id);
        let mut create = r.clone();
        create.create_target = true;
        assert!(rep_id("fb2b1ef6", &create).ends_with("+continuous+create_target"));
    }

    #[test]
    fn owners_as_recorded() {
        let three: Vec<String> = (1..=3).map(|i| format!("node{i}@127.0.0.1")).collect();
        assert_eq!(
            owner("backup-missing-target", &three).as_deref(),
            Some("node1@127.0.0.1")
        );
        assert_eq!(owner("backup", &three).as_deref(), Some("node3@127.0.0.1"));
        assert_eq!(owner("x", &[]), None);
        assert_eq!(
            owner("x", &["node5@127.0.0.1".to_string()]).as_deref(),
            Some("node5@127.0.0.1")
        );
    }
}

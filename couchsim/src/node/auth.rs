//! Authentication as CouchDB 3.4.2 does it for server admins: basic auth against `[admins]`
//! hashes, the two different 401 bodies, the per user+address lockout (403 even for the right
//! password), the costly first check per hash, and `AuthSession` cookies bound to the node's
//! secret and the admin's salt (so they work across nodes only once those agree — trap 5).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::net::http::{HttpRequest, Response};
use crate::util;

pub const NOT_ADMIN: &str = "You are not a server admin.";
pub const BAD_CREDENTIALS: &str = "Name or password is incorrect.";
pub const LOCKED: &str = "Account is temporarily locked due to multiple authentication failures";

const ITERATIONS: u32 = 600_000;

pub fn not_admin() -> Response {
    Response::error(401, "unauthorized", NOT_ADMIN)
}

pub fn bad_credentials() -> Response {
    Response::error(401, "unauthorized", BAD_CREDENTIALS)
}

pub fn locked() -> Response {
    Response::error(403, "forbidden", LOCKED)
}

/// `-pbkdf2:sha256-<64 hex>,<32 hex salt>,600000`. Not real PBKDF2 (a salted SHA-256 stands
/// in), but the same shape, and a hash copied to another node verifies there.
pub fn hash_password(password: &str, salt: &str) -> String {
    let derived = derive(password, salt);
    format!("-pbkdf2:sha256-{derived},{salt},{ITERATIONS}")
}

fn derive(password: &str, salt: &str) -> String {
    util::sha256_hex(&[b"couchsim-pbkdf2", salt.as_bytes(), password.as_bytes()])
}

/// The `derived_key` of a `_users` doc for this password and salt (64 hex; a salted SHA-256
/// standing in for PBKDF2, like the admin hashes).
pub fn user_key(password: &str, salt: &str) -> String {
    derive(password, salt)
}

/// Whether a config value is already a hash (CouchDB hashes plaintext admins when set).
pub fn is_hashed(value: &str) -> bool {
    value.starts_with("-pbkdf2") || value.starts_with("-hashed-")
}

/// The salt of a stored hash, if it is one.
pub fn salt_of(stored: &str) -> Option<&str> {
    let rest = stored.strip_prefix("-pbkdf2")?;
    let rest = rest.split_once('-').map(|(_, r)| r)?;
    let mut parts = rest.split(',');
    let _derived = parts.next()?;
    parts.next()
}

pub fn verify(stored: &str, password: &str) -> bool {
    if !is_hashed(stored) {
        return stored == password;
    }
    let rest = match stored.strip_prefix("-pbkdf2") {
        Some(r) => r,
        None => return false,
    };
    let rest = match rest.split_once('-') {
        Some((_, r)) => r,
        None => return false,
    };
    let mut parts = rest.split(',');
    match (parts.next(), parts.next()) {
        (Some(derived), Some(salt)) => derive(password, salt) == derived,
        _ => false,
    }
}

/// `Authorization: Basic …` → (user, password). `Err(())` when the header is there but broken.
pub fn basic_credentials(req: &HttpRequest) -> Option<Result<(String, String), ()>> {
    let h = req.header("authorization")?;
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = match util::base64_decode(rest.trim()) {
        Some(d) => d,
        None => return Some(Err(())),
    };
    let text = String::from_utf8_lossy(&decoded).into_owned();
    match text.split_once(':') {
        Some((u, p)) => Some(Ok((u.to_string(), p.to_string()))),
        None => Some(Err(())),
    }
}

/// The basic-auth user a request carries (for the request log).
pub fn sent_user(req: &HttpRequest) -> Option<String> {
    match basic_credentials(req) {
        Some(Ok((u, _))) => Some(u),
        _ => None,
    }
}

/// Volatile auth state of one running node (lost on restart, like CouchDB's ets caches).
#[derive(Debug, Default)]
pub struct AuthState {
    failures: HashMap<(String, IpAddr), Failures>,
    /// (user, stored hash) pairs already verified once: later checks are cheap.
    cache: HashSet<(String, String)>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// `[chttpd_auth_lockout]`: after `threshold` failures, locked for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct Lockout {
    pub duration: Duration,
    pub threshold: u32,
}

/// The result of checking one set of basic credentials.
#[derive(Debug, PartialEq)]
pub enum Check {
    /// A server admin. `costly` on the first check of this hash since start.
    Admin {
        costly: bool,
    },
    Rejected(u16, &'static str),
}

impl AuthState {
    pub fn check(
        &mut self,
        admins: &BTreeMap<String, String>,
        user: &str,
        password: &str,
        peer: IpAddr,
        now: Instant,
        policy: Lockout,
    ) -> Check {
        let Lockout {
            duration: lockout,
            threshold,
        } = policy;
        let key = (user.to_string(), peer);
        if let Some(f) = self.failures.get(&key).copied() {
            if now.duration_since(f.last) >= lockout {
                self.failures.remove(&key);
            } else if threshold > 0 && f.count >= threshold {
                return Check::Rejected(403, LOCKED);
            }
        }
        let ok = admins
            .get(user)
            .map(|stored| verify(stored, password))
            .unwrap_or(false);
        if ok {
            let stored = admins.get(user).cloned().unwrap_or_default();
            let costly = self.cache.insert((user.to_string(), stored));
            Check::Admin { costly }
        } else {
            let f = self.failures.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            f.count += 1;
            f.last = now;
            Check::Rejected(401, BAD_CREDENTIALS)
        }
    }
}

/// `AuthSession` cookie value: `base64url(user:TIMEHEX:mac)` with the mac over the node's
/// secret and the admin's salt, like CouchDB's.
pub fn session_cookie(user: &str, stored_hash: &str, secret: &str, time: u64) -> String {
    let payload = format!("{user}:{time:X}");
    let mac = util::sha256_hex(&[
        secret.as_bytes(),
        salt_of(stored_hash).unwrap_or(stored_hash).as_bytes(),
        payload.as_bytes(),
    ]);
    util::base64_encode(format!("{payload}:{}", &mac[..40]).as_bytes())
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string()
}

/// The admin user an `AuthSession` cookie stands for, if it is valid on this node.
pub fn verify_session_cookie(
    cookie: &str,
    admins: &BTreeMap<String, String>,
    secret: &str,
    now_secs: u64,
    timeout_secs: u64,
) -> Option<String> {
    let raw = util::base64_decode(cookie)?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.splitn(3, ':');
    let (user, time_hex, _mac) = (parts.next()?, parts.next()?, parts.next()?);
    let time = u64::from_str_radix(time_hex, 16).ok()?;
    if now_secs > time.saturating_add(timeout_secs) {
        return None;
    }
    let stored = admins.get(user)?;
    if session_cookie(user, stored, secret, time) == cookie.trim_end_matches('=') {
        Some(user.to_string())
    } else {
        None
    }
}

/// The `AuthSession` value from a `Cookie:` header.
pub fn auth_session(req: &HttpRequest) -> Option<String> {
    let c = req.header("cookie")?;
    c.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == "AuthSession" && !v.is_empty()).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn admins(pw: &str, salt: &str) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("admin".to_string(), hash_password(pw, salt));
        m
    }

    /// One basic-auth check under the default lockout policy (5 failures, `duration`).
    fn check(
        st: &mut AuthState,
        admins: &BTreeMap<String, String>,
        user: &str,
        password: &str,
        peer: IpAddr,
        now: Instant,
        duration: Duration,
    ) -> Check {
        st.check(
            admins,
            user,
            password,
            peer,
            now,
            Lockout {
                duration,
                threshold: 5,
            },
        )
    }

    #[test]
    fn hash_shape_and_verification() {
        let h = hash_password("password", "aba3a1d01c6f628309cd190e40f26de4");
        let re_ok = h.starts_with("-pbkdf2:sha256-") && h.ends_with(",600000");
        assert!(re_ok, "{h}");
        let derived = &h["-pbkdf2:sha256-".len()..h.find(',').unwrap()];
        assert_eq!(derived.len(), 64);
        assert!(verify(&h, "password"));
        assert!(!verify(&h, "nope"));
        // same password, new salt: a different string that still verifies (drift)
        let h2 = hash_password("password", "c93554ca1a36a72546e64f42dc0feb5b");
        assert_ne!(h, h2);
        assert!(verify(&h2, "password"));
        assert_eq!(salt_of(&h2), Some("c93554ca1a36a72546e64f42dc0feb5b"));
        assert!(verify("plain", "plain"));
    }

    #[test]
    fn lockout_after_five_failures_blocks_the_right_password() {
        let a = admins("password", "00");
        let mut st = AuthState::default();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let t0 = Instant::now();
        let lock = Duration::from_secs(300);
        for _ in 0..5 {
            assert_eq!(
                check(&mut st, &a, "admin", "wrong", ip, t0, lock),
                Check::Rejected(401, BAD_CREDENTIALS)
            );
        }
        assert_eq!(
            check(&mut st, &a, "admin", "wrong", ip, t0, lock),
            Check::Rejected(403, LOCKED)
        );
        assert_eq!(
            check(&mut st, &a, "admin", "password", ip, t0, lock),
            Check::Rejected(403, LOCKED)
        );
        // per address
        assert_eq!(
            check(&mut st, &a, "admin", "password", other, t0, lock),
            Check::Admin { costly: true }
        );
        // expires
        assert_eq!(
            check(&mut st, &a, "admin", "password", ip, t0 + lock, lock),
            Check::Admin { costly: false }
        );
    }

    #[test]
    fn unknown_user_is_bad_credentials_and_first_check_is_costly_once() {
        let a = admins("password", "00");
        let mut st = AuthState::default();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t = Instant::now();
        let l = Duration::from_secs(300);
        assert_eq!(
            check(&mut st, &a, "nosuchuser", "x", ip, t, l),
            Check::Rejected(401, BAD_CREDENTIALS)
        );
        assert_eq!(
            check(&mut st, &a, "admin", "password", ip, t, l),
            Check::Admin { costly: true }
        );
        assert_eq!(
            check(&mut st, &a, "admin", "password", ip, t, l),
            Check::Admin { costly: false }
        );
        // a new hash (copied by finish_cluster) costs again
        let b = admins("password", "11");
        assert_eq!(
            check(&mut st, &b, "admin", "password", ip, t, l),
            Check::Admin { costly: true }
        );
    }

    #[test]
    fn session_cookies_need_same_secret_and_salt() {
        let a = admins("password", "00");
        let c = session_cookie("admin", &a["admin"], "s1", 1000);
        assert_eq!(
            verify_session_cookie(&c, &a, "s1", 1001, 600),
            Some("admin".to_string())
        );
        assert_eq!(verify_session_cookie(&c, &a, "s2", 1001, 600), None);
        let b = admins("password", "11");
        assert_eq!(verify_session_cookie(&c, &b, "s1", 1001, 600), None);
        assert_eq!(verify_session_cookie(&c, &a, "s1", 5000, 600), None);
    }
}

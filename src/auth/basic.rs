//! `auth_basic`: `Authorization: Basic` checked against an htpasswd file's
//! bcrypt and argon2 hashes.
//!
//! A hash costs tens of milliseconds of CPU by design, so verifications run
//! on the blocking pool, as many at once as there are cores (others wait
//! their turn), and a success is remembered for [`REMEMBERED`] by a keyed
//! hash of the `Authorization` value: a logged-in client does not pay per
//! request. An unknown user is verified against another user's hash, so it
//! costs what a wrong password does. Each failure takes from the
//! `limit_req` zone named, if any; once the zone refuses, the client's
//! attempts get 429 without being verified until the zone would admit again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use tokio::sync::Semaphore;

use super::{Asker, Refusal, keyed};
use crate::config::{AuthBasicConfig, HashKind};
use crate::guard::{Guard, ReqZone, Subject};
use crate::metrics::{Metrics, Reason};

/// How long a verified `Authorization` is taken without verifying again.
const REMEMBERED: Duration = Duration::from_secs(60);

/// Verifications running at once, in the whole process.
static SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(cores())));

/// Verifications waiting for a slot: past [`MAX_WAITING`] per core, a
/// request is answered 503 at once rather than queued (a flood of wrong
/// passwords from many addresses would otherwise grow the queue without end).
static WAITING: AtomicUsize = AtomicUsize::new(0);
const MAX_WAITING: usize = 64;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(super) struct Basic {
    /// `Basic realm="…", charset="UTF-8"`.
    challenge: HeaderValue,
    users: HashMap<String, Hash>,
    /// What an unknown user's password is verified against.
    stand_in: Hash,
    keep: bool,
    zone: Option<Arc<ReqZone>>,
    /// Clients the zone refused, until when.
    refused: moka::sync::Cache<IpAddr, Instant>,
    /// Keyed hashes of `Authorization` values verified lately.
    verified: moka::sync::Cache<[u8; 32], ()>,
}

#[derive(Clone)]
struct Hash {
    text: Arc<str>,
    kind: HashKind,
}

impl Basic {
    pub(super) fn new(c: &AuthBasicConfig, guard: &Guard) -> Basic {
        let users: HashMap<String, Hash> =
            c.users.iter().map(|u| (u.name.clone(), Hash { text: Arc::from(u.hash.as_str()), kind: u.kind })).collect();
        let first = &c.users[0];
        let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", c.realm.0);
        Basic {
            challenge: HeaderValue::try_from(challenge).expect("a realm is checked to be printable"),
            users,
            stand_in: Hash { text: Arc::from(first.hash.as_str()), kind: first.kind },
            keep: c.keep_authorization,
            zone: c.limit_req.as_ref().and_then(|z| guard.req_zone(z)),
            refused: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(3600)).build(),
            verified: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(REMEMBERED).build(),
        }
    }

    pub(super) fn keeps_authorization(&self) -> bool {
        self.keep
    }

    pub(super) async fn check(&self, parts: &Parts, asker: &Asker<'_>, metrics: &Metrics) -> Result<(), Refusal> {
        let count = |result| metrics.auth(asker.route, "basic", result);
        if let Some(until) = self.refused.get(&asker.client) {
            let now = Instant::now();
            if until > now {
                count("limited");
                return Err(self.limited(until - now));
            }
        }
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            count("missing");
            return Err(self.challenge());
        };
        let key = keyed([value.as_bytes()]);
        if self.verified.contains_key(&key) {
            count("allowed");
            return Ok(());
        }
        let (before, _waiting) = Waiting::enter();
        if before >= MAX_WAITING * cores() {
            count("busy");
            tracing::warn!(target: "relais::auth", route = asker.route, "too many password checks waiting; 503");
            let busy = Refusal::new(Reason::AuthBasic, StatusCode::SERVICE_UNAVAILABLE);
            return Err(Refusal { retry_after: Some(1), ..busy });
        }
        if self.verify(value).await {
            self.verified.insert(key, ());
            count("allowed");
            return Ok(());
        }
        count("denied");
        tracing::info!(target: "relais::auth", client = %asker.client, route = asker.route, "wrong user or password");
        if let Some(zone) = &self.zone
            && let Err(refused) = zone.take(&Subject::new(asker.client, parts, asker.route), metrics, asker.route)
        {
            let wait = Duration::from_secs(refused.retry_after.unwrap_or(1));
            self.refused.insert(asker.client, Instant::now() + wait);
            return Err(self.limited(wait));
        }
        Err(self.challenge())
    }

    /// Whether `value` holds a user of the file and its password. Always
    /// verifies one hash, whatever is wrong with it.
    async fn verify(&self, value: &HeaderValue) -> bool {
        let (user, password) = credentials(value).unwrap_or_default();
        let (hash, known) = match self.users.get(user.as_str()) {
            Some(hash) => (hash.clone(), true),
            None => (self.stand_in.clone(), false),
        };
        let Ok(permit) = SLOTS.clone().acquire_owned().await else { return false };
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            matches(&hash, &password)
        });
        verified.await.unwrap_or(false) && known
    }

    fn challenge(&self) -> Refusal {
        Refusal { challenge: Some(self.challenge.clone()), ..Refusal::new(Reason::AuthBasic, StatusCode::UNAUTHORIZED) }
    }

    fn limited(&self, wait: Duration) -> Refusal {
        let status = self.zone.as_ref().map_or(StatusCode::TOO_MANY_REQUESTS, |z| z.config.status.0);
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Refusal { retry_after: Some(seconds.max(1)), ..Refusal::new(Reason::AuthBasic, status) }
    }
}

/// A verification waiting or running: counted down when dropped, a
/// cancelled request's too.
struct Waiting;

impl Waiting {
    /// This one counted; and how many there were before it.
    fn enter() -> (usize, Waiting) {
        (WAITING.fetch_add(1, Ordering::Relaxed), Waiting)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// User and password of `Basic <base64 of user:password>`; the password as
/// bytes (a browser may send Latin-1).
fn credentials(value: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let value = value.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Whether `password` is the one `hash` was made from (in constant time: the
/// crates compare so).
fn matches(hash: &Hash, password: &[u8]) -> bool {
    match hash.kind {
        HashKind::Bcrypt => bcrypt::verify(password, &hash.text).unwrap_or(false),
        HashKind::Argon2 => {
            use argon2::PasswordVerifier;
            argon2::PasswordHash::new(&hash.text)
                .is_ok_and(|h| argon2::Argon2::default().verify_password(password, &h).is_ok())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_basic_only() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(credentials(&v("Basic YW5uOnB3OjI=")), Some(("ann".into(), b"pw:2".to_vec())));
        assert_eq!(credentials(&v("basic  YW5uOnB3OjI=")), Some(("ann".into(), b"pw:2".to_vec())));
        assert_eq!(credentials(&v("Bearer YW5uOnB3OjI=")), None);
        assert_eq!(credentials(&v("Basic bm9jb2xvbg==")), None, "no colon");
    }

    #[test]
    fn both_kinds_verify() {
        let b = Hash { text: Arc::from(bcrypt::hash("pw", 4).unwrap().as_str()), kind: HashKind::Bcrypt };
        assert!(matches(&b, b"pw") && !matches(&b, b"px"));
        use argon2::PasswordHasher;
        let salt = argon2::password_hash::SaltString::from_b64("c29tZXNhbHQ").unwrap();
        let text = argon2::Argon2::default().hash_password(b"pw", &salt).unwrap().to_string();
        let a = Hash { text: Arc::from(text.as_str()), kind: HashKind::Argon2 };
        assert!(matches(&a, b"pw") && !matches(&a, b"px"));
    }
}

//! Active health checks (`health = { path, ... }`): each server of the pool is
//! asked for `path` every `interval`; `fails` failures in a row (a status out of
//! `expect_status`, a body without `expect_body`, an error, or no answer within
//! `timeout`) take it down, `passes` passes in a row bring it back. A server is
//! used only if both this and passive health say it is up.
//!
//! A server new to the pool (at start, after a reload that changed the pool,
//! or a name that now resolves to a new address) is `unchecked` and gets no
//! client request until its first check: a pass puts it in service at once, a
//! failure makes it `check_failed` (then `passes` passes bring it in). Checks
//! run as the pool is built and as soon as its members change; each server's
//! result counts as it comes, and a request that finds every server still
//! unchecked waits for those first results (at most `timeout`, see
//! `Upstream::first_checks`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{PoisonError, Weak};

use http::{Request, Uri, header};
use http_body_util::BodyExt;

use super::{Server, Upstream};
use crate::config::HealthCheck;
use crate::http::body::Body;

/// A body is read this far for `expect_body`.
const BODY_LIMIT: usize = 64 * 1024;

/// What the active checks say of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Checked {
    /// Passing (or the pool has no checks).
    Up = 0,
    /// New to the pool: no check has answered yet.
    Unchecked = 1,
    /// `fails` failures in a row (or a failed first check), not yet `passes` passes.
    Failed = 2,
}

/// A server's [`Checked`], shared between the check task and requests.
#[derive(Debug)]
pub(super) struct CheckState(AtomicU8);

impl CheckState {
    /// `Unchecked` in a pool with checks, else `Up`.
    pub(super) fn new(checked: bool) -> CheckState {
        CheckState(AtomicU8::new(if checked { Checked::Unchecked } else { Checked::Up } as u8))
    }

    pub(super) fn get(&self) -> Checked {
        match self.0.load(Ordering::Relaxed) {
            0 => Checked::Up,
            1 => Checked::Unchecked,
            _ => Checked::Failed,
        }
    }

    fn set(&self, state: Checked) {
        self.0.store(state as u8, Ordering::Relaxed);
    }
}

/// Checks every server of `upstream` until it is dropped (a reload that replaced it):
/// every `interval`, and at once when its members change.
pub(super) async fn run(upstream: Weak<Upstream>, check: HealthCheck) {
    let Some(due) = upstream.upgrade().map(|u| u.checks_due.clone()) else { return };
    let mut tick = tokio::time::interval(check.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = due.notified() => {}
        }
        let Some(up) = upstream.upgrade() else { return };
        let members = up.members();
        let rounds = members.servers.iter().map(|s| async {
            let result = probe(&up, s, &check).await;
            record(&up, s, result, &check);
        });
        futures_util::future::join_all(rounds).await;
    }
}

/// Counts one check's result, logs a change of state, and wakes the requests
/// waiting for a first result.
fn record(up: &Upstream, server: &Server, result: Result<(), String>, check: &HealthCheck) {
    let mut streak = server.check_streak.lock().unwrap_or_else(PoisonError::into_inner);
    let (fails, passes) = &mut *streak;
    let state = server.checked.get();
    match result {
        Ok(()) => {
            (*fails, *passes) = (0, *passes + 1);
            if state == Checked::Unchecked {
                server.checked.set(Checked::Up);
                tracing::info!(upstream = %up.name, server = %server.address, "first health check passed; server in service");
            } else if state == Checked::Failed && *passes >= check.passes {
                server.checked.set(Checked::Up);
                server.health.came_back();
                tracing::warn!(upstream = %up.name, server = %server.address, "health check passed; server up");
            }
        }
        Err(reason) => {
            (*fails, *passes) = (*fails + 1, 0);
            if state == Checked::Unchecked {
                server.checked.set(Checked::Failed);
                tracing::warn!(upstream = %up.name, server = %server.address, reason, "first health check failed; server kept out until it passes");
            } else if state == Checked::Up && *fails >= check.fails {
                server.checked.set(Checked::Failed);
                tracing::warn!(upstream = %up.name, server = %server.address, reason, "health check failed; server down");
            }
        }
    }
    drop(streak);
    up.checked.notify_waiters();
}

async fn probe(up: &Upstream, server: &Server, check: &HealthCheck) -> Result<(), String> {
    let uri = Uri::try_from(check.path.as_str()).map_err(|e| e.to_string())?;
    let mut req = Request::get(uri).body(Body::empty()).map_err(|e| e.to_string())?;
    let host = check.host.as_ref().map_or_else(|| server.host_value.clone(), |h| h.0.clone());
    req.headers_mut().insert(header::HOST, host);
    for (k, v) in &check.headers {
        req.headers_mut().insert(k.0.clone(), v.0.clone());
    }
    let asked = async {
        let res = up.request_on(server, req).await?;
        if !check.expect_status.contains(res.status()) {
            return Err(format!("status {}", res.status().as_u16()));
        }
        if let Some(want) = &check.expect_body {
            let body = http_body_util::Limited::new(res.into_body(), BODY_LIMIT).collect().await;
            let body = body.map_err(|e| e.to_string())?.to_bytes();
            if !String::from_utf8_lossy(&body).contains(want.as_str()) {
                return Err("body without expect_body".into());
            }
        }
        Ok(())
    };
    tokio::time::timeout(check.timeout.get(), asked).await.unwrap_or_else(|_| Err("timeout".into()))
}

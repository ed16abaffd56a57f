//! Active health checks (`health = { path, ... }`): each server of the pool is
//! asked for `path` every `interval`; `fails` failures in a row (a status out of
//! `expect_status`, a body without `expect_body`, an error, or no answer within
//! `timeout`) take it down, `passes` passes in a row bring it back. A server is
//! used only if both this and passive health say it is up. The first round runs
//! as the pool is built, so a dead server is known before clients are sent to it.

use std::sync::atomic::Ordering;
use std::sync::{PoisonError, Weak};

use http::{Request, Uri, header};
use http_body_util::BodyExt;

use super::{Server, Upstream};
use crate::body::Body;
use crate::config::HealthCheck;

/// A body is read this far for `expect_body`.
const BODY_LIMIT: usize = 64 * 1024;

/// Checks every server of `upstream` until it is dropped (a reload that replaced it).
pub async fn run(upstream: Weak<Upstream>, check: HealthCheck) {
    let mut tick = tokio::time::interval(check.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(up) = upstream.upgrade() else { return };
        let members = up.members();
        let probes = members.servers.iter().map(|s| probe(&up, s, &check));
        let results = futures_util::future::join_all(probes).await;
        for (server, result) in members.servers.iter().zip(results) {
            let down = server.checked_down.load(Ordering::Relaxed);
            let mut streak = server.check_streak.lock().unwrap_or_else(PoisonError::into_inner);
            let (fails, passes) = &mut *streak;
            match result {
                Ok(()) => {
                    (*fails, *passes) = (0, *passes + 1);
                    if down && *passes >= check.passes {
                        server.checked_down.store(false, Ordering::Relaxed);
                        server.health.came_back();
                        tracing::warn!(upstream = %up.name, server = %server.address, "health check passed; server up");
                    }
                }
                Err(reason) => {
                    (*fails, *passes) = (*fails + 1, 0);
                    if !down && *fails >= check.fails {
                        server.checked_down.store(true, Ordering::Relaxed);
                        tracing::warn!(upstream = %up.name, server = %server.address, reason, "health check failed; server down");
                    }
                }
            }
        }
    }
}

async fn probe(up: &Upstream, server: &Server, check: &HealthCheck) -> Result<(), String> {
    let uri = Uri::try_from(check.path.as_str()).map_err(|e| e.to_string())?;
    let mut req = Request::get(uri).body(Body::empty()).map_err(|e| e.to_string())?;
    let host = check.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or_else(|| server.host_value.clone());
    req.headers_mut().insert(header::HOST, host);
    for (k, v) in &check.headers {
        req.headers_mut().insert(k.0.clone(), v.0.clone());
    }
    let (lo, hi) = check.statuses().unwrap_or((200, 399));
    let asked = async {
        let res = up.request_on(server, req).await?;
        let status = res.status().as_u16();
        if !(lo..=hi).contains(&status) {
            return Err(format!("status {status}"));
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

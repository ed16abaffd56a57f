//! `auth_request`: before a request goes on, relais asks an auth upstream
//! (oauth2-proxy, Authelia, an application's own endpoint) with a bodiless
//! subrequest, as nginx's `auth_request` and Traefik's ForwardAuth do.
//!
//! The subrequest carries the original method and URI (`X-Original-Method`,
//! `X-Original-URI`, nginx's names, and `X-Forwarded-Method`, `X-Forwarded-Uri`,
//! Traefik's), `X-Forwarded-*` as a forwarded request gets them, and
//! the headers chosen (default: Authorization, Cookie, the request id). A 2xx
//! lets the request through with `copy_headers` taken from the answer (those
//! the client sent of the same names are always removed); 401 and 403 go to
//! the client (a 401 with the answer's `WWW-Authenticate`), as nginx does;
//! any other answer, or none, is a 500 and a log line.
//!
//! With `cache`, 2xx, 401 and 403 answers are remembered that long, found by
//! a keyed hash of the headers sent (but the request id, new each time) and
//! the original method, host and URI:
//! never shared between credentials, nor between URLs the auth upstream may
//! judge apart.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use super::{Asker, Refusal, keyed};
use crate::config::{AuthRequestConfig, Config};
use crate::http::body::Body;
use crate::metrics::{Metrics, Reason};
use crate::upstream::{Outgoing, Upstream};

static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
/// The same, under the names Traefik's ForwardAuth sends (Authelia reads these).
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// What is read of an answer's body before it is dropped (so that its
/// connection can be used again).
const BODY_READ: usize = 64 * 1024;

pub(super) struct Subrequest {
    upstream: Arc<Upstream>,
    method: Method,
    path: PathAndQuery,
    /// The request's headers sent with it.
    headers: Vec<HeaderName>,
    /// The answer's headers set on the request.
    copy: Vec<HeaderName>,
    /// `server.request_id`: sent, but new for every request, so no part of the key.
    request_id: Option<HeaderName>,
    answers: Option<moka::sync::Cache<[u8; 32], Arc<Answer>>>,
}

/// What the auth upstream said.
enum Answer {
    /// Through, with these headers (copied from the answer) set on the request.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// 401 (with its `WWW-Authenticate`) or 403.
    Deny(StatusCode, Option<HeaderValue>),
}

impl Subrequest {
    pub(super) fn new(c: &AuthRequestConfig, config: &Config, upstream: Arc<Upstream>) -> Subrequest {
        let request_id = config.server.request_id.0.clone();
        let headers = match &c.headers {
            Some(list) => list.iter().map(|n| n.0.clone()).collect(),
            None => [header::AUTHORIZATION, header::COOKIE].into_iter().chain(request_id.clone()).collect(),
        };
        let answers = c.cache.map(|d| moka::sync::Cache::builder().max_capacity(10_000).time_to_live(d.get()).build());
        Subrequest {
            upstream,
            method: c.method.0.clone(),
            path: c.path.0.clone(),
            headers,
            copy: c.copy_headers.iter().map(|n| n.0.clone()).collect(),
            request_id,
            answers,
        }
    }

    pub(super) async fn check(&self, parts: &mut Parts, asker: &Asker<'_>, metrics: &Metrics) -> Result<(), Refusal> {
        let mut sent = HeaderMap::new();
        for name in &self.headers {
            for value in parts.headers.get_all(name) {
                sent.append(name.clone(), value.clone());
            }
        }
        let uri = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let key = self.answers.as_ref().map(|_| {
            let host = parts.headers.get(header::HOST).map_or(&b""[..], HeaderValue::as_bytes);
            let fields = sent
                .iter()
                .filter(|(n, _)| self.request_id.as_ref() != Some(*n))
                .flat_map(|(n, v)| [n.as_str().as_bytes(), v.as_bytes()]);
            keyed([parts.method.as_str().as_bytes(), host, uri.as_bytes()].into_iter().chain(fields))
        });
        let remembered = key.and_then(|k| self.answers.as_ref()?.get(&k));
        let answer = match remembered {
            Some(answer) => answer,
            None => {
                let answer = Arc::new(self.ask(parts, sent, uri, asker).await.inspect_err(|_| {
                    metrics.auth(asker.route, "request", "error");
                })?);
                if let (Some(answers), Some(key)) = (&self.answers, key) {
                    answers.insert(key, answer.clone());
                }
                answer
            }
        };
        // The client's own values never reach the origin as the auth upstream's.
        for name in &self.copy {
            parts.headers.remove(name);
        }
        match &*answer {
            Answer::Allow(copied) => {
                for (name, value) in copied {
                    parts.headers.append(name.clone(), value.clone());
                }
                metrics.auth(asker.route, "request", "allowed");
                Ok(())
            }
            Answer::Deny(status, challenge) => {
                metrics.auth(asker.route, "request", "denied");
                let refusal = Refusal::new(Reason::AuthRequest, *status);
                Err(Refusal { challenge: challenge.clone(), ..refusal })
            }
        }
    }

    /// Sends the subrequest; a 500 for anything but 2xx, 401 and 403.
    async fn ask(
        &self,
        parts: &Parts,
        mut headers: HeaderMap,
        uri: &str,
        asker: &Asker<'_>,
    ) -> Result<Answer, Refusal> {
        let failed = || Refusal::new(Reason::AuthRequest, StatusCode::INTERNAL_SERVER_ERROR);
        let method = HeaderValue::from_str(parts.method.as_str()).map_err(|_| failed())?;
        let uri = HeaderValue::from_str(uri).map_err(|_| failed())?;
        headers.insert(X_ORIGINAL_METHOD.clone(), method.clone());
        headers.insert(X_FORWARDED_METHOD.clone(), method);
        headers.insert(X_ORIGINAL_URI.clone(), uri.clone());
        headers.insert(X_FORWARDED_URI.clone(), uri);
        for value in parts.headers.get_all(&crate::http::names::X_FORWARDED_FOR) {
            headers.append(crate::http::names::X_FORWARDED_FOR.clone(), value.clone());
        }
        (asker.forwarded)(&mut headers);
        let out = Outgoing {
            method: self.method.clone(),
            path: self.path.clone(),
            headers,
            server_host: true,
            body: Body::empty(),
            retryable: self.method.is_idempotent(),
            client: asker.client,
            interim: None,
        };
        let (res, server) = self.upstream.send(out).await.map_err(|e| {
            tracing::warn!(target: "relais::auth", route = asker.route, error = %e, "auth subrequest failed");
            failed()
        })?;
        let (head, body) = res.into_parts();
        // Read (a little of) the body so the connection can serve again.
        let _ =
            tokio::time::timeout(Duration::from_secs(5), http_body_util::Limited::new(body, BODY_READ).collect()).await;
        match head.status {
            s if s.is_success() => {
                let copied = self
                    .copy
                    .iter()
                    .flat_map(|name| head.headers.get_all(name).iter().map(move |v| (name.clone(), v.clone())))
                    .collect();
                Ok(Answer::Allow(copied))
            }
            StatusCode::UNAUTHORIZED => {
                Ok(Answer::Deny(head.status, head.headers.get(header::WWW_AUTHENTICATE).cloned()))
            }
            StatusCode::FORBIDDEN => Ok(Answer::Deny(head.status, None)),
            status => {
                tracing::warn!(target: "relais::auth", route = asker.route, %server, %status, "auth upstream answered neither 2xx, 401 nor 403");
                Err(failed())
            }
        }
    }
}

//! `POST /maintenance`: `{"on": true}` for every route, `{"on": true,
//! "route": "api"}` for one; the answer is the state after it.

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::json;

use super::{Answer, json_response};
use crate::http::body::Body;
use crate::proxy::Pipeline;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Switch {
    on: bool,
    route: Option<String>,
}

pub(super) async fn set(pipeline: &Pipeline, req: Request<Body>) -> Answer {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let body = Limited::new(req.into_body(), 4096)
        .collect()
        .await
        .map_err(|_| bad("body unreadable or over 4KiB".into()))?
        .to_bytes();
    let switch: Switch = serde_json::from_slice(&body).map_err(|e| {
        bad(format!("invalid maintenance request ({e}): send {{\"on\": true|false, \"route\": \"NAME\"}}"))
    })?;
    if let Some(route) = &switch.route
        && !pipeline.config.route_names().contains(route)
    {
        return Err((StatusCode::NOT_FOUND, format!("no route named {route:?}")));
    }
    let state = pipeline.maintenance.set(switch.route.as_deref(), switch.on);
    tracing::warn!(on = switch.on, route = switch.route.as_deref().unwrap_or("(all)"), "maintenance mode set");
    Ok(json_response(StatusCode::OK, json!(state)))
}

//! The admin API for a billing panel, on the HTTP listener:
//!
//! - `POST /api/disconnect` `{"user": "alice"}` or with `"session": "81a00003"`
//! - `POST /api/coa` `{"user": "alice", "rate_limit": "2M/10M"}` (optionally
//!   `"filter_id"` for generic NASes, `"session"`)
//!
//! Both need `Authorization: Bearer <http.admin_token>`; without a
//! configured token they answer 403. The answer lists one result per
//! session (`ack`, `nak` with its Error-Cause, `timeout`, ...); 404 when
//! the user has no open session. The work is done by the enforcement
//! thread, which owns a store connection.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::ControlState;
use crate::coa::Change;
use crate::server::jobs::Job;

/// What the handlers need: the token and the way to the enforcer.
pub struct Admin {
    pub token: Option<crate::config::SecretString>,
    pub jobs: crossbeam_channel::Sender<Job>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
    session: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CoaBody {
    user: String,
    session: Option<String>,
    rate_limit: String,
    filter_id: Option<String>,
}

pub fn routes(router: Router<Arc<ControlState>>) -> Router<Arc<ControlState>> {
    router
        .route("/api/disconnect", post(disconnect))
        .route("/api/coa", post(coa))
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

/// Checks the bearer token in constant time; the error is the answer.
fn authorize(admin: &Admin, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let Some(token) = &admin.token else {
        return Err((
            StatusCode::FORBIDDEN,
            "the admin API is disabled: set http.admin_token (SHARDIUS_HTTP_ADMIN_TOKEN)",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if given.as_bytes().ct_eq(token.expose().as_bytes()).into() {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
    }
}

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// The token first (a wrong one learns nothing about the body), then the
/// body; the error is the status and message to answer with.
fn accept<T>(
    state: &ControlState,
    headers: &HeaderMap,
    body: Body<T>,
) -> Result<T, (StatusCode, String)> {
    authorize(&state.admin, headers).map_err(|(code, message)| (code, message.to_owned()))?;
    body.map(|Json(b)| b)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.body_text()))
}

async fn disconnect(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
    body: Body<DisconnectBody>,
) -> Response {
    match accept(&state, &headers, body) {
        Ok(body) => run(&state, body.user, body.session, Change::Disconnect).await,
        Err((code, message)) => error(code, &message),
    }
}

async fn coa(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
    body: Body<CoaBody>,
) -> Response {
    let body = match accept(&state, &headers, body) {
        Ok(b) => b,
        Err((code, message)) => return error(code, &message),
    };
    if let Err(e) = crate::coa::validate_rate_limit(&body.rate_limit) {
        return error(StatusCode::BAD_REQUEST, &format!("rate_limit: {e}"));
    }
    let change = Change::Speed {
        rate: crate::policy::vendor_speed::Rate::from_rate_limit(&body.rate_limit)
            .unwrap_or_default(),
        rate_limit: body.rate_limit,
        filter_id: body.filter_id,
    };
    run(&state, body.user, body.session, change).await
}

async fn run(
    state: &ControlState,
    user: String,
    session: Option<String>,
    change: Change,
) -> Response {
    if user.is_empty() {
        return error(StatusCode::BAD_REQUEST, "user: must not be empty");
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = Job {
        user: user.clone(),
        session,
        unique_id: None,
        change,
        reply: Some(reply),
    };
    if state.admin.jobs.try_send(job).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many CoA requests queued; try again",
        );
    }
    match answer.await {
        Ok(Ok(reports)) if reports.is_empty() => error(
            StatusCode::NOT_FOUND,
            &format!("{user} has no open session"),
        ),
        Ok(Ok(reports)) => {
            let results: Vec<_> = reports.iter().map(|r| r.to_json()).collect();
            (StatusCode::OK, Json(json!({ "results": results }))).into_response()
        }
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}")),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "server shutting down"),
    }
}

//! Signing in: the session cookie, the CSRF header, the Origin check on login and signup, and the
//! login rate limit.

use super::{api_error, AppContext};
use crate::{same_secret, ApiError, AppState};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use conch_app::{Session, SESSION_DAYS};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) const SESSION_COOKIE: &str = "conch_session";
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// Failed logins allowed per username and per client address within [`LOGIN_WINDOW`].
pub(crate) const LOGIN_ATTEMPTS: usize = 5;
pub(crate) const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A signed-in request. Extracting it answers 401 without a live session, and 403 when a
/// state-changing request does not carry the session's CSRF token.
pub(crate) struct SignedIn(pub Session);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let app = state.app()?;
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(not_signed_in)?;
        let session = app
            .store
            .session(&token)
            .await
            .map_err(api_error)?
            .ok_or_else(not_signed_in)?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !same_secret(sent.as_bytes(), session.csrf_token.as_bytes()) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "missing or wrong X-CSRF-Token header; use the csrf_token from GET /api/me",
                ));
            }
        }
        Ok(SignedIn(session))
    }
}

pub(crate) fn error(status: StatusCode, code: &'static str, message: &str) -> ApiError {
    ApiError {
        status,
        message: message.to_string(),
        kind: "app_error",
        param: None,
        code: Some(code),
    }
}

fn not_signed_in() -> ApiError {
    error(StatusCode::UNAUTHORIZED, "not_signed_in", "not signed in")
}

/// The value of cookie `name`, if the request sends it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Whether the browser will keep a `Secure` cookie from this request: it does over HTTPS (also
/// behind a proxy that says so) and on loopback hosts, which browsers treat as secure; over plain
/// HTTP to a LAN address it would drop the cookie and nobody could sign in.
fn secure_context(headers: &HeaderMap) -> bool {
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    forwarded_https
        || name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `Set-Cookie` for a new session (or, with `None`, clearing it).
pub(crate) fn session_cookie(headers: &HeaderMap, token: Option<&str>) -> HeaderValue {
    let secure = if secure_context(headers) {
        "; Secure"
    } else {
        ""
    };
    let value = match token {
        Some(token) => format!(
            "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
            SESSION_DAYS * 24 * 3600
        ),
        None => format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&value).expect("cookie tokens are URL-safe base64")
}

/// Login and signup have no CSRF token yet; a cross-site form post shows itself by its Origin.
pub(crate) fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "this request came from another site (its Origin does not match the Host)",
        ));
    }
    Ok(())
}

/// The client's address when the server was started with connection info, else one shared key.
pub(crate) fn client_address(parts_extensions: &axum::http::Extensions) -> String {
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string())
}

/// Failed logins in the last [`LOGIN_WINDOW`], per username and per client address.
#[derive(Default)]
pub(crate) struct LoginLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    fn keys(username: &str, address: &str) -> [String; 2] {
        [
            format!("user:{}", username.to_lowercase()),
            format!("addr:{address}"),
        ]
    }

    /// How long until another attempt is allowed, if it is not now.
    pub(crate) fn blocked_for(&self, username: &str, address: &str) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut wait = None;
        for key in Self::keys(username, address) {
            if let Some(times) = failures.get_mut(&key) {
                while times.front().is_some_and(|&t| now - t >= LOGIN_WINDOW) {
                    times.pop_front();
                }
                if times.len() >= LOGIN_ATTEMPTS {
                    let until = times[times.len() - LOGIN_ATTEMPTS] + LOGIN_WINDOW;
                    let w = until.saturating_duration_since(now);
                    wait = Some(wait.map_or(w, |old: Duration| old.max(w)));
                }
            }
        }
        wait
    }

    pub(crate) fn record_failure(&self, username: &str, address: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Bound memory under a flood of distinct usernames: forget keys whose window passed.
        if failures.len() > 10_000 {
            failures.retain(|_, times| times.back().is_some_and(|&t| now - t < LOGIN_WINDOW));
        }
        for key in Self::keys(username, address) {
            let times = failures.entry(key).or_default();
            times.push_back(now);
            while times.len() > LOGIN_ATTEMPTS {
                times.pop_front();
            }
        }
    }

    pub(crate) fn record_success(&self, username: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&format!("user:{}", username.to_lowercase()));
    }
}

pub(crate) fn too_many_attempts(wait: Duration) -> Response {
    let seconds = wait.as_secs().max(1);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({ "error": { "message": format!("too many failed sign-ins; try again in {seconds} seconds"), "type": "app_error", "param": null, "code": "rate_limited" } })),
    )
        .into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&seconds.to_string()).expect("digits"),
    );
    response
}

impl AppContext {
    pub(crate) fn limiter(&self) -> &LoginLimiter {
        &self.limiter
    }
}

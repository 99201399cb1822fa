//! A provider's word is believed only when it is signed. Every request to a
//! path under `/webhooks/` must carry a valid `x-provider-signature` for its
//! exact body (`wire::verify`, the same check the gateway's edge makes), or it
//! is refused with 401 before any handler runs: a service's port is reachable
//! by anything on the machine, so the gateway cannot be the only check.
//!
//! The secret is the service's `WEBHOOK_SECRET`. A service without one
//! believes no webhook at all; one with webhook routes requires it at start-up.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The largest webhook body read before it is refused (a provider's
/// notification is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// Whether `path` is a webhook route (or anything under one), by its raw
/// segments: `/webhooks`, `/webhooks/...`, and the same with doubled slashes.
pub fn is_webhook_path(path: &str) -> bool {
    path.split('/').find(|s| !s.is_empty()).is_some_and(|first| first.eq_ignore_ascii_case("webhooks"))
}

/// Middleware: refuse a webhook whose signature is missing, malformed, stale
/// or does not match its body; pass a good one on with its body intact.
pub async fn guard(secret: Option<std::sync::Arc<[u8]>>, request: Request, next: Next) -> Response {
    if !is_webhook_path(request.uri().path()) {
        return next.run(request).await;
    }
    let Some(secret) = secret else {
        return ApiError::Unauthorized(
            "this service has no WEBHOOK_SECRET, so it believes no webhook; set the secret its providers sign with"
                .into(),
        )
        .into_response();
    };
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::PayloadTooLarge(format!("a webhook body is at most {MAX_BODY} bytes")).into_response();
        }
    };
    let signature = parts.headers.get(wire::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(e) = wire::verify(&secret, signature, &bytes, now) {
        let provider = parts.uri.path().trim_start_matches('/').split('/').nth(1).unwrap_or("a provider").to_string();
        return ApiError::Unauthorized(format!(
            "webhook from `{provider}` refused: {e}; webhooks are believed only when signed by the provider \
             (`{}: t=<unix>,v1=<HMAC-SHA256 of \"<t>.<body>\">`)",
            wire::SIGNATURE_HEADER
        ))
        .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_paths_are_found_however_they_are_written() {
        for path in ["/webhooks/payment-scheme", "/webhooks", "//webhooks/x", "/WEBHOOKS/x", "/webhooks/"] {
            assert!(is_webhook_path(path), "{path}");
        }
        for path in ["/", "/payments", "/payments/webhooks", "/webhooksx/y", "/events"] {
            assert!(!is_webhook_path(path), "{path}");
        }
    }
}

//! One error type for every handler: it becomes `application/problem+json`
//! (RFC 9457). The client sees a safe title and detail; the log sees the cause.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed (bad JSON, bad header, bad query).
    #[error("{detail}")]
    BadRequest { kind: &'static str, detail: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// Well-formed but refused by a business rule (insufficient funds, wrong state).
    #[error("{detail}")]
    Unprocessable { kind: &'static str, detail: String },
    /// The request conflicts with what is already stored (idempotency key reuse).
    #[error("{detail}")]
    Conflict { kind: &'static str, detail: String },
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Missing or wrong credentials (a webhook's signature).
    #[error("{0}")]
    Unauthorized(String),
    /// An upstream service did not answer (the gateway's view).
    #[error("{0}")]
    BadGateway(String),
    /// A body larger than the resource takes.
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest { kind, detail: detail.into() }
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }
    pub fn unprocessable(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::Unprocessable { kind, detail: detail.into() }
    }
    pub fn conflict(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::Conflict { kind, detail: detail.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest { kind, .. } | Self::Unprocessable { kind, .. } | Self::Conflict { kind, .. } => kind,
            Self::NotFound { .. } => "not-found",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::Unavailable(_) => "unavailable",
            Self::Unauthorized(_) => "unauthorized",
            Self::BadGateway(_) => "bad-gateway",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // Constraint violations are the client's doing (a race lost, a rule broken):
        // they are 409/422, never 500.
        // Every connection of the pool stayed busy for the whole acquire
        // timeout: the service is overloaded, not broken; the client may
        // try again (503 with Retry-After), and the log says so.
        if let sqlx::Error::PoolTimedOut = err {
            tracing::warn!("no database connection came free within the acquire timeout");
            return Self::Unavailable("all of the service's database connections are busy; try again".into());
        }
        if let sqlx::Error::Database(db) = &err {
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => {
                    return Self::conflict("conflict", "the resource already exists");
                }
                sqlx::error::ErrorKind::CheckViolation => {
                    return Self::unprocessable("rule-violated", "the request breaks a rule of this resource");
                }
                _ => {}
            }
            // Class 22, data exceptions: a value PostgreSQL cannot take (a NUL
            // in text, a number out of range, a string too long). Only input
            // reaches the database unchecked this way: the client's doing.
            if db.code().is_some_and(|code| code.starts_with("22")) {
                tracing::info!(error = %db, "a value the database refused");
                return Self::unprocessable(
                    "invalid-value",
                    "a value in the request is out of range or holds characters that cannot be stored",
                );
            }
        }
        Self::Internal(err.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                "the service failed to handle the request; its log has the cause".to_string()
            }
            other => {
                tracing::info!(status = status.as_u16(), problem = %other, "request refused");
                other.to_string()
            }
        };
        let body = json!({
            "type": format!("urn:problem:bank:{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // What it waits on (a dependency, a connection) is usually back
            // within a second; a client may retry after it (RFC 9110 10.2.3).
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// A typed body (an event's payload, a request to a provider) as JSON; one
/// that cannot be written is the service's own fault.
pub fn to_json(value: &impl serde::Serialize) -> ApiResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_with_no_free_connection_is_busy_not_broken() {
        let response = ApiError::from(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let refused = ApiError::bad_request("bad", "no").into_response();
        assert!(refused.headers().get(header::RETRY_AFTER).is_none());
    }
}

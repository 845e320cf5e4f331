//! The one table from errors to HTTP statuses. Every error response is
//! `{"error": {"code": "...", "message": "..."}}`; 5xx messages never carry internal details.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::PayloadError;
use crate::engine::EngineError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs `Authorization: Bearer <token>` with a valid admin or reader token",
        )
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a reader token can only read; this needs the admin token",
        )
    }

    pub fn too_many_requests(retry_after_s: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_s),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many deliveries for this integration; retry after {retry_after_s} s"),
            )
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    /// Unknown and revoked webhook tokens get the same answer, so that a probe learns nothing.
    pub fn unknown_webhook() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no active webhook at this URL")
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    }

    fn internal(code: &'static str, status: StatusCode) -> ApiError {
        ApiError::new(status, code, "the server could not complete the request; see its log")
    }
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable and machine-readable, e.g. `missing_field`.
    code: &'a str,
    /// For people: names the field, position or rule that was broken.
    message: &'a str,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(ErrorBody { error: ErrorDetail { code: self.code, message: &self.message } })
    }
}

impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> ApiError {
        let status = if e.is_schema_violation() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::NotFound(what) => ApiError::not_found(what),
            EngineError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            EngineError::Invalid { .. } => ApiError::unprocessable("invalid_field", e.to_string()),
            EngineError::IdempotencyKeyReused(_) => {
                ApiError::unprocessable("idempotency_key_reused", e.to_string())
            }
            EngineError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string())
            }
            EngineError::Storage(_) | EngineError::Corrupt(_) => {
                tracing::error!(error = %e, "request failed in storage");
                ApiError::internal("storage_error", StatusCode::INTERNAL_SERVER_ERROR)
            }
            EngineError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service is not accepting writes; see its log",
            ),
        }
    }
}

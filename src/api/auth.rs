//! Bearer-token authentication and the two scopes: the admin token may do everything; reader
//! tokens (issued with `POST /v1/tokens`) may only read.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::engine::hash_token;

/// Who the bearer token says the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Caller {
    Admin,
    Reader,
}

fn caller(req: &HttpRequest) -> Option<Caller> {
    let state = req.app_data::<web::Data<AppState>>().expect("AppState is registered");
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)?;
    caller_for_token(state, token)
}

/// Who `token` belongs to, if anyone: the admin, a reader, or nobody (unknown or revoked).
pub(super) fn caller_for_token(state: &AppState, token: &str) -> Option<Caller> {
    // Tokens are compared by their SHA-256 only. The admin hash is compared in constant time;
    // reader tokens are looked up by hash, which reveals nothing usable about the token itself.
    let hash = hash_token(token);
    if bool::from(hash.0.ct_eq(&state.admin_token_hash.0)) {
        Some(Caller::Admin)
    } else if state.engine.state().api_token_by_hash(&hash).is_some() {
        Some(Caller::Reader)
    } else {
        None
    }
}

/// In a handler's arguments: the request carried the admin token. A reader token gets 403.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match caller(req) {
            Some(Caller::Admin) => Ok(Admin),
            Some(Caller::Reader) => Err(ApiError::forbidden()),
            None => Err(ApiError::unauthorized()),
        })
    }
}

/// In a handler's arguments: the request carried the admin token or a reader token.
pub struct Reader;

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = Ready<Result<Reader, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match caller(req) {
            Some(_) => Ok(Reader),
            None => Err(ApiError::unauthorized()),
        })
    }
}

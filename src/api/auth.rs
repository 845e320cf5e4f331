//! Bearer-token authentication of admin requests.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::engine::hash_token;

/// Present in a handler's arguments: the request carried the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState is registered");
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // Hashes are compared, in constant time, so neither the token's length nor a matching
        // prefix shows in the response time.
        let ok = presented
            .is_some_and(|token| bool::from(hash_token(token).0.ct_eq(&state.admin_token_hash.0)));
        ready(if ok {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized())
        })
    }
}

//! Who is using the console: the sign-in cookie, the CSRF token derived from it, the checks on
//! every form submission, and the console's error pages.

use std::borrow::Cow;
use std::fmt::Write;
use std::future::{ready, Ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::super::auth::{caller_for_token, Caller};
use super::super::{ApiError, AppState};
use super::views;

/// The cookie that carries the signed-in token. It is HttpOnly (page scripts cannot read it),
/// SameSite=Strict (no other site can make the browser send it) and scoped to `/console`, so the
/// JSON API, which wants a bearer header, never sees it.
pub const SESSION_COOKIE: &str = "incidentd_session";
/// Remembers the name typed into the last acknowledgement or note, to fill in the next form.
pub const NAME_COOKIE: &str = "incidentd_name";
const COOKIE_PATH: &str = "/console";

/// A signed-in browser: its role and the CSRF token its forms must carry.
pub struct Session {
    pub admin: bool,
    pub csrf: String,
    /// The name remembered from the last action, if any.
    pub name: Option<String>,
}

impl Session {
    /// Refuses a form whose CSRF token is not this session's. The token is derived from the
    /// session's own secret, so a page on another site cannot know it.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), PageError> {
        if bool::from(self.csrf.as_bytes().ct_eq(submitted.as_bytes())) {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                "csrf_mismatch",
                "the form's CSRF token is missing or stale; reload the page and submit it again",
            ))
        }
    }

    /// Refuses an admin form from anyone but the admin, or without this session's CSRF token.
    pub fn check_admin_form(&self, csrf: &str) -> Result<(), PageError> {
        self.require_admin()?;
        self.check_csrf(csrf)
    }

    /// Refuses anyone but the admin.
    pub fn require_admin(&self) -> Result<(), PageError> {
        if self.admin {
            Ok(())
        } else {
            Err(PageError::from(ApiError::forbidden()))
        }
    }
}

/// The CSRF token of a session: SHA-256 over a fixed label and the session's token. It is stable
/// for the session, needs no server-side storage, and reveals nothing about the token.
pub fn csrf_token(token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"incidentd console csrf\0");
    hash.update(token.as_bytes());
    hex::encode(hash.finalize())
}

/// Whether a state-changing request comes from a page of this console. Browsers send `Origin`
/// (and `Sec-Fetch-Site`) with every form POST; a request from another site is refused even
/// before its CSRF token is looked at. The origin may be the configured public URL's (behind a
/// proxy) or the host the request was sent to: a browser on another site cannot choose either.
fn same_origin(req: &HttpRequest) -> bool {
    let headers = req.headers();
    let text = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    if text("sec-fetch-site").is_some_and(|site| site == "cross-site" || site == "same-site") {
        return false;
    }
    let Some(origin) = text("origin") else {
        return true;
    };
    let state = req.app_data::<web::Data<AppState>>().expect("AppState is registered");
    let host = req.connection_info().host().to_owned();
    origin.split_once("://").is_some_and(|(_, authority)| authority == host)
        || origin_of(&state.public_url) == Some(origin)
}

/// `scheme://authority` of a URL.
fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    Some(&url[..scheme.len() + 3 + authority.len()])
}

/// Refuses a request that [`same_origin`] does not accept.
pub fn require_same_origin(req: &HttpRequest) -> Result<(), PageError> {
    if same_origin(req) {
        Ok(())
    } else {
        Err(PageError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "this form was submitted from another site",
        ))
    }
}

pub fn signed_in(req: &HttpRequest) -> Option<(Caller, String)> {
    let state = req.app_data::<web::Data<AppState>>().expect("AppState is registered");
    let token = req.cookie(SESSION_COOKIE)?.value().to_owned();
    caller_for_token(state, &token).map(|caller| (caller, token))
}

impl FromRequest for Session {
    type Error = PageError;
    type Future = Ready<Result<Session, PageError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                require_same_origin(req)?;
            }
            let Some((caller, token)) = signed_in(req) else {
                return Err(if req.method() == Method::GET {
                    PageError::sign_in(req)
                } else {
                    PageError::from(ApiError::unauthorized())
                        .with_message("sign in again: the console's session has ended")
                });
            };
            Ok(Session {
                admin: caller == Caller::Admin,
                csrf: csrf_token(&token),
                name: req.cookie(NAME_COOKIE).map(|c| c.value().to_owned()),
            })
        })())
    }
}

/// A console cookie with the attributes every console cookie shares. `Secure` when the browser
/// reached the console over HTTPS, or when the configured public URL is HTTPS (a TLS proxy in
/// front); over plain HTTP on loopback or a trusted network the console still works.
fn cookie(req: &HttpRequest, name: &'static str, value: &str) -> Cookie<'static> {
    let state = req.app_data::<web::Data<AppState>>().expect("AppState is registered");
    let secure =
        req.connection_info().scheme() == "https" || state.public_url.starts_with("https://");
    Cookie::build(name, value.to_owned())
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish()
}

/// A `Set-Cookie` header for a console cookie. The value is percent-encoded, as actix-web decodes
/// cookies it receives, so that a name with `;` or `%` comes back as typed.
pub fn set_cookie(
    req: &HttpRequest,
    name: &'static str,
    value: &str,
) -> (header::HeaderName, String) {
    (header::SET_COOKIE, cookie(req, name, value).encoded().to_string())
}

/// The same header, expiring the cookie: how sign-out removes it.
pub fn removal(req: &HttpRequest, name: &'static str) -> (header::HeaderName, String) {
    let mut gone = cookie(req, name, "");
    gone.make_removal();
    (header::SET_COOKIE, gone.to_string())
}

/// Where to go after signing in: only a console page of this server, never another site.
///
/// A `Location` header may carry only visible ASCII, so spaces and non-ASCII characters (a link
/// to `/console/é`) are percent-encoded as UTF-8, which leads the browser to the same page. A
/// target with control characters is not followed at all: they have no place in a link, and a
/// line break would end the header.
pub fn safe_next(next: Option<&str>) -> Cow<'_, str> {
    match next {
        Some(next)
            if next.starts_with("/console/")
                && !next.contains('\\')
                && !next.chars().any(char::is_control) =>
        {
            if next.bytes().all(|b| b.is_ascii_graphic()) {
                return Cow::Borrowed(next);
            }
            // Byte by byte: every byte of a non-ASCII character is outside ASCII too.
            let mut encoded = String::with_capacity(next.len() * 3);
            for b in next.bytes() {
                if b.is_ascii_graphic() {
                    encoded.push(char::from(b));
                } else {
                    write!(encoded, "%{b:02X}").expect("writing to a String cannot fail");
                }
            }
            Cow::Owned(encoded)
        }
        _ => Cow::Borrowed("/console/incidents"),
    }
}

/// A console error: the same status, code and message as the JSON API would give, shown as a
/// page. Clients that do not accept HTML get the API's JSON body instead (see [`negotiate`]).
#[derive(Debug)]
pub struct PageError {
    error: ApiError,
    /// For a page that needs a session: where to come back after signing in.
    sign_in_then: Option<String>,
}

impl PageError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> PageError {
        PageError::from(ApiError::new(status, code, message))
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> PageError {
        PageError::from(ApiError::not_found(what.to_string()))
    }

    fn sign_in(req: &HttpRequest) -> PageError {
        let target = match req.query_string() {
            "" => req.path().to_owned(),
            query => format!("{}?{query}", req.path()),
        };
        PageError { sign_in_then: Some(target), ..PageError::from(ApiError::unauthorized()) }
    }

    fn with_message(mut self, message: &str) -> PageError {
        self.error.message = message.to_owned();
        self
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> PageError {
        PageError { error, sign_in_then: None }
    }
}

impl From<crate::engine::EngineError> for PageError {
    fn from(e: crate::engine::EngineError) -> PageError {
        PageError::from(ApiError::from(e))
    }
}

impl From<actix_web::error::BlockingError> for PageError {
    fn from(e: actix_web::error::BlockingError) -> PageError {
        PageError::from(super::super::handlers::blocking(e))
    }
}

/// The API error a page error stands for, kept on the response so that [`negotiate`] can answer
/// non-browser clients with JSON.
#[derive(Clone)]
struct JsonFallback(ApiError);

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.error.status
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        if let Some(target) = &self.sign_in_then {
            let query = serde_urlencoded::to_string([("next", target)]).unwrap_or_default();
            let location = format!("/console/sign-in?{query}");
            return HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish();
        }
        let mut response = HttpResponse::build(self.error.status)
            .content_type("text/html; charset=utf-8")
            .body(views::error_page(&self.error).into_string());
        response.extensions_mut().insert(JsonFallback(self.error.clone()));
        response
    }
}

/// Middleware of the console scope: an error page asked for by a client that does not accept
/// HTML (a script, `curl`) becomes the API's JSON error body, so every client gets errors it can
/// read.
pub async fn negotiate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let response = next.call(req).await?.map_into_boxed_body();
    if wants_html {
        return Ok(response);
    }
    let fallback = response.response().extensions().get::<JsonFallback>().cloned();
    Ok(match fallback {
        Some(JsonFallback(error)) => response.into_response(error.error_response()),
        None => response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_pages_are_followed_after_sign_in() {
        for (next, expected) in [
            (None, "/console/incidents"),
            (Some("/console/incidents/1?x=2"), "/console/incidents/1?x=2"),
            (Some("https://evil.example/console/"), "/console/incidents"),
            (Some("//evil.example/console/"), "/console/incidents"),
            (Some("/console/\\evil"), "/console/incidents"),
            (Some("/console/x\r\nSet-Cookie: a=b"), "/console/incidents"),
            (Some("/v1/events"), "/console/incidents"),
            (Some("/console/é?q=a b"), "/console/%C3%A9?q=a%20b"),
            (Some("/console/%C3%A9"), "/console/%C3%A9"),
        ] {
            assert_eq!(safe_next(next), expected);
        }
    }

    #[test]
    fn csrf_tokens_are_stable_per_session_and_differ_between_sessions() {
        let (a, b) = (csrf_token("adm_one"), csrf_token("rdr_two"));
        assert_ne!(a, b);
        assert_eq!(a, csrf_token("adm_one"));
        assert!(a.len() == 64 && a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
    }
}

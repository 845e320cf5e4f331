//! The OpenAPI 3 description of the API, generated from the handlers' and DTOs' own annotations
//! and served at `GET /openapi.json`; `docs/openapi.json` is a copy kept in sync by a test.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "incidentd",
        description = "Event-sourced incident engine for Postman monitor webhooks. Every error is \
            {\"error\": {\"code\", \"message\"}}. Admin routes need the admin token; reads also \
            accept a reader token."
    ),
    paths(
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::create_integration,
        handlers::list_integrations,
        handlers::revoke_integration,
        handlers::rotate_integration,
        handlers::deliveries,
        handlers::create_token,
        handlers::list_tokens,
        handlers::revoke_token,
        handlers::ingest,
        handlers::list_incidents,
        handlers::get_incident,
        handlers::acknowledge,
        handlers::add_note,
        handlers::list_monitors,
        handlers::get_monitor,
        handlers::monitor_history,
        handlers::list_events,
        handlers::state_at,
        handlers::replay,
        handlers::verify,
    ),
    // Query parameter types are not collected from the paths; name them here.
    components(schemas(handlers::StatusFilter)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the routes' `security` refers to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The document as served and as checked in: pretty JSON with a final newline.
pub fn document() -> String {
    let mut json = ApiDoc::openapi().to_pretty_json().expect("the document serializes");
    json.push('\n');
    json
}

//! The web console: server-rendered pages over the same engine as the JSON API, for auditors
//! (reader token) and admins. Every asset is compiled in; pages work without JavaScript.

mod report;
mod session;
mod views;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::DefaultHeaders;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;

use super::auth::caller_for_token;
use super::handlers::{ndjson_export, page_limit, stored_run, timeline_entries, StatusFilter};
use super::AppState;
use crate::domain::{Incident, IncidentId, IntegrationId, MonitorKey, MonitorUid, Seq};
use crate::engine::EngineError;
use report::{incident_in_range, parse_time_input, run_in_range, summarize, Range, RunPoint};
use session::{PageError, Session, NAME_COOKIE, SESSION_COOKIE};
use views::Viewer;

type Data = web::Data<AppState>;
type Page = Result<HttpResponse, PageError>;

/// Runs drawn in a monitor page's strip.
const STRIP_RUNS: usize = 120;
/// Incidents listed on a monitor page; the rest are a link to the filtered incident list away.
const MONITOR_INCIDENTS: usize = 50;
const MAX_PAGE: usize = 1_000;
const MONITORS_PAGE: usize = 100;

const STYLESHEET: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// Pages may load only their own compiled-in stylesheet and script, may not be framed, and send
/// forms only to this console.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    let headers = DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` with
        // form posts, and the same-origin check would refuse the console's own forms.
        .add((header::REFERRER_POLICY, "same-origin"))
        // Pages carry incident data and, once, webhook URLs: no cache may keep them.
        .add((header::CACHE_CONTROL, "no-store"));
    cfg.service(web::resource("/").route(web::get().to(home))).service(
        web::scope("/console")
            .wrap(actix_web::middleware::from_fn(session::negotiate))
            .wrap(actix_web::middleware::from_fn(server_timing))
            .wrap(headers)
            .app_data(web::FormConfig::default().limit(64 * 1024).error_handler(|e, _| {
                PageError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_form",
                    format!("the form could not be read: {e}"),
                )
                .into()
            }))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                PageError::bad_request(format!("invalid query string: {e}")).into()
            }))
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| PageError::not_found(format!("page ({e})")).into()),
            )
            .route("", web::get().to(home))
            .route("/", web::get().to(home))
            .route("/assets/{name}", web::get().to(asset))
            .route("/sign-in", web::get().to(sign_in_form))
            .route("/sign-in", web::post().to(sign_in))
            .route("/sign-out", web::post().to(sign_out))
            .route("/incidents", web::get().to(incidents))
            .route("/incidents/{id}", web::get().to(incident))
            .route("/incidents/{id}/acknowledge", web::post().to(acknowledge))
            .route("/incidents/{id}/notes", web::post().to(add_note))
            .route("/monitors", web::get().to(monitors))
            .route("/monitors/{integration}", web::get().to(monitor_by_query))
            .route("/monitors/{integration}/{uid}", web::get().to(monitor))
            .route("/integrations", web::get().to(integrations))
            .route("/integrations", web::post().to(create_integration))
            .route("/integrations/{id}/rotate", web::post().to(rotate_integration))
            .route("/integrations/{id}/revoke", web::get().to(confirm_revoke))
            .route("/integrations/{id}/revoke", web::post().to(revoke_integration))
            .route("/events/{seq}", web::get().to(raw_event))
            .route("/audit", web::get().to(audit))
            .route("/audit/verify", web::post().to(verify))
            .route("/audit/replay", web::post().to(replay))
            .route("/export.ndjson", web::get().to(export))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(PageError::not_found("page"))
            })),
    );
}

/// Adds `Server-Timing: page;dur=<ms>`: the time from the request reaching the console to its
/// answer being ready (pages are rendered whole before they are sent). Browsers' developer tools
/// and `examples/console_pages.rs` read it.
async fn server_timing(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let mut response = next.call(req).await?;
    let timing = format!("page;dur={:.3}", started.elapsed().as_secs_f64() * 1000.0);
    if let Ok(value) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert(HeaderName::from_static("server-timing"), value);
    }
    Ok(response)
}

fn html(markup: Markup) -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(markup.into_string())
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

fn viewer(session: &Session) -> Viewer<'_> {
    Viewer { admin: session.admin, csrf: &session.csrf }
}

async fn home() -> HttpResponse {
    see_other("/console/incidents")
}

async fn asset(name: web::Path<String>) -> Page {
    let (body, content_type) = match name.as_str() {
        "console.css" => (STYLESHEET, "text/css; charset=utf-8"),
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return Err(PageError::not_found(format!("asset {name}"))),
    };
    // Assets change only with the binary; an hour of caching spares every page load a request.
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")))
        .body(body))
}

#[derive(Deserialize)]
struct SignInTarget {
    next: Option<String>,
}

async fn sign_in_form(req: HttpRequest, query: web::Query<SignInTarget>) -> HttpResponse {
    let next = session::safe_next(query.next.as_deref());
    if session::signed_in(&req).is_some() {
        return see_other(&next);
    }
    html(views::sign_in(&next, None))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
    next: Option<String>,
}

async fn sign_in(req: HttpRequest, state: Data, form: web::Form<SignIn>) -> Page {
    // Without this, another site could sign a visitor in under a token of its choosing.
    session::require_same_origin(&req)?;
    let next = session::safe_next(form.next.as_deref());
    let token = form.token.trim();
    if caller_for_token(&state, token).is_none() {
        let page = views::sign_in(&next, Some("That token is not valid, or it has been revoked."));
        return Ok(HttpResponse::Unauthorized()
            .content_type("text/html; charset=utf-8")
            .body(page.into_string()));
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next.as_ref()))
        .insert_header(session::set_cookie(&req, SESSION_COOKIE, token))
        .finish())
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// Signs out. Like every other form, it is refused when it comes from another site, so that no
/// other site can sign a visitor out. A session that has already ended (its token revoked, or no
/// cookie at all) is then signed out without a CSRF check: its pages can no longer show the token,
/// and the visitor must still be able to remove the cookie from their own browser.
async fn sign_out(req: HttpRequest, session: Option<Session>, form: web::Form<CsrfOnly>) -> Page {
    // `Option<Session>` turns every refusal of the extractor into `None`, the cross-origin one
    // included, so the origin is checked here first.
    session::require_same_origin(&req)?;
    if let Some(session) = session {
        session.check_csrf(&form.csrf)?;
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/sign-in"))
        .append_header(session::removal(&req, SESSION_COOKIE))
        .append_header(session::removal(&req, NAME_COOKIE))
        .finish())
}

#[derive(Deserialize)]
struct IncidentQuery {
    #[serde(default)]
    status: String,
    /// Part of a monitor's name or uid, in any case.
    #[serde(default)]
    monitor: String,
    /// One monitor exactly, as the monitor page links to its incidents.
    #[serde(default)]
    monitor_uid: String,
    #[serde(default)]
    integration_id: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    cursor: Option<u64>,
    limit: Option<usize>,
}

/// The status filter of the list form: empty for any status, else what the API accepts.
fn status_filter(raw: &str) -> Result<Option<StatusFilter>, PageError> {
    use serde::de::IntoDeserializer;
    if raw.is_empty() {
        return Ok(None);
    }
    let parsed: Result<StatusFilter, serde::de::value::Error> =
        StatusFilter::deserialize(raw.into_deserializer());
    parsed.map(Some).map_err(|e| PageError::bad_request(format!("status: {e}")))
}

/// Whether a monitor's name or uid contains `needle`, ignoring case.
fn matches_monitor(needle: &str, uid: &MonitorUid, name: Option<&str>) -> bool {
    let needle = needle.trim().to_lowercase();
    needle.is_empty()
        || uid.as_str().to_lowercase().contains(&needle)
        || name.is_some_and(|n| n.to_lowercase().contains(&needle))
}

async fn incidents(session: Session, state: Data, query: web::Query<IncidentQuery>) -> Page {
    let status = status_filter(&query.status)?;
    let from = parse_time_input(&query.from, false).map_err(PageError::bad_request)?;
    let to = parse_time_input(&query.to, true).map_err(PageError::bad_request)?;
    // Up to 1,000 a page, twice the API's limit: a person scrolls one long page more easily than
    // they follow twenty links.
    let limit = page_limit(query.limit, MAX_PAGE)?;
    let integration = match query.integration_id.as_str() {
        "" => None,
        raw => Some(integration_id(raw).map_err(|_| {
            PageError::bad_request(format!("integration_id {raw:?} is not an integration id"))
        })?),
    };
    let (shown, more) = {
        let projection = state.engine.state();
        // Newest first, and opening times follow the log's order: the scan can stop at the first
        // incident opened before `from`.
        let mut matching = projection
            .incidents_newest_first(query.cursor.map(Seq))
            .take_while(|i| from.is_none_or(|from| i.opened_at >= from))
            .filter(|i| {
                status.is_none_or(|s| s.admits(i.status))
                    && to.is_none_or(|to| i.opened_at <= to)
                    && integration.is_none_or(|id| id == i.integration_id)
                    && (query.monitor_uid.is_empty() || query.monitor_uid == i.monitor_uid.as_str())
                    && matches_monitor(&query.monitor, &i.monitor_uid, i.monitor_name.as_deref())
            });
        let shown: Vec<Incident> = matching.by_ref().take(limit).cloned().collect();
        (shown, matching.next().is_some())
    };
    let older = if more { shown.last().map(|i| i.opened_seq) } else { None };
    let filters = views::IncidentFilters {
        status: &query.status,
        monitor: &query.monitor,
        monitor_uid: &query.monitor_uid,
        integration_id: &query.integration_id,
        from: &query.from,
        to: &query.to,
        limit,
    };
    Ok(html(views::incidents(
        &viewer(&session),
        &filters,
        &shown,
        older,
        query.cursor.is_some(),
        Utc::now(),
    )))
}

fn incident_id(raw: &str) -> Result<IncidentId, PageError> {
    raw.parse().map_err(|_| PageError::not_found(format!("incident {raw}")))
}

async fn incident(session: Session, state: Data, path: web::Path<String>) -> Page {
    let id = incident_id(&path)?;
    let engine = state.engine.clone();
    let (incident, events) = web::block(move || engine.incident_with_events(id))
        .await??
        .ok_or_else(|| PageError::not_found(format!("incident {id}")))?;
    let timeline = timeline_entries(&incident, &events)?;
    let data = views::IncidentPage {
        incident: &incident,
        timeline: &timeline,
        name: session.name.as_deref(),
        now: Utc::now(),
    };
    Ok(html(views::incident(&viewer(&session), &data)))
}

#[derive(Deserialize)]
struct Acknowledge {
    #[serde(default)]
    csrf: String,
    by: String,
    #[serde(default)]
    note: String,
}

/// A textarea's text with every line break as `\n`. Browsers submit a textarea's line breaks as
/// CRLF, as the HTML form encoding requires, while the engine accepts only `\n` in multi-line
/// text and refuses `\r` as a control character; a lone `\r` is a line break to its writer too.
fn browser_lines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// After an admin action: back to the incident, remembering the name for the next form.
fn back_to_incident(req: &HttpRequest, id: IncidentId, by: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/console/incidents/{id}")))
        .insert_header(session::set_cookie(req, NAME_COOKIE, by.trim()))
        .finish()
}

async fn acknowledge(
    req: HttpRequest,
    session: Session,
    state: Data,
    path: web::Path<String>,
    form: web::Form<Acknowledge>,
) -> Page {
    session.check_admin_form(&form.csrf)?;
    let id = incident_id(&path)?;
    let note = browser_lines(form.note.trim());
    let note = Some(note.as_str()).filter(|n| !n.is_empty());
    state.engine.acknowledge(id, &form.by, note).await?;
    Ok(back_to_incident(&req, id, &form.by))
}

#[derive(Deserialize)]
struct Note {
    #[serde(default)]
    csrf: String,
    by: String,
    text: String,
}

async fn add_note(
    req: HttpRequest,
    session: Session,
    state: Data,
    path: web::Path<String>,
    form: web::Form<Note>,
) -> Page {
    session.check_admin_form(&form.csrf)?;
    let id = incident_id(&path)?;
    state.engine.add_note(id, &form.by, &browser_lines(&form.text)).await?;
    Ok(back_to_incident(&req, id, &form.by))
}

#[derive(Deserialize)]
struct MonitorsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: usize,
}

async fn monitors(session: Session, state: Data, query: web::Query<MonitorsQuery>) -> Page {
    let (shown, more) = {
        let projection = state.engine.state();
        let mut matching = projection
            .monitors()
            .filter(|m| matches_monitor(&query.q, &m.monitor_uid, m.name.as_deref()))
            .skip(query.page.saturating_mul(MONITORS_PAGE));
        let shown: Vec<_> = matching.by_ref().take(MONITORS_PAGE).cloned().collect();
        (shown, matching.next().is_some())
    };
    let next = more.then_some(query.page + 1);
    Ok(html(views::monitors(&viewer(&session), &shown, &query.q, next, query.page)))
}

#[derive(Deserialize)]
struct MonitorQuery {
    range: Option<String>,
    /// The monitor's uid when it is not in the path: see [`views::monitor_href`].
    uid: Option<String>,
}

async fn monitor(
    session: Session,
    state: Data,
    path: web::Path<(String, String)>,
    query: web::Query<MonitorQuery>,
) -> Page {
    let (integration, uid) = path.into_inner();
    monitor_page(session, state, integration, uid, query.range.as_deref()).await
}

/// The monitor page of a monitor whose uid cannot be a path segment (`.` or `..`, which browsers
/// remove from a path, even percent-encoded): the uid comes in the query instead.
async fn monitor_by_query(
    session: Session,
    state: Data,
    path: web::Path<String>,
    query: web::Query<MonitorQuery>,
) -> Page {
    let query = query.into_inner();
    let uid = query.uid.ok_or_else(|| PageError::not_found("page"))?;
    monitor_page(session, state, path.into_inner(), uid, query.range.as_deref()).await
}

async fn monitor_page(
    session: Session,
    state: Data,
    integration: String,
    uid: String,
    range: Option<&str>,
) -> Page {
    let not_found = || PageError::not_found(format!("monitor {uid}"));
    let range = Range::parse(range)
        .ok_or_else(|| PageError::bad_request("range must be 24h, 7d, 30d or all"))?;
    let key = MonitorKey {
        monitor_uid: MonitorUid::parse(&uid).map_err(|_| not_found())?,
        integration_id: integration.parse::<IntegrationId>().map_err(|_| not_found())?,
    };
    let from = range.start(Utc::now());
    let (monitor, runs, incidents) = {
        let projection = state.engine.state();
        let monitor = projection.monitor(&key).ok_or_else(not_found)?.clone();
        let runs = projection.runs(&key).to_vec();
        let incidents: Vec<Incident> = projection
            .monitor_incidents(&key)
            .filter(|i| incident_in_range(i, from))
            .cloned()
            .collect();
        (monitor, runs, incidents)
    };
    let engine = state.engine.clone();
    // Newest first, until the first run before the range: the log's times follow its order.
    let in_range = web::block(move || -> Result<Vec<RunPoint>, EngineError> {
        let mut points = Vec::new();
        for seq in runs.iter().rev() {
            let (at, metrics) = stored_run(&engine, *seq)?;
            if !run_in_range(at, from) {
                break;
            }
            points.push(RunPoint { seq: *seq, at, metrics });
        }
        Ok(points)
    })
    .await??;
    let summary = summarize(&in_range, &incidents, from);
    let newest: Vec<Incident> = incidents.iter().rev().take(MONITOR_INCIDENTS).cloned().collect();
    let data = views::MonitorPage {
        monitor: &monitor,
        range,
        strip: &in_range[..in_range.len().min(STRIP_RUNS)],
        summary: &summary,
        incidents: &newest,
        incidents_in_range: incidents.len(),
        now: Utc::now(),
    };
    Ok(html(views::monitor(&viewer(&session), &data)))
}

async fn integrations(session: Session, state: Data) -> Page {
    session.require_admin()?;
    let all: Vec<_> = state.engine.state().integrations().rev().cloned().collect();
    Ok(html(views::integrations(&viewer(&session), &all)))
}

/// What the *Add integration* form offers. One kind today; the form asks so that the page reads
/// like the steps it documents, and a new kind is a new variant here.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum IntegrationKind {
    PostmanMonitors,
}

#[derive(Deserialize)]
struct CreateIntegration {
    #[serde(default)]
    csrf: String,
    kind: IntegrationKind,
    name: String,
}

async fn create_integration(
    session: Session,
    state: Data,
    form: web::Form<CreateIntegration>,
) -> Page {
    session.check_admin_form(&form.csrf)?;
    let IntegrationKind::PostmanMonitors = form.kind;
    let created = state.engine.create_integration(&form.name).await?;
    let url = state.webhook_url(&created.token);
    Ok(html(views::webhook_url(&viewer(&session), &created.integration, &url, false)))
}

fn integration_id(raw: &str) -> Result<IntegrationId, PageError> {
    raw.parse().map_err(|_| PageError::not_found(format!("integration {raw}")))
}

#[derive(Deserialize)]
struct Rotate {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    grace_s: String,
}

async fn rotate_integration(
    session: Session,
    state: Data,
    path: web::Path<String>,
    form: web::Form<Rotate>,
) -> Page {
    session.check_admin_form(&form.csrf)?;
    let id = integration_id(&path)?;
    let grace = match form.grace_s.trim() {
        "" => None,
        raw => Some(chrono::Duration::seconds(
            raw.parse::<u32>()
                .map_err(|_| {
                    PageError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_field",
                        format!("grace must be a whole number of seconds, not {raw:?}"),
                    )
                })?
                .into(),
        )),
    };
    let rotated = state.engine.rotate_integration(id, grace).await?;
    let url = state.webhook_url(&rotated.token);
    Ok(html(views::webhook_url(&viewer(&session), &rotated.integration, &url, true)))
}

async fn confirm_revoke(session: Session, state: Data, path: web::Path<String>) -> Page {
    session.require_admin()?;
    let id = integration_id(&path)?;
    let integration = state
        .engine
        .state()
        .integration(id)
        .cloned()
        .ok_or_else(|| PageError::not_found(format!("integration {id}")))?;
    Ok(html(views::confirm_revoke(&viewer(&session), &integration)))
}

async fn revoke_integration(
    session: Session,
    state: Data,
    path: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> Page {
    session.check_admin_form(&form.csrf)?;
    state.engine.revoke_integration(integration_id(&path)?).await?;
    Ok(see_other("/console/integrations"))
}

/// One event exactly as the log stores it, for an auditor to check against the chain.
async fn raw_event(_: Session, state: Data, path: web::Path<String>) -> Page {
    let seq = path
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .map(Seq)
        .ok_or_else(|| PageError::not_found(format!("event {path}")))?;
    let engine = state.engine.clone();
    let event = web::block(move || engine.event(seq))
        .await??
        .ok_or_else(|| PageError::not_found(format!("event {seq}")))?;
    Ok(HttpResponse::Ok().content_type("application/json").json(event))
}

async fn audit(session: Session, state: Data) -> Page {
    let head_seq = state.engine.state().applied();
    let engine = state.engine.clone();
    let head_hash = web::block(move || engine.event(head_seq)).await??.map(|e| e.hash);
    let checks = state.audit.last();
    let data =
        views::AuditPage { head_seq, head_hash, startup: state.engine.startup(), checks: &checks };
    Ok(html(views::audit(&viewer(&session), &data)))
}

/// Verifies the chain (readers may: it only reads) and goes back to the audit page, which shows
/// the result. A POST, so that reloading the page does not verify again.
async fn verify(session: Session, state: Data, form: web::Form<CsrfOnly>) -> Page {
    session.check_csrf(&form.csrf)?;
    let engine = state.engine.clone();
    let report = web::block(move || engine.verify()).await?;
    state.audit.verified(&report);
    Ok(see_other("/console/audit"))
}

async fn replay(session: Session, state: Data, form: web::Form<CsrfOnly>) -> Page {
    session.check_admin_form(&form.csrf)?;
    let report = state.engine.replay().await?;
    state.audit.replayed(&report);
    Ok(see_other("/console/audit"))
}

async fn export(_: Session, state: Data) -> HttpResponse {
    let mut response = ndjson_export(state.engine.clone(), Seq::ZERO, |_| true);
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"incidentd-events.ndjson\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IncidentStatus;

    #[test]
    fn monitor_search_ignores_case_and_looks_at_name_and_uid() {
        let uid = MonitorUid::parse("1e6b5b8c-Checkout").unwrap();
        assert!(matches_monitor("", &uid, None));
        assert!(matches_monitor("checkout", &uid, None));
        assert!(matches_monitor("PAY", &uid, Some("Payments API")));
        assert!(!matches_monitor("orders", &uid, Some("Payments API")));
    }

    #[test]
    fn textarea_line_breaks_become_newlines() {
        for (typed, sent) in [
            ("one line", "one line"),
            ("line one\r\nline two", "line one\nline two"),
            ("old\rmac\n\nunix\r\n\r\n", "old\nmac\n\nunix\n\n"),
        ] {
            assert_eq!(browser_lines(typed), sent);
        }
    }

    #[test]
    fn status_filters_cover_every_status() {
        let all = [IncidentStatus::Open, IncidentStatus::Acknowledged, IncidentStatus::Resolved];
        for (raw, admitted) in
            [("", 3), ("unresolved", 2), ("open", 1), ("acknowledged", 1), ("resolved", 1)]
        {
            let filter = status_filter(raw).unwrap_or_else(|_| panic!("{raw} is a filter"));
            let admits = |s: IncidentStatus| filter.is_none_or(|f| f.admits(s));
            assert_eq!(all.iter().filter(|s| admits(**s)).count(), admitted, "{raw}");
        }
        let refused = status_filter("closed").map(|_| ()).unwrap_err().to_string();
        assert!(refused.contains("closed"), "{refused}");
    }
}

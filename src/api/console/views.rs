//! The console's HTML, written with maud: every value from the log or a payload is escaped by
//! the template itself, so a monitor named `<script>` is shown as text.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::super::dto::TimelineEntry;
use super::super::{ApiError, LastChecks};
use super::report::{human_duration, Range, RunPoint, Summary};
use crate::audit::VerifyReport;
use crate::domain::{
    Digest256, Incident, IncidentStatus, Integration, Metrics, Monitor, MonitorStatus, Seq,
    Transition,
};
use crate::engine::Startup;

/// What every page needs to know about the person looking at it.
pub struct Viewer<'a> {
    pub admin: bool,
    pub csrf: &'a str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Incidents,
    Monitors,
    Integrations,
    Audit,
    None,
}

fn page(title: &str, viewer: Option<&Viewer>, tab: Tab, body: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Tab| {
        html! { a href=(href) aria-current=[(tab == this).then_some("page")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · incidentd" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/console/incidents" { "incidentd" }
                    @if let Some(viewer) = viewer {
                        nav {
                            (link("/console/incidents", "Incidents", Tab::Incidents))
                            (link("/console/monitors", "Monitors", Tab::Monitors))
                            @if viewer.admin {
                                (link("/console/integrations", "Integrations", Tab::Integrations))
                            }
                            (link("/console/audit", "Audit", Tab::Audit))
                        }
                        span.role { @if viewer.admin { "admin" } @else { "reader" } }
                        form.inline method="post" action="/console/sign-out" {
                            (csrf_field(viewer))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

fn time(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

fn optional_time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { span.muted { "—" } },
    }
}

fn status_badge(status: IncidentStatus) -> Markup {
    let (class, label) = match status {
        IncidentStatus::Open => ("open", "open"),
        IncidentStatus::Acknowledged => ("acknowledged", "acknowledged"),
        IncidentStatus::Resolved => ("resolved", "resolved"),
    };
    html! { span class={ "badge " (class) } { (label) } }
}

fn monitor_badge(status: MonitorStatus) -> Markup {
    match status {
        MonitorStatus::Passing => html! { span.badge.resolved { "passing" } },
        MonitorStatus::Failing => html! { span.badge.open { "failing" } },
    }
}

/// The link to a monitor's page, over its default range.
pub fn monitor_href(integration: impl std::fmt::Display, uid: &str) -> String {
    monitor_range_href(integration, uid, None)
}

/// The link to a monitor's page over `range`. The uid is the last path segment, except for a uid
/// of `.` or `..`: URL parsers (every browser's among them) remove such a segment from a path, and
/// `%2E` as well, so that no encoding of it can reach the server. Those two go in the query.
pub fn monitor_range_href(
    integration: impl std::fmt::Display,
    uid: &str,
    range: Option<Range>,
) -> String {
    let range = range.map(|r| ("range", r.as_str()));
    if matches!(uid, "." | "..") {
        let mut pairs = vec![("uid", uid)];
        pairs.extend(range);
        let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
        return format!("/console/monitors/{integration}?{query}");
    }
    let mut href = format!("/console/monitors/{integration}/{}", url_segment(uid));
    if let Some((name, value)) = range {
        href.push_str(&format!("?{name}={value}"));
    }
    href
}

/// Percent-encodes a path segment: monitor uids are free text.
fn url_segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How long an incident lasted, or has lasted so far.
fn duration(incident: &Incident, now: DateTime<Utc>) -> Markup {
    match incident.resolved_at {
        Some(resolved) => html! { (human_duration(resolved - incident.opened_at)) },
        None => html! { span.muted { (human_duration(now - incident.opened_at)) " so far" } },
    }
}

fn monitor_label(name: Option<&str>, uid: &str) -> Markup {
    html! {
        @if let Some(name) = name { span.name { (name) } " " }
        code.uid { (uid) }
    }
}

fn metrics_table(metrics: &Metrics) -> Markup {
    html! {
        dl.metrics {
            dt { "failedTests" } dd { (metrics.failed_tests) }
            dt { "errors" } dd { (metrics.errors) }
            @if let Some(v) = metrics.passed_tests { dt { "passedTests" } dd { (v) } }
            @if let Some(v) = metrics.warnings { dt { "warnings" } dd { (v) } }
            @if let Some(v) = metrics.request_count { dt { "requestCount" } dd { (v) } }
            @if let Some(v) = metrics.total_latency { dt { "totalLatency" } dd { (v) " ms" } }
        }
    }
}

pub fn sign_in(next: &str, error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        Tab::None,
        html! {
            section.narrow {
                h1 { "Sign in" }
                p { "Use the admin token or a reader token (" code { "POST /v1/tokens" } "). It is kept in a cookie that scripts cannot read, and never appears in a URL." }
                @if let Some(error) = error { p.error role="alert" { (error) } }
                form method="post" action="/console/sign-in" {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Token" }
                    input #token type="password" name="token" required autocomplete="off" autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

pub fn error_page(error: &ApiError) -> Markup {
    page(
        "Error",
        None,
        Tab::None,
        html! {
            section.narrow {
                h1 { (error.status.as_u16()) " " (error.status.canonical_reason().unwrap_or("Error")) }
                p.error role="alert" { (error.message) }
                p.muted { "Code: " code { (error.code) } }
                p { a href="/console/incidents" { "Back to the incidents" } }
            }
        },
    )
}

/// The incident list's filters as the form and the paging links carry them.
pub struct IncidentFilters<'a> {
    pub status: &'a str,
    pub monitor: &'a str,
    /// One monitor exactly (both set), from a monitor page's link.
    pub monitor_uid: &'a str,
    pub integration_id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub limit: usize,
}

impl IncidentFilters<'_> {
    fn query(&self, cursor: Option<Seq>) -> String {
        let mut pairs = vec![
            ("status", self.status.to_owned()),
            ("monitor", self.monitor.to_owned()),
            ("monitor_uid", self.monitor_uid.to_owned()),
            ("integration_id", self.integration_id.to_owned()),
            ("from", self.from.to_owned()),
            ("to", self.to.to_owned()),
            ("limit", self.limit.to_string()),
        ];
        if let Some(cursor) = cursor {
            pairs.push(("cursor", cursor.0.to_string()));
        }
        pairs.retain(|(_, v)| !v.is_empty());
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

pub fn incidents(
    viewer: &Viewer,
    filters: &IncidentFilters,
    incidents: &[Incident],
    older: Option<Seq>,
    paged: bool,
    now: DateTime<Utc>,
) -> Markup {
    let statuses = [
        ("", "any status"),
        ("unresolved", "unresolved"),
        ("open", "open"),
        ("acknowledged", "acknowledged"),
        ("resolved", "resolved"),
    ];
    page(
        "Incidents",
        Some(viewer),
        Tab::Incidents,
        html! {
            h1 { "Incidents" }
            form.filters method="get" action="/console/incidents" {
                label { "Status "
                    select name="status" {
                        @for (value, label) in statuses {
                            option value=(value) selected[filters.status == value] { (label) }
                        }
                    }
                }
                label { "Monitor " input type="search" name="monitor" value=(filters.monitor) placeholder="name or uid"; }
                label { "Opened from " input type="date" name="from" value=(filters.from); }
                label { "to " input type="date" name="to" value=(filters.to); }
                input type="hidden" name="limit" value=(filters.limit);
                @if !filters.monitor_uid.is_empty() {
                    input type="hidden" name="monitor_uid" value=(filters.monitor_uid);
                }
                @if !filters.integration_id.is_empty() {
                    input type="hidden" name="integration_id" value=(filters.integration_id);
                }
                button type="submit" { "Filter" }
            }
            @if !filters.monitor_uid.is_empty() || !filters.integration_id.is_empty() {
                p.muted #exact-filter {
                    "Only monitor " code { (filters.monitor_uid) } " of integration " code { (filters.integration_id) } ". "
                    a href="/console/incidents" { "Show every monitor" }
                }
            }
            @if incidents.is_empty() {
                p.empty { "No incidents match." }
            } @else {
                table.list #incidents {
                    thead { tr { th { "Status" } th { "Monitor" } th { "Opened" } th { "Resolved" } th { "Duration" } th.num { "Failing runs" } th {} } }
                    tbody {
                        @for incident in incidents {
                            @let href = format!("/console/incidents/{}", incident.id);
                            tr data-incident=(incident.id) {
                                td { (status_badge(incident.status)) }
                                td { a href=(monitor_href(incident.integration_id, incident.monitor_uid.as_str())) { (monitor_label(incident.monitor_name.as_deref(), incident.monitor_uid.as_str())) } }
                                td { (time(incident.opened_at)) }
                                td { (optional_time(incident.resolved_at)) }
                                td { (duration(incident, now)) }
                                td.num { (incident.failing_runs) }
                                td { a href=(href) { "Timeline" } }
                            }
                        }
                    }
                }
            }
            nav.paging {
                @if paged { a href={ "/console/incidents?" (filters.query(None)) } { "← Newest" } }
                @if let Some(older) = older { a rel="next" href={ "/console/incidents?" (filters.query(Some(older))) } { "Older →" } }
            }
        },
    )
}

fn timeline_title(entry: &TimelineEntry) -> Markup {
    let by = entry.actor.as_deref().unwrap_or("someone");
    match (entry.kind, entry.transition) {
        (_, Some(Transition::Opened)) => html! { "Failing run opened the incident" },
        (_, Some(Transition::Ongoing)) => html! { "Failing run" },
        (_, Some(Transition::Resolved)) => html! { "Passing run resolved the incident" },
        ("incident_acknowledged", _) => html! { "Acknowledged by " strong { (by) } },
        ("note_added", _) => html! { "Note by " strong { (by) } },
        (kind, _) => html! { (kind) },
    }
}

pub struct IncidentPage<'a> {
    pub incident: &'a Incident,
    pub timeline: &'a [TimelineEntry],
    pub name: Option<&'a str>,
    pub now: DateTime<Utc>,
}

pub fn incident(viewer: &Viewer, page_data: &IncidentPage) -> Markup {
    let incident = page_data.incident;
    let since = |at: Option<DateTime<Utc>>| at.map(|at| human_duration(at - incident.opened_at));
    let title = incident.monitor_name.as_deref().unwrap_or(incident.monitor_uid.as_str());
    page(
        &format!("Incident on {title}"),
        Some(viewer),
        Tab::Incidents,
        html! {
            p.crumbs { a href="/console/incidents" { "Incidents" } " / " code { (incident.id) } }
            h1 { "Incident on " (monitor_label(incident.monitor_name.as_deref(), incident.monitor_uid.as_str())) " " (status_badge(incident.status)) }
            dl.facts {
                dt { "Monitor" } dd { a href=(monitor_href(incident.integration_id, incident.monitor_uid.as_str())) { (incident.monitor_uid.as_str()) } }
                dt { "Opened" } dd { (time(incident.opened_at)) }
                dt { "Time to acknowledge" } dd #tta { (since(incident.acknowledged_at).unwrap_or_else(|| "not acknowledged".into())) }
                dt { "Time to resolve" } dd #ttr {
                    @match since(incident.resolved_at) {
                        Some(d) => (d),
                        None => { "open for " (human_duration(page_data.now - incident.opened_at)) },
                    }
                }
                dt { "Failing runs" } dd { (incident.failing_runs) }
            }
            h2 { "Timeline" }
            ol.timeline {
                @for entry in page_data.timeline {
                    @let class = match (entry.kind, entry.transition) {
                        (_, Some(Transition::Resolved)) => "passing",
                        (_, Some(_)) => "failing",
                        ("incident_acknowledged", _) => "ack",
                        _ => "note",
                    };
                    li class=(class) data-kind=(entry.kind) data-seq=(entry.seq) {
                        div.when { (time(entry.at)) " · event " (entry.seq) " · " a href={ "/console/events/" (entry.seq) } { "raw JSON" } }
                        div.what { (timeline_title(entry)) }
                        @if let Some(metrics) = &entry.metrics { (metrics_table(metrics)) }
                        @if let Some(note) = &entry.note { blockquote { (note) } }
                        @if let Some(text) = &entry.text { blockquote { (text) } }
                        div.after { "Status after: " (status_badge(entry.status_after)) }
                    }
                }
            }
            @if viewer.admin {
                section.actions {
                    @if incident.status == IncidentStatus::Open {
                        form #acknowledge method="post" action={ "/console/incidents/" (incident.id) "/acknowledge" } {
                            h2 { "Acknowledge" }
                            (csrf_field(viewer))
                            label { "Your name " input type="text" name="by" required maxlength="200" value=[page_data.name]; }
                            label { "Note (optional) " textarea name="note" rows="2" {} }
                            button type="submit" { "Acknowledge" }
                        }
                    }
                    form #note method="post" action={ "/console/incidents/" (incident.id) "/notes" } {
                        h2 { "Add a note" }
                        (csrf_field(viewer))
                        label { "Your name " input type="text" name="by" required maxlength="200" value=[page_data.name]; }
                        label { "Note " textarea name="text" rows="3" required {} }
                        button type="submit" { "Add note" }
                    }
                }
            }
        },
    )
}

pub fn monitors(
    viewer: &Viewer,
    monitors: &[Monitor],
    query: &str,
    next_page: Option<usize>,
    page_no: usize,
) -> Markup {
    let page_href = |n: usize| {
        let pairs = [("q", query.to_owned()), ("page", n.to_string())];
        format!("/console/monitors?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
    };
    page(
        "Monitors",
        Some(viewer),
        Tab::Monitors,
        html! {
            h1 { "Monitors" }
            form.filters method="get" action="/console/monitors" {
                label { "Monitor " input type="search" name="q" value=(query) placeholder="name or uid"; }
                button type="submit" { "Filter" }
            }
            @if monitors.is_empty() {
                p.empty { "No monitors match." }
            } @else {
                table.list #monitors {
                    thead { tr { th { "Status" } th { "Monitor" } th { "Last run" } th.num { "Runs" } th { "Open incident" } } }
                    tbody {
                        @for monitor in monitors {
                            tr {
                                td { (monitor_badge(monitor.status)) }
                                td { a href=(monitor_href(monitor.integration_id, monitor.monitor_uid.as_str())) { (monitor_label(monitor.name.as_deref(), monitor.monitor_uid.as_str())) } }
                                td { (time(monitor.last_run_at)) }
                                td.num { (monitor.runs_seen) }
                                td { @if let Some(id) = monitor.open_incident { a href={ "/console/incidents/" (id) } { "Timeline" } } }
                            }
                        }
                    }
                }
            }
            nav.paging {
                @if page_no > 0 { a href=(page_href(page_no - 1)) { "← Previous" } }
                @if let Some(next) = next_page { a rel="next" href=(page_href(next)) { "Next →" } }
            }
        },
    )
}

pub struct MonitorPage<'a> {
    pub monitor: &'a Monitor,
    pub range: Range,
    /// Newest first, at most the strip's width.
    pub strip: &'a [RunPoint],
    pub summary: &'a Summary,
    /// The newest incidents in range, at most a page of them.
    pub incidents: &'a [Incident],
    pub incidents_in_range: usize,
    pub now: DateTime<Utc>,
}

pub fn monitor(viewer: &Viewer, data: &MonitorPage) -> Markup {
    let monitor = data.monitor;
    let range_href = |range| {
        monitor_range_href(monitor.integration_id, monitor.monitor_uid.as_str(), Some(range))
    };
    let title = monitor.name.as_deref().unwrap_or(monitor.monitor_uid.as_str());
    page(
        title,
        Some(viewer),
        Tab::Monitors,
        html! {
            p.crumbs { a href="/console/monitors" { "Monitors" } " / " code { (monitor.monitor_uid.as_str()) } }
            h1 { (monitor_label(monitor.name.as_deref(), monitor.monitor_uid.as_str())) " " (monitor_badge(monitor.status)) }
            dl.facts {
                dt { "Integration" } dd { code { (monitor.integration_id) } }
                dt { "Last run" } dd { (time(monitor.last_run_at)) }
                dt { "Runs seen" } dd { (monitor.runs_seen) }
                dt { "Open incident" } dd {
                    @match monitor.open_incident {
                        Some(id) => a href={ "/console/incidents/" (id) } { "Timeline" },
                        None => span.muted { "none" },
                    }
                }
            }
            nav.ranges aria-label="Range" {
                @for range in Range::ALL {
                    a href=(range_href(range)) aria-current=[(range == data.range).then_some("page")] { (range.label()) }
                }
            }
            dl.facts #summary {
                dt { "Availability (" (data.range.label()) ")" }
                dd #availability {
                    @match data.summary.availability() {
                        Some(a) => { (format!("{a:.2} %")) " of " (data.summary.runs) " runs passed" },
                        None => span.muted { "no runs in range" },
                    }
                }
                dt { "Mean time to resolve" }
                dd #mttr {
                    @match data.summary.mean_time_to_resolve {
                        Some(d) => { (human_duration(d)) " over " (data.summary.resolved) " resolved incidents" },
                        None => span.muted { "no incident resolved in range" },
                    }
                }
            }
            h2 { "Recent runs" }
            @if data.strip.is_empty() {
                p.empty { "No runs in range." }
            } @else {
                p.muted { "The " (data.strip.len()) " most recent runs in range, oldest on the left." }
                ol.strip #strip {
                    @for run in data.strip.iter().rev() {
                        @let label = if run.passing() { "passing" } else { "failing" };
                        li class=(label) title={ (run.at.format("%Y-%m-%d %H:%M:%S UTC")) ": " (label) ", failedTests " (run.metrics.failed_tests) ", errors " (run.metrics.errors) } {
                            a href={ "/console/events/" (run.seq) } { span.sr { (label) " run at " (run.at.to_rfc3339()) } }
                        }
                    }
                }
            }
            h2 { "Incidents" }
            @if data.incidents.is_empty() {
                p.empty { "No incidents in range." }
            } @else {
                @if data.incidents_in_range > data.incidents.len() {
                    p.muted {
                        "The newest " (data.incidents.len()) " of " (data.incidents_in_range) " incidents in range; "
                        a href={ "/console/incidents?" (serde_urlencoded::to_string([("monitor_uid", monitor.monitor_uid.to_string()), ("integration_id", monitor.integration_id.to_string())]).unwrap_or_default()) } { "all of this monitor's incidents" } "."
                    }
                }
                table.list {
                    thead { tr { th { "Status" } th { "Opened" } th { "Resolved" } th { "Duration" } th.num { "Failing runs" } th {} } }
                    tbody {
                        @for incident in data.incidents {
                            tr {
                                td { (status_badge(incident.status)) }
                                td { (time(incident.opened_at)) }
                                td { (optional_time(incident.resolved_at)) }
                                td { (duration(incident, data.now)) }
                                td.num { (incident.failing_runs) }
                                td { a href={ "/console/incidents/" (incident.id) } { "Timeline" } }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn integrations(viewer: &Viewer, integrations: &[Integration]) -> Markup {
    page(
        "Integrations",
        Some(viewer),
        Tab::Integrations,
        html! {
            h1 { "Integrations" }
            section.card #add {
                h2 { "Add integration" }
                form method="post" action="/console/integrations" {
                    (csrf_field(viewer))
                    fieldset {
                        legend { "1. Choose what sends results" }
                        label.choice { input type="radio" name="kind" value="postman_monitors" checked required; " Postman Monitors " span.muted { "(Post monitoring results webhook)" } }
                    }
                    fieldset {
                        legend { "2. Name it" }
                        label { "Name " input type="text" name="name" required maxlength="200" placeholder="e.g. payments team"; }
                    }
                    button type="submit" { "Add integration" }
                }
            }
            h2 { "All integrations" }
            @if integrations.is_empty() {
                p.empty { "No integrations yet." }
            } @else {
                table.list #integrations {
                    thead { tr { th { "Name" } th { "Id" } th { "Created" } th { "Status" } th { "Token" } th {} } }
                    tbody {
                        @for integration in integrations {
                            tr {
                                td { (integration.name) }
                                td { code { (integration.id) } }
                                td { (time(integration.created_at)) }
                                td {
                                    @if integration.is_active() { span.badge.resolved { "active" } }
                                    @else { span.badge.revoked { "revoked " } (optional_time(integration.revoked_at)) }
                                }
                                td {
                                    @if let Some(rotated) = integration.rotated_at { "rotated " (time(rotated)) }
                                    @if let Some(until) = integration.previous_valid_until { br; span.muted { "old token valid until " (time(until)) } }
                                }
                                td.buttons {
                                    @if integration.is_active() {
                                        form.inline method="post" action={ "/console/integrations/" (integration.id) "/rotate" } {
                                            (csrf_field(viewer))
                                            label.compact { "old URL valid for " input type="number" name="grace_s" min="0" placeholder="default" size="7"; " s" }
                                            button type="submit" { "Rotate URL" }
                                        }
                                        a.button.danger href={ "/console/integrations/" (integration.id) "/revoke" } { "Revoke…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The page shown once after creating or rotating: the webhook URL, which is never shown again.
pub fn webhook_url(viewer: &Viewer, integration: &Integration, url: &str, rotated: bool) -> Markup {
    page(
        "Webhook URL",
        Some(viewer),
        Tab::Integrations,
        html! {
            p.crumbs { a href="/console/integrations" { "Integrations" } " / " (integration.name) }
            h1 { @if rotated { "New webhook URL for " } @else { "Integration created: " } (integration.name) }
            section.card.secret {
                h2 { "3. Copy the webhook URL" }
                p.warning { "This URL is shown only once. incidentd keeps only a hash of its token. If you lose it, rotate the URL." }
                div.copy {
                    input #webhook-url type="text" readonly value=(url) aria-label="Webhook URL";
                    button type="button" data-copy="webhook-url" hidden { "Copy" }
                }
                @if rotated {
                    // A grace of zero leaves `previous_valid_until` at the rotation itself.
                    @if let Some(until) = integration.previous_valid_until.filter(|u| Some(*u) > integration.rotated_at) {
                        p { "The previous URL keeps working until " (time(until)) "; update Postman before then." }
                    } @else {
                        p { "The previous URL stopped working now." }
                    }
                }
            }
            section.card #postman-steps {
                h2 { "4. Point Postman at it" }
                ol {
                    li { "In Postman, open " strong { "Home → Integrations" } ", search for " strong { "Webhooks" } " and open the custom webhooks integration." }
                    li { "Next to " strong { "Post monitoring results" } ", select " strong { "Add Integration" } "." }
                    li { "Give it a nickname, choose the workspace and the monitor, and paste the URL above as the " strong { "Webhook URL" } "." }
                    li { "Under " strong { "Configure when monitor runs must be notified" } ", select " strong { "Notify for all completed monitor runs" } ". incidentd resolves an incident only when a passing run arrives; with failures only, incidents would never close." }
                    li { "Save with " strong { "Add Integration" } ". Several monitors may use the same URL." }
                }
            }
            p { a href="/console/integrations" { "Back to the integrations" } }
        },
    )
}

pub fn confirm_revoke(viewer: &Viewer, integration: &Integration) -> Markup {
    page(
        "Revoke integration",
        Some(viewer),
        Tab::Integrations,
        html! {
            section.narrow {
                h1 { "Revoke " (integration.name) "?" }
                p { "Its webhook URL stops working at once and cannot be restored. Its incidents and history stay." }
                form method="post" action={ "/console/integrations/" (integration.id) "/revoke" } {
                    (csrf_field(viewer))
                    button.danger type="submit" { "Revoke" }
                    " "
                    a href="/console/integrations" { "Cancel" }
                }
            }
        },
    )
}

pub struct AuditPage<'a> {
    pub head_seq: Seq,
    pub head_hash: Option<Digest256>,
    pub startup: Startup,
    pub checks: &'a LastChecks,
}

fn verify_result(report: &VerifyReport) -> Markup {
    html! {
        @if report.ok {
            span.badge.resolved { "chain intact" } " " (report.events) " events verified up to event " (report.head_seq)
        } @else {
            span.badge.open { "chain broken" } " at event " (report.first_bad_seq.map_or("?".to_owned(), |s| s.to_string())) ": " (report.error.as_deref().unwrap_or(""))
        }
    }
}

pub fn audit(viewer: &Viewer, data: &AuditPage) -> Markup {
    page(
        "Audit",
        Some(viewer),
        Tab::Audit,
        html! {
            h1 { "Audit" }
            dl.facts #audit {
                dt { "Log head" } dd #head-seq { "event " (data.head_seq) }
                dt { "Head hash" } dd { code.hash { @match data.head_hash { Some(h) => (h), None => "—" } } }
                dt { "At start-up" } dd {
                    @match data.startup.checkpoint {
                        Some(seq) => { "projections loaded from the checkpoint at event " (seq) ", then " (data.startup.events_folded) " events folded" },
                        None => { "projections folded from the whole log (" (data.startup.events_folded) " events)" },
                    }
                }
                dt { "Chain verification" } dd #verify {
                    @match &data.checks.verify {
                        Some((at, report)) => { (verify_result(report)) " · " (time(*at)) },
                        None => span.muted { "not run since start-up" },
                    }
                }
                dt { "Last replay" } dd #replay {
                    @match &data.checks.replay {
                        Some((at, report)) => {
                            (time(*at)) ": " (report.events_replayed) " events in " (report.duration_ms) " ms, "
                            @if report.identical { span.badge.resolved { "identical" } } @else { span.badge.open { "differed; rebuilt projections kept" } }
                            br; "digest " code.hash { (report.digest_after) }
                        },
                        None => span.muted { "no replay since start-up" },
                    }
                }
            }
            div.buttons {
                form.inline method="post" action="/console/audit/verify" {
                    (csrf_field(viewer))
                    button type="submit" { "Verify the chain now" }
                }
                @if viewer.admin {
                    form.inline method="post" action="/console/audit/replay" {
                        (csrf_field(viewer))
                        button type="submit" { "Replay the log now" }
                    }
                }
                a.button href="/console/export.ndjson" download="incidentd-events.ndjson" { "Export the log (NDJSON)" }
            }
            p.muted { "Verification re-hashes every event and checks each link of the chain; replay rebuilds every projection from the log and compares digests. See docs/AUDIT.md." }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_links_keep_every_uid_out_of_reach_of_path_normalization() {
        for (uid, range, href) in [
            ("checkout", None, "/console/monitors/i/checkout"),
            ("orders/eu", Some(Range::All), "/console/monitors/i/orders%2Feu?range=all"),
            ("a b?c#d", None, "/console/monitors/i/a%20b%3Fc%23d"),
            ("...", None, "/console/monitors/i/..."),
            (".", None, "/console/monitors/i?uid=."),
            ("..", Some(Range::Day), "/console/monitors/i?uid=..&range=24h"),
        ] {
            assert_eq!(monitor_range_href("i", uid, range), href, "{uid}");
        }
    }
}

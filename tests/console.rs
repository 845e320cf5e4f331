//! The web console over real HTTP: sign-in and its cookie, every page, the admin forms with their
//! CSRF and role checks, HTML escaping of payload fields, and errors for non-browser clients.

mod common;

use common::{run, TestServer, ADMIN_TOKEN};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{redirect, StatusCode};
use serde_json::{json, Value};

/// A browser: no redirects followed (the tests look at them), the session cookie sent by hand.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(server: &TestServer) -> Browser {
        let client = reqwest::Client::builder().redirect(redirect::Policy::none()).build().unwrap();
        Browser { client, base: server.base.clone(), cookie: None }
    }

    async fn signed_in(server: &TestServer, token: &str) -> Browser {
        let mut browser = Browser::new(server);
        let response = browser.post("/console/sign-in", &[("token", token)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        browser.cookie = Some(session_cookie(response.headers()).expect("a session cookie is set"));
        browser
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(ACCEPT, "text/html,application/xhtml+xml");
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        request
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path).send().await.unwrap()
    }

    /// GETs a page that must answer 200 with HTML, and returns its text.
    async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
        assert_eq!(content_type, "text/html; charset=utf-8", "{path}");
        response.text().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.request(reqwest::Method::POST, path).form(form).send().await.unwrap()
    }

    /// The CSRF token of this session, as the pages carry it in their forms.
    async fn csrf(&self) -> String {
        let page = self.page("/console/incidents").await;
        attribute_after(&page, r#"name="csrf" value=""#).expect("the page has a CSRF field")
    }
}

/// The `name=value` pair of the session cookie set by a response.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("incidentd_session="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn attribute_after(html: &str, marker: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    Some(html[start..].split('"').next()?.to_owned())
}

fn uuid_nil() -> &'static str {
    "00000000-0000-0000-0000-000000000000"
}

/// An open incident for `uid` after two failing runs; returns its id.
async fn open_incident(server: &TestServer, webhook: &str, body: &Value) -> String {
    server.deliver_run(webhook, body).await;
    let answer = server.deliver_run(webhook, body).await;
    answer["incident"]["id"].as_str().unwrap().to_owned()
}

async fn webhook(server: &TestServer) -> String {
    server.create_integration("console").await["webhook_url"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_and_never_puts_the_token_in_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let browser = Browser::new(&server);

    let response = browser.get("/console/incidents?status=open").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()[LOCATION],
        "/console/sign-in?next=%2Fconsole%2Fincidents%3Fstatus%3Dopen"
    );
    assert_eq!(browser.get("/").await.headers()[LOCATION], "/console/incidents");

    let form = browser.page("/console/sign-in?next=%2Fconsole%2Fmonitors").await;
    assert!(form.contains(r#"<form method="post" action="/console/sign-in">"#), "{form}");
    assert!(form.contains(r#"type="password" name="token""#));

    let wrong = browser
        .post("/console/sign-in", &[("token", "adm_wrong"), ("next", "/console/monitors")])
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert!(wrong.text().await.unwrap().contains("That token is not valid"));

    let response = browser
        .post("/console/sign-in", &[("token", ADMIN_TOKEN), ("next", "/console/monitors")])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/console/monitors");
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set_cookie.contains(attribute), "{set_cookie} lacks {attribute}");
    }
    assert!(!response.headers()[LOCATION].to_str().unwrap().contains(ADMIN_TOKEN));

    // Another site can neither sign a browser in under its own token...
    let forged = browser
        .request(reqwest::Method::POST, "/console/sign-in")
        .header("origin", "https://evil.example")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get(SET_COOKIE).is_none());
    // ...nor be the place sign-in sends the browser to.
    let offsite = browser
        .post("/console/sign-in", &[("token", ADMIN_TOKEN), ("next", "//evil.example/console/")])
        .await;
    assert_eq!(offsite.headers()[LOCATION], "/console/incidents");

    // Signing out needs the session's CSRF token, then removes the cookie.
    let admin = Browser::signed_in(&server, ADMIN_TOKEN).await;
    assert_eq!(
        admin.post("/console/sign-out", &[("csrf", "nope")]).await.status(),
        StatusCode::FORBIDDEN
    );
    let out = admin.post("/console/sign-out", &[("csrf", &admin.csrf().await)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE].to_str().unwrap().contains("incidentd_session=;"));
    assert!(!set_cookie.contains("Secure"), "plain HTTP on loopback: {set_cookie}");

    // A reader whose token was revoked is signed out at the next page, and can still remove the
    // cookie without a CSRF token its pages can no longer show.
    let (_, token) = server.post_admin("/v1/tokens", json!({ "name": "temp" })).await;
    let reader = Browser::signed_in(&server, token["token"].as_str().unwrap()).await;
    let id = token["id"].as_str().unwrap();
    assert_eq!(server.delete_admin(&format!("/v1/tokens/{id}")).await.0, StatusCode::OK);
    assert_eq!(reader.get("/console/incidents").await.status(), StatusCode::SEE_OTHER);
    let out = reader.post("/console/sign-out", &[]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE].to_str().unwrap().contains("incidentd_session=;"));
    server.stop().await;
}

#[tokio::test]
async fn behind_an_https_public_url_the_cookie_is_secure() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |config| {
        config.public_url = Some("https://incidents.example.com".to_owned());
    })
    .await;
    let browser = Browser::new(&server);
    let response = browser.post("/console/sign-in", &[("token", ADMIN_TOKEN)]).await;
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    // A form posted from the public origin (through the proxy) is this console's own.
    let admin = Browser::signed_in(&server, ADMIN_TOKEN).await;
    let csrf = admin.csrf().await;
    let from_proxy = admin
        .request(reqwest::Method::POST, "/console/audit/verify")
        .header("origin", "https://incidents.example.com")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(from_proxy.status(), StatusCode::SEE_OTHER);
    let cross_site = admin
        .request(reqwest::Method::POST, "/console/audit/verify")
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    server.stop().await;
}

#[tokio::test]
async fn pages_escape_everything_that_comes_from_payloads_and_people() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let webhook = webhook(&server).await;
    let uid = "<img src=x onerror=alert(1)>/x";
    let mut body = run(uid, 1, 0);
    body["monitor_name"] = json!("<script>alert('monitor')</script>");
    let incident = open_incident(&server, &webhook, &body).await;
    let (status, _) = server
        .post_admin(
            &format!("/v1/incidents/{incident}/notes"),
            json!({ "by": "<b>eve</b>", "text": "</blockquote><script>alert('note')</script>" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let browser = Browser::signed_in(&server, ADMIN_TOKEN).await;
    let list = browser.page("/console/incidents").await;
    let timeline = browser.page(&format!("/console/incidents/{incident}")).await;
    let monitors = browser.page("/console/monitors").await;
    let monitor_link = attribute_after(&monitors, r#"<td><a href=""#).unwrap();
    let monitor = browser.page(&monitor_link).await;
    for (name, html) in
        [("list", &list), ("timeline", &timeline), ("monitors", &monitors), ("monitor", &monitor)]
    {
        assert!(!html.contains("<script>alert"), "{name} page runs a payload script:\n{html}");
        assert!(!html.contains("<img src=x"), "{name} page renders a payload tag:\n{html}");
        assert!(html.contains("&lt;script&gt;alert('monitor')&lt;/script&gt;"), "{name}:\n{html}");
    }
    assert!(timeline.contains("&lt;/blockquote&gt;&lt;script&gt;alert('note')&lt;/script&gt;"));
    assert!(timeline.contains("&lt;b&gt;eve&lt;/b&gt;"));
    assert!(monitor.contains("&lt;img src=x onerror=alert(1)&gt;/x"));
    server.stop().await;
}

#[tokio::test]
async fn readers_read_everything_but_cannot_submit_admin_forms() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let webhook = webhook(&server).await;
    let incident = open_incident(&server, &webhook, &run("checkout", 1, 0)).await;
    let (_, token) = server.post_admin("/v1/tokens", json!({ "name": "auditor" })).await;
    let reader = Browser::signed_in(&server, token["token"].as_str().unwrap()).await;
    let csrf = reader.csrf().await;

    let timeline = reader.page(&format!("/console/incidents/{incident}")).await;
    assert!(timeline.contains("Failing run opened the incident"));
    assert!(!timeline.contains(r#"id="acknowledge""#) && !timeline.contains(r#"id="note""#));
    assert!(!reader.page("/console/incidents").await.contains("/console/integrations"));
    reader.page("/console/audit").await;

    let head = server.head();
    let id = server.get("/v1/integrations").await.1["integrations"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, form) in [
        (
            format!("/console/incidents/{incident}/acknowledge"),
            vec![("csrf", csrf.as_str()), ("by", "mallory")],
        ),
        (
            format!("/console/incidents/{incident}/notes"),
            vec![("csrf", &csrf), ("by", "mallory"), ("text", "x")],
        ),
        (
            "/console/integrations".to_owned(),
            vec![("csrf", &csrf), ("kind", "postman_monitors"), ("name", "x")],
        ),
        (format!("/console/integrations/{id}/rotate"), vec![("csrf", &csrf)]),
        (format!("/console/integrations/{id}/revoke"), vec![("csrf", &csrf)]),
        ("/console/audit/replay".to_owned(), vec![("csrf", &csrf)]),
    ] {
        let response = reader.post(&path, &form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(response.text().await.unwrap().contains("forbidden"), "{path}");
    }
    assert_eq!(reader.get("/console/integrations").await.status(), StatusCode::FORBIDDEN);
    assert_eq!(server.head(), head, "a reader's form appended an event");
    server.stop().await;
}

#[tokio::test]
async fn admin_forms_need_the_session_csrf_token_and_a_same_origin_submission() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let webhook = webhook(&server).await;
    let incident = open_incident(&server, &webhook, &run("checkout", 1, 0)).await;
    let admin = Browser::signed_in(&server, ADMIN_TOKEN).await;
    let csrf = admin.csrf().await;
    let path = format!("/console/incidents/{incident}/acknowledge");
    let head = server.head();

    assert_eq!(admin.post(&path, &[("by", "ann")]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        admin.post(&path, &[("csrf", "0".repeat(64).as_str()), ("by", "ann")]).await.status(),
        StatusCode::FORBIDDEN
    );
    let cross_site = admin
        .request(reqwest::Method::POST, &path)
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str()), ("by", "ann")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert!(cross_site.text().await.unwrap().contains("cross_origin"));
    let no_session =
        Browser::new(&server).post(&path, &[("csrf", csrf.as_str()), ("by", "ann")]).await;
    assert_eq!(no_session.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.head(), head, "a refused form appended an event");

    let accepted = admin
        .request(reqwest::Method::POST, &path)
        .header("origin", &server.base)
        .form(&[("csrf", csrf.as_str()), ("by", "ann"), ("note", "looking")])
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
    assert_eq!(accepted.headers()[LOCATION], format!("/console/incidents/{incident}"));
    assert_eq!(server.head(), head + 1);
    server.stop().await;
}

#[tokio::test]
async fn an_incident_is_acknowledged_noted_and_resolved_through_the_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let webhook = webhook(&server).await;
    let incident = open_incident(&server, &webhook, &run("checkout", 2, 1)).await;
    let admin = Browser::signed_in(&server, ADMIN_TOKEN).await;
    let csrf = admin.csrf().await;
    let page = format!("/console/incidents/{incident}");

    let html = admin.page(&page).await;
    assert!(html.contains(r#"id="acknowledge""#) && html.contains(r#"id="note""#));
    assert!(html.contains("not acknowledged"));
    let ack = admin
        .post(&format!("{page}/acknowledge"), &[("csrf", &csrf), ("by", "ann"), ("note", "on it")])
        .await;
    assert_eq!(ack.status(), StatusCode::SEE_OTHER);
    // The name is remembered for the next form.
    assert!(ack.headers()[SET_COOKIE].to_str().unwrap().starts_with("incidentd_name=ann;"));
    let again = admin.post(&format!("{page}/acknowledge"), &[("csrf", &csrf), ("by", "ann")]).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let note = admin
        .post(
            &format!("{page}/notes"),
            &[("csrf", &csrf), ("by", "bob; 100% & co"), ("text", "rolled back")],
        )
        .await;
    assert_eq!(note.status(), StatusCode::SEE_OTHER);
    // The remembered name comes back exactly as typed, however odd.
    let remembered =
        note.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let with_name = admin
        .request(reqwest::Method::GET, &page)
        .header(COOKIE, format!("{}; {remembered}", admin.cookie.as_deref().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        with_name.contains(r#"name="by" required maxlength="200" value="bob; 100% &amp; co""#),
        "{with_name}"
    );
    let empty =
        admin.post(&format!("{page}/notes"), &[("csrf", &csrf), ("by", " "), ("text", "x")]).await;
    assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
    server.deliver_run(&webhook, &run("checkout", 0, 0)).await;

    let html = admin.page(&page).await;
    let kinds: Vec<&str> =
        html.split(r#"data-kind=""#).skip(1).map(|s| s.split('"').next().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "monitor_run_reported",
            "monitor_run_reported",
            "incident_acknowledged",
            "note_added",
            "monitor_run_reported"
        ]
    );
    for text in [
        "Failing run opened the incident",
        "Acknowledged by <strong>ann</strong>",
        "<blockquote>on it</blockquote>",
        "Note by <strong>bob; 100% &amp; co</strong>",
        "Passing run resolved the incident",
        r#"<span class="badge resolved">resolved</span>"#,
    ] {
        assert!(html.contains(text), "the timeline lacks {text}:\n{html}");
    }
    assert!(!html.contains(r#"id="acknowledge""#), "a resolved incident offers acknowledgement");

    // Each step links to its event exactly as stored.
    let seq = attribute_after(&html, r#"href="/console/events/"#).unwrap();
    let raw = admin.get(&format!("/console/events/{seq}")).await;
    assert_eq!(raw.headers()[CONTENT_TYPE], "application/json");
    let event: Value = raw.json().await.unwrap();
    assert_eq!(event["seq"].to_string(), seq);
    assert_eq!(event["kind"], "monitor_run_reported");

    let list = admin.page("/console/incidents?status=resolved").await;
    assert!(list.contains(&incident));
    assert!(!admin.page("/console/incidents?status=open").await.contains(&incident));
    assert!(!admin.page("/console/incidents?monitor=nothing-like-it").await.contains(&incident));
    assert!(admin.page("/console/incidents?monitor=CHECK").await.contains(&incident));
    assert!(!admin.page("/console/incidents?from=2999-01-01").await.contains(&incident));
    assert!(admin.page("/console/incidents?to=2999-01-01").await.contains(&incident));
    assert!(!admin.page("/console/incidents?to=2000-01-01").await.contains(&incident));
    // The monitor page's link to all its incidents names the monitor exactly.
    let id = server.get("/v1/integrations").await.1["integrations"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let exact = format!("/console/incidents?monitor_uid=checkout&integration_id={id}");
    assert!(admin.page(&exact).await.contains(&incident));
    assert!(!admin.page("/console/incidents?monitor_uid=checkou").await.contains(&incident));
    let other = format!("/console/incidents?monitor_uid=checkout&integration_id={}", uuid_nil());
    assert!(!admin.page(&other).await.contains(&incident));
    assert_eq!(
        admin.get("/console/incidents?integration_id=nope").await.status(),
        StatusCode::BAD_REQUEST
    );
    server.stop().await;
}

#[tokio::test]
async fn incident_list_pages_through_every_incident_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let webhook = webhook(&server).await;
    for i in 0..7 {
        server.deliver_run(&webhook, &run(&format!("m{i}"), 1, 0)).await;
    }
    let browser = Browser::signed_in(&server, ADMIN_TOKEN).await;
    let mut seen = Vec::new();
    let mut next = Some("/console/incidents?limit=3".to_owned());
    while let Some(path) = next.take() {
        let html = browser.page(&path).await;
        seen.extend(
            html.split(r#"data-incident=""#)
                .skip(1)
                .map(|s| s.split('"').next().unwrap().to_owned()),
        );
        next =
            attribute_after(&html, r#"rel="next" href=""#).map(|href| href.replace("&amp;", "&"));
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    seen.dedup();
    assert_eq!(seen.len(), 7);
    let bad = browser.get("/console/incidents?limit=0").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("`limit` must be between 1 and 1000, got 0"));
    assert_eq!(
        browser.get("/console/incidents?from=yesterday").await.status(),
        StatusCode::BAD_REQUEST
    );
    server.stop().await;
}

#[tokio::test]
async fn monitor_page_shows_runs_availability_and_time_to_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let webhook = webhook(&server).await;
    for (failed, errors) in [(1, 0), (0, 2), (0, 0), (0, 0), (3, 0), (0, 0), (0, 0), (0, 0)] {
        server.deliver_run(&webhook, &run("orders/eu", failed, errors)).await;
    }
    let browser = Browser::signed_in(&server, ADMIN_TOKEN).await;
    let monitors = browser.page("/console/monitors?q=orders").await;
    let link = attribute_after(&monitors, r#"<td><a href=""#).unwrap();
    assert!(link.ends_with("/orders%2Feu"), "{link}");
    for range in ["", "?range=24h", "?range=all"] {
        let html = browser.page(&format!("{link}{range}")).await;
        assert!(html.contains("62.50 % of 8 runs passed"), "{html}");
        assert!(html.contains("over 2 resolved incidents"), "{html}");
        let strip: Vec<&str> =
            html.split(r#"<li class=""#).skip(1).map(|s| s.split('"').next().unwrap()).collect();
        assert_eq!(
            strip,
            [
                "failing", "failing", "passing", "passing", "failing", "passing", "passing",
                "passing"
            ]
        );
    }
    assert_eq!(browser.get(&format!("{link}?range=1y")).await.status(), StatusCode::BAD_REQUEST);
    let unknown = link.replace("orders%2Feu", "nope");
    assert_eq!(browser.get(&unknown).await.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn integrations_are_added_rotated_and_revoked_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let admin = Browser::signed_in(&server, ADMIN_TOKEN).await;
    let csrf = admin.csrf().await;
    let page = admin.page("/console/integrations").await;
    assert!(page.contains("Postman Monitors") && page.contains("No integrations yet."));

    let created = admin
        .post(
            "/console/integrations",
            &[("csrf", &csrf), ("kind", "postman_monitors"), ("name", "payments <team>")],
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let html = created.text().await.unwrap();
    let url = attribute_after(&html, r#"id="webhook-url" type="text" readonly value=""#).unwrap();
    assert!(url.starts_with(&format!("{}/v1/hooks/postman/whk_", server.base)), "{url}");
    assert!(html.contains("Notify for all completed monitor runs"));
    assert!(html.contains("payments &lt;team&gt;"));
    server.deliver_run(&url, &run("checkout", 0, 0)).await;
    // The URL is shown once: the list never carries it.
    let list = admin.page("/console/integrations").await;
    let token = url.rsplit('/').next().unwrap();
    assert!(!list.contains(token));

    let id = server.get("/v1/integrations").await.1["integrations"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad_grace = admin
        .post(
            &format!("/console/integrations/{id}/rotate"),
            &[("csrf", &csrf), ("grace_s", "soon")],
        )
        .await;
    assert_eq!(bad_grace.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let rotated = admin
        .post(&format!("/console/integrations/{id}/rotate"), &[("csrf", &csrf), ("grace_s", "0")])
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let html = rotated.text().await.unwrap();
    let new_url =
        attribute_after(&html, r#"id="webhook-url" type="text" readonly value=""#).unwrap();
    assert_ne!(new_url, url);
    assert!(html.contains("The previous URL stopped working now."));
    assert_eq!(
        server.deliver(&url, run("checkout", 0, 0).to_string()).await.0,
        StatusCode::NOT_FOUND
    );
    server.deliver_run(&new_url, &run("checkout", 0, 0)).await;

    let confirm = admin.page(&format!("/console/integrations/{id}/revoke")).await;
    assert!(confirm.contains("Revoke payments &lt;team&gt;?"));
    let revoked =
        admin.post(&format!("/console/integrations/{id}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    assert!(admin.page("/console/integrations").await.contains("revoked"));
    assert_eq!(
        server.deliver(&new_url, run("checkout", 0, 0).to_string()).await.0,
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

#[tokio::test]
async fn audit_page_verifies_replays_and_exports_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let webhook = webhook(&server).await;
    open_incident(&server, &webhook, &run("checkout", 1, 0)).await;
    let admin = Browser::signed_in(&server, ADMIN_TOKEN).await;

    let html = admin.page("/console/audit").await;
    assert!(html.contains(&format!("event {}", server.head())));
    assert!(html.contains("not run since start-up") && html.contains("no replay since start-up"));
    let csrf = admin.csrf().await;
    let verified = admin.post("/console/audit/verify", &[("csrf", &csrf)]).await;
    assert_eq!(verified.status(), StatusCode::SEE_OTHER);
    assert_eq!(verified.headers()[LOCATION], "/console/audit");
    let html = admin.page("/console/audit").await;
    assert!(
        html.contains("chain intact") && html.contains("3 events verified up to event 3"),
        "{html}"
    );

    let replayed = admin.post("/console/audit/replay", &[("csrf", &csrf)]).await;
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER);
    let html = admin.page("/console/audit").await;
    assert!(html.contains("3 events in") && html.contains("identical"), "{html}");

    let export = admin.get("/console/export.ndjson").await;
    assert_eq!(export.status(), StatusCode::OK);
    assert!(export.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    let text = export.text().await.unwrap();
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    server.stop().await;
}

#[tokio::test]
async fn errors_are_pages_for_browsers_and_json_for_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let admin = Browser::signed_in(&server, ADMIN_TOKEN).await;

    let page = admin.get("/console/incidents/not-an-id").await;
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("incident not-an-id not found"));

    let json = admin
        .client
        .get(format!("{}/console/no-such-page", admin.base))
        .header(COOKIE, admin.cookie.as_deref().unwrap())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::NOT_FOUND);
    let body: Value = json.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    // Every page forbids framing and foreign scripts, and is never cached.
    let response = admin.get("/console/incidents").await;
    let csp = response.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(response.headers()["cache-control"], "no-store");
    let css = admin.get("/console/assets/console.css").await;
    assert_eq!(css.headers()[CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(admin.get("/console/assets/other.js").await.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

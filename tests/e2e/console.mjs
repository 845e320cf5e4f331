// End-to-end test of the web console in headless Chromium. tests/e2e.sh starts the server and
// passes BASE_URL, ADMIN_TOKEN, CHROMIUM and ARTIFACTS; this script seeds data over the JSON API,
// then drives the browser through sign-in, the incident list, a timeline, an acknowledgement, a
// monitor, an integration, the audit page and a reader's session, asserting on the DOM and saving
// a screenshot of each page into ARTIFACTS.
import assert from "node:assert/strict";
import { join } from "node:path";
import { chromium } from "playwright-core";

const { BASE_URL, ADMIN_TOKEN, CHROMIUM, ARTIFACTS } = process.env;
for (const [name, value] of Object.entries({ BASE_URL, ADMIN_TOKEN, CHROMIUM, ARTIFACTS })) {
  assert.ok(value, `${name} must be set (run tests/e2e.sh)`);
}

async function api(method, path, body) {
  const response = await fetch(BASE_URL + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

function run(uid, name, failedTests, errors) {
  return {
    collection_name: "Checkout smoke",
    monitor_name: name,
    monitor_uid: uid,
    metrics: { errors, warnings: 0, failedTests, passedTests: 9, requestCount: 4, totalLatency: 812 },
  };
}

async function deliver(webhook, body) {
  const response = await fetch(webhook, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, 202, text);
  return JSON.parse(text);
}

// --- data: two incidents, one of them on a monitor whose name is markup ---------------------
const hostile = "<script>window.__pwned = 1</script>Checkout EU";
const { webhook_url: webhook } = await api("POST", "/v1/integrations", { name: "Postman production" });
await deliver(webhook, run("checkout-eu", hostile, 2, 0));
const { incident } = await deliver(webhook, run("checkout-eu", hostile, 1, 1));
await deliver(webhook, run("search-us", "Search US", 0, 3));
const { token: readerToken } = await api("POST", "/v1/tokens", { name: "auditor" });

// The flags keep Chromium off the network and out of first-run work; playwright gives it a new
// empty profile of its own, removed when the browser closes.
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

let step = 0;
async function shot(page, name) {
  step += 1;
  await page.screenshot({ path: join(ARTIFACTS, `${String(step).padStart(2, "0")}-${name}.png`), fullPage: true });
}

async function signIn(context, token) {
  const page = await context.newPage();
  await page.goto(`${BASE_URL}/console/`);
  assert.match(page.url(), /\/console\/sign-in\?next=/);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(/\/console\/incidents$/), page.click("button[type=submit]")]);
  return page;
}

try {
  // --- sign-in ---------------------------------------------------------------------------------
  const admin = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const signInPage = await admin.newPage();
  await signInPage.goto(`${BASE_URL}/console/incidents`);
  assert.match(signInPage.url(), /\/console\/sign-in\?next=%2Fconsole%2Fincidents$/);
  await signInPage.fill("#token", "adm_not-the-token");
  await signInPage.click("button[type=submit]");
  assert.match(await signInPage.textContent("p.error"), /not valid/);
  await shot(signInPage, "sign-in-refused");
  await signInPage.close();

  const page = await signIn(admin, ADMIN_TOKEN);
  const [session] = (await admin.cookies()).filter((c) => c.name === "incidentd_session");
  assert.ok(session, "the session cookie is set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(await page.evaluate(() => document.cookie.includes("incidentd_session")), false);
  assert.ok(!page.url().includes(ADMIN_TOKEN));

  // --- incident list ---------------------------------------------------------------------------
  assert.equal(await page.locator("#incidents tbody tr").count(), 2);
  assert.equal(await page.evaluate(() => window.__pwned), undefined, "a payload script ran");
  const row = page.locator(`tr[data-incident="${incident.id}"]`);
  assert.ok((await row.textContent()).includes(hostile), "the markup is shown as text");
  await shot(page, "incidents");
  await page.selectOption("select[name=status]", "open");
  await page.fill("input[name=monitor]", "search");
  await Promise.all([page.waitForURL(/status=open/), page.click("form.filters button")]);
  assert.equal(await page.locator("#incidents tbody tr").count(), 1);
  assert.match(await page.textContent("#incidents tbody"), /Search US/);
  await shot(page, "incidents-filtered");

  // --- timeline and acknowledgement --------------------------------------------------------------
  await page.goto(`${BASE_URL}/console/incidents`);
  await Promise.all([page.waitForURL(/\/console\/incidents\/[0-9a-f-]+$/), row.locator("text=Timeline").click()]);
  assert.ok((await page.textContent("h1")).includes(hostile));
  assert.equal(await page.evaluate(() => window.__pwned), undefined, "a payload script ran");
  assert.deepEqual(
    await page.locator("ol.timeline > li").evaluateAll((items) => items.map((li) => li.dataset.kind)),
    ["monitor_run_reported", "monitor_run_reported"],
  );
  assert.match(await page.textContent("ol.timeline > li:first-child .what"), /opened the incident/);
  await shot(page, "timeline-open");
  await page.fill("#acknowledge input[name=by]", "Ann Auditor");
  await page.fill("#acknowledge textarea[name=note]", "Rolling back the checkout deploy");
  await Promise.all([page.waitForURL(`${BASE_URL}/console/incidents/${incident.id}`), page.click("#acknowledge button")]);
  assert.equal(await page.locator("#acknowledge").count(), 0, "the acknowledged incident still offers the form");
  assert.match(await page.textContent("h1 .badge"), /acknowledged/);
  const last = page.locator("ol.timeline > li").last();
  assert.equal(await last.getAttribute("data-kind"), "incident_acknowledged");
  assert.match(await last.textContent(), /Acknowledged by Ann Auditor/);
  assert.match(await last.textContent(), /Rolling back the checkout deploy/);
  assert.notEqual(await page.textContent("#tta"), "not acknowledged");
  // The name typed once fills the next form.
  assert.equal(await page.inputValue("#note input[name=by]"), "Ann Auditor");
  await shot(page, "timeline-acknowledged");
  const stored = await api("GET", `/v1/incidents/${incident.id}`);
  assert.equal(stored.acknowledged_by, "Ann Auditor");

  // The raw JSON of an event is one click away.
  const raw = await admin.request.get(BASE_URL + (await last.locator("a", { hasText: "raw JSON" }).getAttribute("href")));
  assert.equal((await raw.json()).kind, "incident_acknowledged");

  // --- monitor page ------------------------------------------------------------------------------
  await Promise.all([page.waitForURL(/\/console\/monitors\//), page.click("dl.facts a")]);
  assert.equal(await page.locator("#strip li").count(), 2);
  assert.match(await page.textContent("#availability"), /0\.00 % of 2 runs passed/);
  await shot(page, "monitor");

  // --- integrations: add one and see its URL once ---------------------------------------------------
  await page.click("nav >> text=Integrations");
  await page.fill("#add input[name=name]", "Staging monitors");
  await Promise.all([page.waitForURL(`${BASE_URL}/console/integrations`), page.click("#add button")]);
  const url = await page.inputValue("#webhook-url");
  assert.ok(url.startsWith(`${BASE_URL}/v1/hooks/postman/whk_`), url);
  assert.equal(await page.isVisible("button[data-copy]"), true, "the script reveals the copy button");
  assert.match(await page.textContent("#postman-steps"), /Notify for all completed monitor runs/);
  await shot(page, "integration-created");
  await deliver(url, run("staging-login", "Staging login", 0, 0));

  // --- audit -----------------------------------------------------------------------------------------
  await page.click("nav >> text=Audit");
  assert.match(await page.textContent("#verify"), /not run since start-up/);
  // Both forms post and come back to this same page: wait for the new document, not the URL.
  await Promise.all([page.waitForEvent("load"), page.click("text=Verify the chain now")]);
  assert.match(await page.textContent("#verify"), /chain intact/);
  await Promise.all([page.waitForEvent("load"), page.click("text=Replay the log now")]);
  assert.match(await page.textContent("#replay"), /identical/);
  await shot(page, "audit");

  // --- a reader reads, without JavaScript, and cannot act ------------------------------------------
  const reader = await browser.newContext({ javaScriptEnabled: false });
  const readerPage = await signIn(reader, readerToken);
  assert.equal(await readerPage.locator("#incidents tbody tr").count(), 2);
  assert.equal(await readerPage.locator("nav >> text=Integrations").count(), 0);
  await readerPage.goto(`${BASE_URL}/console/incidents/${incident.id}`);
  assert.equal(await readerPage.locator("#acknowledge, #note").count(), 0);
  await shot(readerPage, "reader-timeline");
  const csrf = await readerPage.getAttribute("input[name=csrf]", "value");
  const forged = await reader.request.post(`${BASE_URL}/console/incidents/${incident.id}/notes`, {
    form: { csrf, by: "reader", text: "should not land" },
    headers: { origin: BASE_URL },
  });
  assert.equal(forged.status(), 403);
  const after = await api("GET", `/v1/incidents/${incident.id}`);
  assert.equal(after.timeline.length, 3, "the reader's note was appended");

  // --- sign-out ------------------------------------------------------------------------------------
  await Promise.all([page.waitForURL(/\/console\/sign-in$/), page.click("text=Sign out")]);
  await page.goto(`${BASE_URL}/console/incidents`);
  assert.match(page.url(), /\/console\/sign-in/);
  console.log(`console e2e: ok (${step} screenshots in ${ARTIFACTS})`);
} catch (error) {
  // Keep what every open page showed when the test failed.
  for (const [i, open] of browser.contexts().flatMap((c) => c.pages()).entries()) {
    await open.screenshot({ path: join(ARTIFACTS, `failure-${i}.png`), fullPage: true }).catch(() => {});
  }
  throw error;
} finally {
  await browser.close();
}

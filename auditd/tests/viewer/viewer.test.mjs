// The viewer page in a real browser (headless Chromium) against auditd on loopback, with
// real data: the token prompt, filtering, paging, the detail pane, a hostile message shown
// as text, and the live tail. Run by auditd/tests/viewer.rs, which passes AUDITD_BIN.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const TOKEN = "viewer-test-token-0123456789";
let demo, base, dbUrl, browser, page;

function psql(sql) {
  execFileSync("psql", [dbUrl, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql]);
}

before(async () => {
  demo = spawn(process.env.AUDITD_BIN, ["demo", "--rounds", "12", "--listen", "127.0.0.1:0"], {
    env: { ...process.env, AUDITD_TOKENS: `viewer:${TOKEN}`, DATABASE_URL: "" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: demo.stdout });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("auditd demo did not start")), 120_000);
    lines.on("line", (line) => {
      const url = line.match(/psql '([^']+)'/);
      if (url) dbUrl = url[1];
      const page = line.match(/See them in a browser: (http:\/\/[^ ]+)\//);
      if (page) base = page[1];
      if (line.startsWith("Press Ctrl-C")) { clearTimeout(timer); resolve(); }
    });
    demo.on("exit", (code) => reject(new Error(`auditd demo exited with ${code}`)));
  });
  assert.ok(base && dbUrl, "the demo told where to look");
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await browser.newPage();
  page.setDefaultTimeout(15_000);
  page.on("pageerror", (e) => { throw e; });
});

after(async () => {
  if (browser) await browser.close();
  if (demo && demo.exitCode === null) {
    const exited = new Promise((resolve) => demo.on("exit", resolve));
    demo.kill("SIGINT"); // the demo removes its throwaway database on SIGINT
    await exited;
  }
});

const rows = () => page.locator("#results tbody tr");

// The detail pane's integrity line, once the proof was fetched and checked.
async function integrityVerdict() {
  await waitUntil(() => !["—", "Checking…"].includes(document.getElementById("detail-integrity").textContent),
    "the proof is checked");
  return page.locator("#detail-integrity").textContent();
}

// Polls a predicate through page.evaluate (a CDP call the page's CSP does not govern).
// page.waitForFunction would be shorter, but when its first try fails it re-evaluates the
// predicate as a string inside the page, which the CSP rightly refuses (`unsafe-eval`).
async function waitUntil(predicate, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await page.evaluate(predicate))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("the page asks for the token once, then lists the newest records", async () => {
  const response = await page.goto(base + "/");
  const csp = response.headers()["content-security-policy"];
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  await page.locator("#token-dialog").waitFor({ state: "visible" });
  await page.getByLabel("Token", { exact: true }).fill(TOKEN);
  await page.getByRole("button", { name: "Use token" }).click();
  await rows().first().waitFor();
  assert.equal(await rows().count(), 50);
  const times = await page.locator("#results tbody td.time .when").allTextContents();
  assert.deepEqual([...times].sort().reverse(), times, "newest first");
  // Each row says what the signed log says of it; the demo seals as it goes.
  const seals = await page.locator("#results tbody td.time .seal").evaluateAll(
    (marks) => marks.map((m) => m.className));
  assert.equal(seals.length, 50, "every row has a seal mark");
  assert.ok(seals.every((c) => /^seal seal-(sealed|committed|unproven)$/.test(c)), seals.join());
  assert.ok(seals.includes("seal seal-sealed"), "the demo's sealed records show as sealed");
  // Asked once: a reload keeps the token for the session.
  await page.reload();
  await rows().first().waitFor();
  assert.equal(await page.locator("#token-dialog").isVisible(), false);
});

test("filters select rows and show in the URL", async () => {
  await page.getByLabel("User name").fill("mallory");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForURL(/username=mallory/);
  await waitUntil(() => {
    const users = [...document.querySelectorAll("#results tbody tr td:nth-child(4)")];
    return users.length > 0 && users.every((td) => td.textContent === "mallory");
  }, "only mallory's rows are listed");
  assert.equal(await rows().count(), 12);
  const severities = await page.locator("#results tbody .sev").allTextContents();
  assert.ok(severities.every((s) => s === "warning"));
  // The URL is shareable: opening it gives the same filter.
  await page.goto(page.url());
  await rows().first().waitFor();
  assert.equal(await page.getByLabel("User name").inputValue(), "mallory");
  assert.equal(await rows().count(), 12);
  await page.getByRole("button", { name: "Clear" }).click();
  await page.waitForURL((url) => !url.search.includes("username"));
});

test("keyset paging goes older and back", async () => {
  // The demo's own event types: the viewer's reads add audit_access records on top.
  await page.goto(base + "/?event_type=authentication,onboarding,credential_management,backup,sync,job_execution");
  await rows().first().waitFor();
  const firstPage = await rows().first().getAttribute("data-id");
  await page.getByRole("button", { name: "Older →" }).click();
  // (Locators, not waitForFunction: the page's CSP rightly refuses evaluated strings.)
  await page.locator(`#results tbody tr[data-id="${firstPage}"]`).waitFor({ state: "detached" });
  const secondPage = await page.locator("#results tbody tr").evaluateAll((trs) => trs.map((tr) => tr.dataset.id));
  assert.ok(secondPage.length > 0 && !secondPage.includes(firstPage));
  await page.getByRole("button", { name: "← Newer" }).click();
  await page.locator(`#results tbody tr:first-child[data-id="${firstPage}"]`).waitFor();
});

test("a row opens a detail pane with the whole record and its metadata", async () => {
  await page.getByLabel("Event types").fill("backup");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForURL(/event_type=backup/);
  await rows().first().waitFor();
  // The table's mark and the pane's check agree.
  assert.equal(await rows().first().locator(".seal").getAttribute("class"), "seal seal-sealed");
  await rows().first().focus();
  await page.keyboard.press("Enter");
  await page.locator("#detail").waitFor({ state: "visible" });
  const metadata = JSON.parse(await page.locator("#detail-metadata").textContent());
  assert.equal(metadata.total_devices, 48);
  assert.match(await page.locator("#detail-fields").textContent(), /backup/);
  // The demo sealed its records: the pane fetched the proof and checked it here.
  const integrity = await integrityVerdict();
  assert.match(integrity, /^✓ Sealed/);
  assert.match(integrity, /checks out in this browser/);
  assert.match(integrity, /only its public key tells/);
  await page.keyboard.press("Escape");
  await page.locator("#detail").waitFor({ state: "hidden" });
});

test("a record changed in the database after it was sealed shows as changed", async () => {
  // A superuser, past the append-only trigger, edits a sealed record.
  psql(`SET session_replication_role = replica;
        UPDATE audit_logs SET message = 'Sync completed (tampered)'
        WHERE id = (SELECT min(id) FROM audit_logs WHERE event_type = 'sync')`);
  await page.goto(base + "/?event_type=sync&q=tampered");
  await rows().first().waitFor();
  await rows().first().click();
  assert.match(await integrityVerdict(), /^✗ Changed after it was committed/);
  await page.keyboard.press("Escape");
});

test("a hostile message is shown as text, never run", async () => {
  psql(`INSERT INTO audit_logs (username, event_type, message, metadata) VALUES
        ('attacker', 'xss', '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">',
         '{"note": "<b>bold?</b>"}')`);
  await page.goto(base + "/?event_type=xss");
  await rows().first().waitFor();
  const message = await page.locator("#results tbody td.message").first().textContent();
  assert.equal(message, '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">');
  await rows().first().click();
  assert.match(await page.locator("#detail-metadata").textContent(), /<b>bold\?<\/b>/);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.equal(await page.locator("#results img, #detail img, #results script").count(), 0);
});

test("the live tail shows a record as soon as it is committed", async () => {
  await page.goto(base + "/?event_type=live");
  await page.locator("#status").filter({ hasText: "No records match." }).waitFor();
  await page.getByLabel("Live tail").check();
  await page.waitForTimeout(500);
  psql(`INSERT INTO audit_logs (username, event_type, message) VALUES ('tailer', 'live', 'arrived just now')`);
  await page.locator("#results tbody td.message", { hasText: "arrived just now" }).waitFor({ timeout: 15_000 });
  await page.getByLabel("Live tail").uncheck();
});

test("times show in local time on request, and since/until follow the zone shown", async () => {
  const context = await browser.newContext({ timezoneId: "Asia/Kolkata" });
  const local = await context.newPage();
  local.setDefaultTimeout(15_000);
  local.on("pageerror", (e) => { throw e; });
  await local.goto(base + "/?event_type=backup");
  await local.locator("#token-dialog").waitFor({ state: "visible" });
  await local.getByLabel("Token", { exact: true }).fill(TOKEN);
  await local.getByRole("button", { name: "Use token" }).click();
  const firstTime = local.locator("#results tbody td.time .when").first();
  await firstTime.waitFor();
  const utc = await firstTime.textContent();
  assert.match(utc, /Z$/, "UTC unless asked otherwise");

  await local.getByLabel("Local time").check();
  await local.locator("#results tbody td.time", { hasText: "+05:30" }).first().waitFor();
  const shown = await firstTime.textContent();
  assert.equal(
    new Date(shown.replace(" ", "T")).getTime(),
    new Date(utc.replace(" ", "T")).getTime(),
    `${shown} is the instant ${utc}`,
  );
  assert.equal(await local.locator("thead .zone").textContent(), "local");

  // A since typed in local time goes to the API (and the URL) in UTC.
  await local.getByLabel("Since (local)").fill("2026-01-01T05:30:15");
  await local.getByRole("button", { name: "Search" }).click();
  await local.waitForURL(/since=2026-01-01T00%3A00%3A15Z/);

  // The choice is kept, and the URL's since is shown back in local time.
  await local.reload();
  await local.locator("#results tbody td.time", { hasText: "+05:30" }).first().waitFor();
  assert.equal(await local.getByLabel("Since (local)").inputValue(), "2026-01-01T05:30:15");
  await context.close();
});

test("an export downloads straight from the server through a signed link", async () => {
  await page.goto(base + "/?event_type=backup");
  await rows().first().waitFor();
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Export CSV" }).click(),
  ]);
  // The browser fetched the export itself: the page never held it.
  assert.match(download.url(), /\/api\/v1\/logs\/export\?event_type=backup&format=csv&link_by=viewer&link_expires=\d+&link_signature=[0-9a-f]{64}$/);
  assert.equal(download.suggestedFilename(), "audit_logs.csv");
  const { readFile } = await import("node:fs/promises");
  const lines = (await readFile(await download.path(), "utf8")).trimEnd().split("\r\n");
  assert.match(lines[0], /^id,created_at,username/);
  const expected = execFileSync("psql", [dbUrl, "-At", "-c",
    "SELECT count(*) FROM audit_logs WHERE event_type = 'backup'"]).toString().trim();
  assert.equal(lines.length - 1, Number(expected));
  assert.ok(lines.slice(1).every((line) => line.includes(",backup,")), "only backup records");
});

// ---- the overview: a histogram over time and facets, drawn by the page itself ----

const SHOTS = new URL("./screenshots/", import.meta.url);

async function shot(target, name, fullPage = true) {
  const { mkdir } = await import("node:fs/promises");
  await mkdir(SHOTS, { recursive: true });
  await target.screenshot({ path: new URL(name + ".png", SHOTS).pathname, fullPage });
}

test("the demo's records are spread over two weeks, with its two incidents", async () => {
  const spread = execFileSync("psql", [dbUrl, "-At", "-c",
    `SELECT count(DISTINCT created_at::date), count(*) FILTER (WHERE ip_address = '198.51.100.77'),
            count(*) FILTER (WHERE message LIKE '%Nautobot API returned 503')
     FROM audit_logs WHERE created_at > now() - interval '15 days'`]).toString().trim().split("|").map(Number);
  assert.ok(spread[0] >= 8, `records on ${spread[0]} days`);
  assert.equal(spread[1], 150, "the burst of failed logins from one address");
  assert.equal(spread[2], 40, "the onboarding outage");
});

test("the histogram shows records over time, and dragging across it sets the window", async () => {
  await page.setViewportSize({ width: 1400, height: 900 });
  await page.goto(base + "/");
  await page.locator("#histogram rect.sev-info").first().waitFor();
  assert.equal(await page.locator("#histogram").getAttribute("aria-label"), "Records over time");
  assert.match(await page.locator("#histogram-text").textContent(), /^Records over time: \d+ from /);
  // (Waited for: once, under CI's load, the first drawing had fewer rows; the caption
  // says which window and total it drew, should it happen again.)
  await waitUntil(() => document.querySelectorAll("#histogram-table tbody tr").length > 5,
    "a text alternative with the counts").catch(async (e) => {
    throw new Error(`${e.message}: ${await page.locator("#histogram-text").textContent()}, ` +
      `${await page.locator("#histogram-table tbody tr").count()} rows`);
  });
  // Every severity the demo writes is drawn, stacked.
  for (const severity of ["info", "warning", "error", "critical"]) {
    assert.ok(await page.locator(`#histogram rect.sev-${severity}`).count() > 0, severity);
  }
  await shot(page, "1-overview");
  // The labels of the filters lay out on one line each at 1,400 px.
  const since = await page.locator("label", { hasText: "Since (UTC)" }).boundingBox();
  const userName = await page.locator("label", { hasText: "User name" }).boundingBox();
  // (A date input stands a few pixels taller than a text one; a wrapped line adds 15.)
  assert.ok(since.height < userName.height + 8, `Since label ${since.height}px high, User name ${userName.height}px`);

  const box = await page.locator("#histogram").boundingBox();
  await page.mouse.move(box.x + box.width * 0.35, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.55, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForURL(/since=.*until=/);
  const url = new URL(page.url());
  const since0 = Date.parse(url.searchParams.get("since")), until0 = Date.parse(url.searchParams.get("until"));
  assert.ok(until0 > since0, "a window, in order");
  const span = until0 - since0;
  assert.ok(span > 86400e3 && span < 6 * 86400e3, `about a fifth of two weeks: ${span / 3600e3} h`);
  await page.locator("#histogram rect").first().waitFor();
  await waitUntil(() => document.querySelectorAll("#results tbody tr").length > 0, "rows in the window");
  const times = await page.locator("#results tbody td.time").evaluateAll((tds) => tds.map((td) => td.title));
  assert.ok(times.every((t) => Date.parse(t) >= since0 && Date.parse(t) < until0), "the table shows the window only");
  await shot(page, "2-brushed");
});

test("a facet shows the most common values and filters on click", async () => {
  await page.goto(base + "/");
  const top = page.locator('#facets button[data-facet="username"]').first();
  await top.waitFor();
  const user = await top.locator(".name").textContent();
  const count = Number(await top.locator(".count").textContent());
  assert.ok(count > 0);
  await top.click();
  await page.waitForURL(new RegExp("username=" + encodeURIComponent(user)));
  await waitUntil(() => {
    const users = [...document.querySelectorAll("#results tbody tr td:nth-child(4)")];
    return users.length > 0 && users.every((td) => td.textContent === users[0].textContent);
  }, "one user's rows");
  assert.equal(await page.locator("#results tbody tr td:nth-child(4)").first().textContent(), user);
  await shot(page, "3-facet");
});

test("the detail pane pivots to the records of the same address", async () => {
  await page.goto(base + "/?event_type=onboarding&severity=error");
  await rows().first().waitFor();
  await rows().first().click();
  await page.locator("#detail").waitFor({ state: "visible" });
  const ip = await page.locator("#detail-fields dd").nth(6).textContent();
  await shot(page, "4-detail");
  await page.getByRole("button", { name: "This address's records" }).click();
  await page.waitForURL(new RegExp("ip_address=" + encodeURIComponent(ip)));
  assert.equal(new URL(page.url()).searchParams.get("event_type"), null, "only the address is kept");
});

test("dark mode follows the browser, and the page fits a phone", async () => {
  const context = await browser.newContext({ colorScheme: "dark", viewport: { width: 390, height: 844 } });
  const phone = await context.newPage();
  phone.on("pageerror", (e) => { throw e; });
  await phone.goto(base + "/");
  await phone.locator("#token-dialog").waitFor({ state: "visible" });
  await phone.getByLabel("Token", { exact: true }).fill(TOKEN);
  await phone.getByRole("button", { name: "Use token" }).click();
  await phone.locator("#histogram rect").first().waitFor();
  const background = await phone.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(background, "rgb(21, 24, 30)", "the dark background");
  await shot(phone, "5-phone-dark", false);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no sideways scrolling at phone width (${overflow}px over)`);
  await context.close();
  const laptop = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const small = await laptop.newPage();
  await small.goto(base + "/");
  await small.locator("#token-dialog").waitFor({ state: "visible" });
  await small.getByLabel("Token", { exact: true }).fill(TOKEN);
  await small.getByRole("button", { name: "Use token" }).click();
  await small.locator("#histogram rect").first().waitFor();
  await shot(small, "6-1280x720", false);
  await laptop.close();
});

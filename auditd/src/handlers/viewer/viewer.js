// The audit log viewer. Plain JavaScript, no build step, no third-party code.
//
// Log text is attacker-controlled: every value reaches the page through textContent, never
// as HTML; the server's Content-Security-Policy forbids inline script on top of that.
"use strict";

const FILTERS = ["username", "user_id", "event_type", "severity", "min_severity", "resource_type",
  "resource_id", "resource_name", "ip_address", "since", "until", "q"];
const TOKEN_KEY = "auditd-token";
const PAGE = 50;

const $ = (id) => document.getElementById(id);
const form = $("filters");
const tbody = document.querySelector("#results tbody");
const status = $("status");

let pages = [null];      // cursors of the pages visited; the last one is shown
let nextCursor = null;
let tailCursor = null;
let tailing = false;
let tailAbort = null;

function say(text, isError) {
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

// ---- the token: asked once, kept for the browser session ----

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// One prompt at a time: the table and the overview may both be refused at once.
let asking = null;

function askToken() {
  if (!asking) asking = promptToken().finally(() => { asking = null; });
  return asking;
}

function promptToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    $("token").value = "";
    dialog.addEventListener("close", () => {
      const value = $("token").value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      resolve(Boolean(value));
    }, { once: true });
    dialog.showModal();
  });
}

async function api(path, options = {}) {
  for (;;) {
    const headers = {};
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    const response = await fetch(path, { headers, signal: options.signal });
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      if (await askToken()) continue;
      throw new Error("a bearer token is required");
    }
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try {
        const body = await response.json();
        if (body.error) {
          message = body.error.message + (body.error.parameter ? " (" + body.error.parameter + ")" : "");
        }
      } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return response;
  }
}

// ---- filters <-> URL ----

// ---- times: UTC as stored, or the browser's local time ----

const LOCAL_TIME_KEY = "auditd.localTime";
let localTime = localStorage.getItem(LOCAL_TIME_KEY) === "1";

function pad(n) {
  return String(n).padStart(2, "0");
}

// A local date and time as a datetime-local value: 2026-11-27T14:30:00.
function localInput(date) {
  return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
    "T" + pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
}

// A record's time as shown: in UTC, or in local time with its offset (+05:30).
function showTime(rfc3339) {
  if (!localTime) return rfc3339.replace("T", " ").replace(/\.\d+Z$/, "Z");
  const date = new Date(rfc3339);
  if (isNaN(date)) return rfc3339;
  const offset = -date.getTimezoneOffset();
  const sign = offset < 0 ? "-" : "+";
  return localInput(date).replace("T", " ") + sign +
    pad(Math.floor(Math.abs(offset) / 60)) + ":" + pad(Math.abs(offset) % 60);
}

// A since/until input as the API wants it: read as UTC or as local time, as labelled.
function toRfc3339(value) {
  if (!value) return "";
  const full = value.length === 16 ? value + ":00" : value;
  if (!localTime) return full + "Z";
  const date = new Date(full); // no zone in a datetime-local value: local time
  return isNaN(date) ? "" : date.toISOString().replace(/\.000Z$/, "Z");
}

function fromRfc3339(text) {
  if (!text) return "";
  if (!localTime) return text.replace(/Z$/, "").replace(/\.\d+$/, "").slice(0, 19);
  const date = new Date(text);
  return isNaN(date) ? "" : localInput(date);
}

function showZone() {
  for (const label of document.querySelectorAll(".zone")) {
    label.textContent = localTime ? "local" : "UTC";
  }
  $("local-time").checked = localTime;
}

// Switching keeps the since/until instants, shown in the new zone.
function setLocalTime(on) {
  const kept = ["since", "until"].map((name) => toRfc3339(form.elements[name].value));
  localTime = on;
  localStorage.setItem(LOCAL_TIME_KEY, on ? "1" : "0");
  ["since", "until"].forEach((name, i) => { form.elements[name].value = fromRfc3339(kept[i]); });
  showZone();
  load();
  loadOverview();
}

function filterParams() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    let value = form.elements[name].value.trim();
    if (name === "since" || name === "until") value = toRfc3339(value);
    if (value) params.set(name, value);
  }
  return params;
}

function loadFiltersFromUrl() {
  const params = new URLSearchParams(location.search);
  for (const name of FILTERS) {
    let value = params.get(name) || "";
    if (name === "since" || name === "until") value = fromRfc3339(value);
    form.elements[name].value = value;
  }
}

// ---- rendering: text only ----

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

const SEAL_MARKS = {
  sealed: { mark: "✓", title: "Sealed into the signed log; open it to check its proof in this browser" },
  committed: { mark: "○", title: "Committed with a proof; not sealed into the signed log yet" },
  unproven: { mark: "·", title: "Written without integrity: there is no proof for this record" },
};

function rowFor(record) {
  const tr = document.createElement("tr");
  tr.tabIndex = 0;
  tr.dataset.id = record.id;
  // The full time (to the microsecond) on hover.
  const time = cell(tr, "", "time");
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = showTime(record.created_at);
  time.append(when);
  time.title = record.created_at;
  const seal = SEAL_MARKS[record.seal_status];
  if (seal) {
    // What the signed log says of it; the detail pane checks the proof itself.
    const mark = document.createElement("span");
    mark.className = "seal seal-" + record.seal_status;
    mark.textContent = seal.mark;
    mark.title = seal.title;
    mark.setAttribute("aria-label", seal.title);
    time.prepend(mark);
  }
  const sev = cell(tr, "");
  const badge = document.createElement("span");
  badge.className = "sev sev-" + record.severity;
  badge.textContent = record.severity;
  sev.appendChild(badge);
  cell(tr, record.event_type);
  cell(tr, record.username);
  cell(tr, record.ip_address);
  const resource = cell(tr, "");
  if (record.resource_type) {
    const type = document.createElement("span");
    type.className = "resource-type";
    type.textContent = record.resource_type + (record.resource_name || record.resource_id ? ": " : "");
    resource.append(type);
  }
  resource.append(record.resource_name || record.resource_id || "");
  const message = cell(tr, record.message, "message");
  const fixups = record.metadata && record.metadata._fixups;
  if (fixups) {
    // The record was repaired on the way in (a visible, counted fix-up): say so.
    const mark = document.createElement("span");
    mark.className = "fixed";
    mark.textContent = "⚑";
    mark.title = "Fixed up on the way in: " + JSON.stringify(fixups);
    mark.setAttribute("aria-label", "fixed up on the way in");
    message.append(mark);
  }
  tr.addEventListener("click", () => showDetail(record));
  tr.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); showDetail(record); }
    if (e.key === "ArrowDown" && tr.nextElementSibling) tr.nextElementSibling.focus();
    if (e.key === "ArrowUp" && tr.previousElementSibling) tr.previousElementSibling.focus();
  });
  return tr;
}

function showDetail(record) {
  const dl = $("detail-fields");
  dl.replaceChildren();
  $("detail-id").textContent = record.id;
  for (const key of ["created_at", "username", "user_id", "event_type", "severity", "message",
    "ip_address", "resource_type", "resource_id", "resource_name"]) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = record[key] == null ? "—" : String(record[key]);
    dl.append(dt, dd);
  }
  $("detail-metadata").textContent = record.metadata == null ? "—" : JSON.stringify(record.metadata, null, 2);
  detailRecord = record;
  $("pivot-user").disabled = !record.username;
  $("pivot-resource").disabled = !(record.resource_type && (record.resource_id || record.resource_name));
  $("pivot-ip").disabled = !record.ip_address;
  $("detail").hidden = false;
  $("detail-close").focus();
  showIntegrity(record.id);
}

// ---- integrity: the record's proof, fetched and checked in this browser ----
// The proof chains the record's canonical encoding to its batch's root, and the batch's
// entry to the root of the signed checkpoint; both RFC 9162 inclusion proofs are checked
// here with SHA-256. The checkpoint's signature is not (the page has no key to trust):
// `auditd verify` with the log's public key checks that.

function hexBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function base64Bytes(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function sameBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function sha256(...parts) {
  const data = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { data.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

const leafHash = (bytes) => sha256(Uint8Array.of(0), bytes);
const nodeHash = (left, right) => sha256(Uint8Array.of(1), left, right);

// RFC 9162 section 2.1.3.2, with sizes as plain numbers (exact below 2^53).
async function verifyInclusion(index, size, leaf, path, root) {
  if (index >= size) return false;
  let fn = index, sn = size - 1, r = leaf;
  const half = (n) => Math.floor(n / 2);
  for (const p of path) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = half(fn); sn = half(sn); }
    } else {
      r = await nodeHash(r, p);
    }
    fn = half(fn); sn = half(sn);
  }
  return sn === 0 && sameBytes(r, root);
}

// Microseconds since the epoch of an RFC 3339 time with up to 6 fraction digits.
function micros(rfc3339) {
  const m = /^(.*?)(?:\.(\d{1,6}))?Z$/.exec(rfc3339);
  const seconds = BigInt(Date.parse(m[1] + "Z")) / 1000n;
  return seconds * 1000000n + BigInt((m[2] || "").padEnd(6, "0"));
}

// The batch's entry in the log (audit_layer::integrity::BatchEntry, version 1).
function batchEntry(b) {
  const bytes = new Uint8Array(87);
  const view = new DataView(bytes.buffer);
  bytes[0] = 1;
  view.setBigInt64(1, BigInt(b.stream_id));
  view.setBigInt64(9, BigInt(b.batch_id));
  view.setInt32(17, b.rows);
  view.setBigInt64(21, BigInt(b.first_seq));
  view.setBigInt64(29, BigInt(b.last_seq));
  view.setInt16(37, b.encoding);
  bytes.set(hexBytes(b.root), 39);
  view.setBigInt64(71, micros(b.committed_at));
  view.setBigInt64(79, BigInt(b.tx_id));
  return bytes;
}

async function checkProof(proof) {
  const leaf = await leafHash(base64Bytes(proof.encoded));
  const b = proof.batch;
  const inBatch = await verifyInclusion(b.index, b.rows, leaf, b.path.map(hexBytes), hexBytes(b.root));
  const [origin, size, root] = proof.log.checkpoint.split("\n");
  const entry = await leafHash(batchEntry(b));
  const inLog = Number(size) === proof.log.tree_size &&
    await verifyInclusion(proof.log.position, proof.log.tree_size, entry,
      proof.log.path.map(hexBytes), base64Bytes(root));
  return { ok: inBatch && inLog, origin, size };
}

// JSON with 64-bit integers (stream ids) read exactly, as BigInt, where the browser
// gives the number's source text (JSON.parse source text access); `exact` is false when
// it does not and a number was rounded.
function parseExact(text) {
  let exact = true;
  const value = JSON.parse(text, (key, v, context) => {
    if (typeof v === "number" && Number.isInteger(v) && !Number.isSafeInteger(v)) {
      if (context && typeof context.source === "string") return BigInt(context.source);
      exact = false;
    }
    return v;
  });
  return { value, exact };
}

let integrityFor = null;
let detailRecord = null;

// The records sharing one thing with the record shown: only that filter is set.
function pivot(filters) {
  for (const name of FILTERS) form.elements[name].value = "";
  for (const [name, value] of Object.entries(filters)) form.elements[name].value = value;
  $("detail").hidden = true;
  search();
}

async function showIntegrity(id) {
  const out = $("detail-integrity");
  integrityFor = id;
  const show = (text, kind) => {
    if (integrityFor !== id) return;
    out.textContent = text;
    out.className = "integrity" + (kind ? " integrity-" + kind : "");
  };
  show("Checking…");
  try {
    const { value: proof, exact } = parseExact(await (await api("/api/v1/logs/" + id + "/proof")).text());
    if (proof.status === "unproven") {
      show("Written without integrity: there is no proof for this record.");
    } else if (proof.status === "changed") {
      show("✗ Changed after it was committed: the stored record no longer matches its batch's proof.", "changed");
    } else if (proof.status === "committed") {
      show("Committed in its batch's proof; not sealed into the signed log yet (the next seal signs it).", "committed");
    } else if (!window.crypto || !crypto.subtle) {
      show("Sealed; this page cannot check the proof here (not a secure context: use https or localhost).", "sealed");
    } else if (!exact) {
      show("Sealed; this browser cannot read the proof's 64-bit numbers exactly, so it does not check it: use auditd verify.", "sealed");
    } else {
      const result = await checkProof(proof);
      const time = (/\ntime (\S+)\n/.exec(proof.log.checkpoint) || [])[1];
      if (result.ok) {
        show("✓ Sealed: in the log of " + result.size + " batches under the checkpoint auditd serves (" +
          result.origin + (time ? ", " + showTime(time) : "") + "). The proof checks out in this browser " +
          "against that checkpoint; whether the checkpoint is genuinely signed, only its public key tells: " +
          "auditd verify --public-key, or a bundle checked offline.", "sealed");
      } else {
        show("✗ The proof does not check out: the record, its batch or the log was changed.", "changed");
      }
    }
  } catch (e) {
    show("No proof: " + e.message);
  }
}

// ---- listing and paging ----

async function load() {
  const params = filterParams();
  params.set("limit", PAGE);
  params.set("seal_status", "true");
  const cursor = pages[pages.length - 1];
  if (cursor) params.set("cursor", cursor);
  say("Loading…");
  try {
    const page = await (await api("/api/v1/logs?" + params)).json();
    tbody.replaceChildren(...page.items.map(rowFor));
    nextCursor = page.next_cursor;
    $("older").disabled = !nextCursor;
    $("newer").disabled = pages.length <= 1;
    const first = pages.length === 1 ? "" : " (page " + pages.length + ")";
    say(page.items.length ? page.items.length + " records" + first : "No records match.");
  } catch (e) {
    say(e.message, true);
  }
}

function search() {
  pages = [null];
  const query = filterParams().toString();
  history.replaceState(null, "", query ? "?" + query : location.pathname);
  load();
  loadOverview();
  if (tailing) restartTail();
}

// ---- overview: records over time and the most common values, for the current filter ----
// Drawn here as SVG from /api/v1/overview, which aggregates in PostgreSQL. Without a
// since, the chart covers the last 14 days.

const SEVERITIES = ["info", "warning", "error", "critical"];
const FACET_LABELS = { event_type: "Event type", severity: "Severity", username: "User", resource_type: "Resource type" };
const DEFAULT_RANGE_MS = 14 * 86400e3;
const SVG_NS = "http://www.w3.org/2000/svg";
let overviewAbort = null;
let lastOverview = null;
let chart = null; // the geometry of the chart drawn, for brushing

function isoSeconds(ms) {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");
}

async function loadOverview() {
  if (overviewAbort) overviewAbort.abort();
  overviewAbort = new AbortController();
  const params = filterParams();
  if (!params.get("since")) {
    const until = params.get("until") ? Date.parse(params.get("until")) : Date.now();
    params.set("since", isoSeconds(until - DEFAULT_RANGE_MS));
  }
  const width = $("histogram").clientWidth || 800;
  params.set("buckets", String(Math.max(12, Math.min(120, Math.floor(width / 9)))));
  try {
    const overview = await (await api("/api/v1/overview?" + params, { signal: overviewAbort.signal })).json();
    lastOverview = overview;
    drawHistogram(overview);
    showFacets(overview.facets);
  } catch (e) {
    if (e.name !== "AbortError") say("Overview: " + e.message, true);
  }
}

function svg(name, attributes, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
  if (text != null) node.textContent = String(text);
  return node;
}

function bucketTotal(bucket) {
  return SEVERITIES.reduce((sum, severity) => sum + bucket[severity], 0);
}

function drawHistogram(overview) {
  const box = $("histogram");
  const W = Math.max(200, box.clientWidth), H = Math.max(80, box.clientHeight);
  const left = 44, bottom = 16, top = 6;
  box.setAttribute("viewBox", `0 0 ${W} ${H}`);
  box.replaceChildren();
  const buckets = overview.histogram;
  const max = Math.max(1, ...buckets.map(bucketTotal));
  const barWidth = (W - left) / buckets.length;
  const y = (value) => (H - bottom) - value / max * (H - bottom - top);
  for (const value of [0, Math.round(max / 2), max]) {
    box.append(svg("line", { class: "grid-line", x1: left, x2: W, y1: y(value), y2: y(value) }));
    box.append(svg("text", { class: "axis", x: left - 4, y: y(value) + 3, "text-anchor": "end" }, value));
  }
  buckets.forEach((bucket, i) => {
    let below = 0;
    for (const severity of SEVERITIES) {
      const n = bucket[severity];
      if (!n) continue;
      const rect = svg("rect", {
        class: "sev-" + severity, x: left + i * barWidth + 0.5, width: Math.max(1, barWidth - 1),
        y: y(below + n), height: Math.max(1, y(below) - y(below + n)),
      });
      rect.append(svg("title", {}, `${showTime(bucket.start)}: ${n} ${severity}`));
      box.append(rect);
      below += n;
    }
  });
  const ticks = Math.max(2, Math.min(6, Math.floor((W - left) / 140)));
  const step = Math.max(1, Math.round(buckets.length / ticks));
  for (let i = 0; i < buckets.length && left + i * barWidth + 120 <= W; i += step) {
    const label = showTime(buckets[i].start).replace(/:00(Z|[+-]\d\d:\d\d)?$/, "$1");
    box.append(svg("text", { class: "axis", x: left + i * barWidth + 2, y: H - 3 }, label));
  }
  chart = { start: Date.parse(buckets[0].start), width: overview.bucket_seconds * 1000, left, W, barWidth, count: buckets.length };

  // The same, for those who cannot see it.
  const peak = buckets.reduce((best, b) => (bucketTotal(b) > bucketTotal(best) ? b : best), buckets[0]);
  const caption = `Records over time: ${overview.total} from ${showTime(overview.since)} to ${showTime(overview.until)}`;
  $("histogram-caption").textContent = caption;
  $("histogram-text").textContent = caption + (overview.total
    ? `; the busiest ${overview.bucket_seconds}-second bucket starts ${showTime(peak.start)} with ${bucketTotal(peak)}.`
    : ".");
  const rows = buckets.filter((b) => bucketTotal(b) > 0).map((b) => {
    const tr = document.createElement("tr");
    cell(tr, showTime(b.start));
    for (const severity of SEVERITIES) cell(tr, b[severity]);
    return tr;
  });
  $("histogram-table").tBodies[0].replaceChildren(...rows);
}

// Dragging across the chart sets since and until; a click narrows to its bucket.
let brush = null;

function chartX(event) {
  const rect = $("histogram").getBoundingClientRect();
  return (event.clientX - rect.left) * (chart.W / rect.width);
}

function timeAt(x) {
  const bucket = Math.min(Math.max((x - chart.left) / chart.barWidth, 0), chart.count);
  return chart.start + bucket * chart.width;
}

$("histogram").addEventListener("pointerdown", (event) => {
  if (!chart) return;
  const x = chartX(event);
  brush = { x0: x, x1: x, rect: svg("rect", { class: "brush", x, y: 0, width: 0, height: "100%" }) };
  $("histogram").append(brush.rect);
  $("histogram").setPointerCapture(event.pointerId);
});

$("histogram").addEventListener("pointermove", (event) => {
  if (!brush) return;
  brush.x1 = chartX(event);
  brush.rect.setAttribute("x", Math.min(brush.x0, brush.x1));
  brush.rect.setAttribute("width", Math.abs(brush.x1 - brush.x0));
});

$("histogram").addEventListener("pointerup", () => {
  if (!brush) return;
  const { x0, x1 } = brush;
  brush = null;
  let since, until;
  if (Math.abs(x1 - x0) < 3) {
    const bucket = Math.floor(Math.min(Math.max((x0 - chart.left) / chart.barWidth, 0), chart.count - 1));
    since = chart.start + bucket * chart.width;
    until = since + chart.width;
  } else {
    since = Math.floor(timeAt(Math.min(x0, x1)) / 1000) * 1000;
    until = Math.ceil(timeAt(Math.max(x0, x1)) / 1000) * 1000;
  }
  form.elements.since.value = fromRfc3339(isoSeconds(since));
  form.elements.until.value = fromRfc3339(isoSeconds(until));
  search();
});

function showFacets(facets) {
  const sections = Object.entries(FACET_LABELS).map(([name, label]) => {
    const section = document.createElement("section");
    const heading = document.createElement("h3");
    heading.textContent = label;
    const list = document.createElement("ul");
    for (const { value, count } of facets[name] || []) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      const text = document.createElement("span");
      text.className = "name";
      text.textContent = value == null ? "(none)" : value;
      const number = document.createElement("span");
      number.className = "count";
      number.textContent = count;
      button.append(text, number);
      button.title = value == null ? "records without one" : `only ${label.toLowerCase()} ${value}`;
      if (value == null) {
        button.disabled = true;
      } else {
        button.dataset.facet = name;
        button.addEventListener("click", () => {
          form.elements[name].value = value;
          if (name === "severity") form.elements.min_severity.value = "";
          search();
        });
      }
      item.append(button);
      list.append(item);
    }
    section.append(heading, list);
    return section;
  });
  $("facets").replaceChildren(...sections);
}

let resized = null;
window.addEventListener("resize", () => {
  clearTimeout(resized);
  resized = setTimeout(() => { if (lastOverview) drawHistogram(lastOverview); }, 150);
});

// ---- live tail: long polls, in commit order ----

async function tailLoop(signal) {
  tailCursor = null;
  while (tailing && !signal.aborted) {
    const params = filterParams();
    params.set("wait", "20s");
    if (tailCursor) params.set("cursor", tailCursor);
    try {
      const page = await (await api("/api/v1/logs/tail?" + params, { signal })).json();
      tailCursor = page.next_cursor;
      // New records go on top, only while the newest page is shown.
      if (pages.length === 1) {
        for (const record of page.items) {
          const row = rowFor(record);
          row.classList.add("fresh");
          tbody.prepend(row);
        }
        while (tbody.children.length > 500) tbody.lastElementChild.remove();
      }
      if (page.items.length) say("Live: " + page.items.length + " new record(s)");
    } catch (e) {
      if (signal.aborted) return;
      say("Live tail: " + e.message, true);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

function restartTail() {
  if (tailAbort) tailAbort.abort();
  tailAbort = new AbortController();
  tailLoop(tailAbort.signal);
}

// ---- export of the current filter ----

// The browser downloads the export itself, straight to disk, through a signed link that
// stands in for the token (a link cannot carry an Authorization header): a large export
// never sits in this page's memory.
async function exportAs(format) {
  const params = filterParams();
  params.set("format", format);
  try {
    const { url } = await (await api("/api/v1/logs/export/link?" + params)).json();
    const link = document.createElement("a");
    link.href = url;
    link.download = "audit_logs." + format;
    document.body.appendChild(link);
    link.click();
    link.remove();
    say("Downloading the " + format.toUpperCase() + " export (see the browser's downloads).");
  } catch (e) {
    say("Export: " + e.message, true);
  }
}

// ---- wiring ----

form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("clear").addEventListener("click", () => setTimeout(search, 0));
$("older").addEventListener("click", () => { if (nextCursor) { pages.push(nextCursor); load(); } });
$("newer").addEventListener("click", () => { if (pages.length > 1) { pages.pop(); load(); } });
$("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
$("pivot-user").addEventListener("click", () => pivot({ username: detailRecord.username }));
$("pivot-resource").addEventListener("click", () => pivot(detailRecord.resource_id
  ? { resource_type: detailRecord.resource_type, resource_id: detailRecord.resource_id }
  : { resource_type: detailRecord.resource_type, resource_name: detailRecord.resource_name }));
$("pivot-ip").addEventListener("click", () => pivot({ ip_address: detailRecord.ip_address }));
$("copy-json").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(JSON.stringify(detailRecord, null, 2));
    say("The record is on the clipboard as JSON.");
  } catch (e) {
    say("Cannot copy here (" + e.message + "): select the text instead.", true);
  }
});
document.addEventListener("keydown", (e) => { if (e.key === "Escape") $("detail").hidden = true; });
$("live").addEventListener("change", (e) => {
  tailing = e.target.checked;
  if (tailing) { restartTail(); } else if (tailAbort) { tailAbort.abort(); }
});
$("local-time").addEventListener("change", (e) => setLocalTime(e.target.checked));
$("export-csv").addEventListener("click", () => exportAs("csv"));
$("export-ndjson").addEventListener("click", () => exportAs("ndjson"));

showZone();
loadFiltersFromUrl();
load();
loadOverview();

// Relay dashboard: plain JavaScript against the public API, no build step.
// The API key stays in sessionStorage and goes out only as an Authorization header.
"use strict";

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem("relay.apiKey");
let streamAbort = null;
let refreshTimer = null;

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${data.error ? data.error.message : ""}`);
  return data;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  return td;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "–";
}

function kindOf(eventType) {
  const name = eventType.split(".")[1] || "";
  if (name.endsWith("Bounced")) return "bounced";
  if (name.endsWith("Delivered")) return "delivered";
  if (name.endsWith("Sent") && !name.endsWith("NotSent")) return "sent";
  return "other";
}

// -- live counters and chart (Server-Sent Events read with fetch, so the key stays in a header) --
function renderCounts(counts) {
  const hooks = counts.deliveries.totals;
  $("hooks-delivered").textContent = hooks.delivered;
  $("hooks-retry").textContent = hooks.retry;
  $("hooks-dead").textContent = hooks.dead;
  $("hooks-events").textContent = hooks.eventsDelivered;
  drawHooksChart(counts);
  const totals = { sent: 0, bounced: 0, delivered: 0, other: 0 };
  for (const [type, n] of Object.entries(counts.totals)) totals[kindOf(type)] += n;
  $("count-sent").textContent = totals.sent;
  $("count-bounced").textContent = totals.bounced;
  $("count-delivered").textContent = totals.delivered;
  $("count-all").textContent = totals.sent + totals.bounced + totals.delivered + totals.other;

  const svg = $("chart");
  svg.replaceChildren();
  const minutes = 60;
  const lastBucket = Math.floor(counts.until / 60000) * 60000;
  const perMinute = new Map(counts.series.map((b) => [b.start, b.counts]));
  let peak = 1;
  const bars = [];
  for (let i = 0; i < minutes; i++) {
    const bucket = lastBucket - (minutes - 1 - i) * 60000;
    const byKind = { sent: 0, bounced: 0, delivered: 0 };
    for (const [type, n] of Object.entries(perMinute.get(bucket) || {})) {
      const kind = kindOf(type);
      if (kind in byKind) byKind[kind] += n;
    }
    peak = Math.max(peak, byKind.sent + byKind.bounced + byKind.delivered);
    bars.push(byKind);
  }
  const width = 600 / minutes;
  bars.forEach((byKind, i) => {
    let y = 135;
    for (const kind of ["sent", "bounced", "delivered"]) {
      const h = (byKind[kind] / peak) * 125;
      if (!h) continue;
      y -= h;
      svg.appendChild(bar(i * width, y, width, h, kind));
    }
  });
}

// Webhook POSTs per minute over the last hour: succeeded, and failed or dead.
function drawHooksChart(counts) {
  const svg = $("hooks-chart");
  svg.replaceChildren();
  const minutes = 60;
  const last = Math.floor(counts.until / 60000) * 60000;
  const byStart = new Map(counts.deliveries.series.map((b) => [b.start, b.counts]));
  const peak = Math.max(1, ...counts.deliveries.series.map((b) => b.counts.delivered + b.counts.retry + b.counts.dead));
  const width = 600 / minutes;
  for (let i = 0; i < minutes; i++) {
    const b = byStart.get(last - (minutes - 1 - i) * 60000);
    if (!b) continue;
    let y = 78;
    for (const [count, kind] of [[b.delivered, "delivered"], [b.retry + b.dead, "bounced"]]) {
      const h = (count / peak) * 72;
      if (!h) continue;
      y -= h;
      svg.appendChild(bar(i * width, y, width, h, kind, `${b.delivered} succeeded, ${b.retry} failed, ${b.dead} dead`));
    }
  }
}

// One stacked bar segment of a per-minute chart.
function bar(x, y, width, height, kind, tooltip) {
  const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
  rect.setAttribute("x", (x + 1).toFixed(1));
  rect.setAttribute("y", y.toFixed(1));
  rect.setAttribute("width", (width - 2).toFixed(1));
  rect.setAttribute("height", height.toFixed(1));
  rect.setAttribute("class", kind);
  if (tooltip) {
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = tooltip;
    rect.appendChild(title);
  }
  return rect;
}

async function streamCounts() {
  streamAbort = new AbortController();
  while (apiKey) {
    try {
      const response = await fetch("/v1/activity/stream", {
        headers: { authorization: `Bearer ${apiKey}` },
        signal: streamAbort.signal,
      });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = message.split("\n").find((line) => line.startsWith("data: "));
          if (data) renderCounts(JSON.parse(data.slice(6)));
        }
      }
    } catch (error) {
      if (error.name === "AbortError") return;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// -- callbacks and their health --
async function renderCallbacks(data) {
  const rows = await Promise.all(data.map(async (cb) => [cb, await api("GET", `/v1/callbacks/${cb.id}/health`)]));
  const body = $("callbacks").querySelector("tbody");
  body.replaceChildren(...rows.map(([cb, h]) => {
    const tr = document.createElement("tr");
    const state = !cb.verified ? "unverified" : cb.enabled ? "enabled" : `disabled: ${cb.disabledReason}`;
    const name = document.createElement("td");
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = cb.name;
    link.className = "open-callback";
    link.addEventListener("click", (event) => { event.preventDefault(); showCallback(cb, h); });
    name.appendChild(link);
    tr.append(
      name, cell(cb.url, "url"), cell(state, cb.enabled && cb.verified ? "ok" : "error"),
      cell(h.circuit, h.circuit === "closed" ? "ok" : "error"),
      cell(h.successRate === null ? null : `${Math.round(h.successRate * 100)} %`),
      cell(h.averageLatencyMs === null ? null : `${h.averageLatencyMs.toFixed(1)} ms`),
      cell(h.pending),
      cell(h.inFlight),
      cell(h.nextRetryAt === null ? null : when(h.nextRetryAt), "next-retry"),
      cell(h.oldestPendingAgeSeconds === null ? null : `${Math.round(h.oldestPendingAgeSeconds)} s`),
      cell(rateLimitText(cb)),
      cell(callsAs(cb), "calls-as"),
      cell(h.lastError ? `${h.lastError.status || ""} ${h.lastError.error || h.lastError.responseExcerpt || ""}` : null),
      testCell(cb),
    );
    return tr;
  }));
  const select = $("recover-callback");
  const chosen = select.value;
  select.replaceChildren(...data.filter((cb) => cb.verified).map((cb) => {
    const option = document.createElement("option");
    option.value = cb.id;
    option.textContent = cb.name;
    return option;
  }));
  if (chosen) select.value = chosen;
}

// How Relay calls the endpoint: format, transformation, authentication (never a secret).
function callsAs(cb) {
  const parts = [cb.format === "cloudevents" ? "CloudEvents" : "ENS"];
  if (cb.transformation) parts.push("transformed");
  if (cb.auth && cb.auth.oauth2) parts.push("OAuth2");
  if (cb.auth && cb.auth.mtls) parts.push("mTLS");
  if (cb.auth && cb.auth.headers.length) parts.push(`headers: ${cb.auth.headers.join(", ")}`);
  return parts.join(" · ");
}

function rateLimitText(cb) {
  const parts = [];
  if (cb.rateLimit && cb.rateLimit.eventsPerSecond) parts.push(`${cb.rateLimit.eventsPerSecond} ev/s`);
  if (cb.rateLimit && cb.rateLimit.requestsPerSecond) parts.push(`${cb.rateLimit.requestsPerSecond} req/s`);
  if (cb.throttledUntil && cb.throttledUntil * 1000 > Date.now()) parts.push(`paused until ${when(cb.throttledUntil)}`);
  return parts.join(", ") || null;
}

// -- one callback: health, success and latency per minute, the latest attempts --
let detailId = null;

async function showCallback(cb, h) {
  detailId = cb.id;
  $("callback-detail").hidden = false;
  $("detail-name").textContent = cb.name;
  $("detail-url").textContent = cb.url;
  const state = !cb.verified ? "unverified" : cb.enabled ? "enabled" : `disabled: ${cb.disabledReason}`;
  $("detail-summary").textContent = [
    state, `circuit ${h.circuit}`, h.failingSince ? `failing since ${when(h.failingSince)}` : null,
    `${h.pending} pending`, `${h.inFlight} in flight`,
    h.oldestPendingAgeSeconds === null ? null : `oldest pending ${Math.round(h.oldestPendingAgeSeconds)} s`,
    h.nextRetryAt ? `next retry ${when(h.nextRetryAt)}` : null,
    h.successRate === null ? null : `${Math.round(h.successRate * 100)} % success (1 h)`,
    h.averageLatencyMs === null ? null : `${h.averageLatencyMs.toFixed(1)} ms mean latency`,
    `max in flight ${cb.maxInFlight || "default"}`, rateLimitText(cb) ? `limit ${rateLimitText(cb)}` : null,
  ].filter(Boolean).join(" · ");
  const activity = await api("GET", `/v1/callbacks/${cb.id}/activity`);
  drawDetailChart(activity);
  $("detail-history").replaceChildren(...activity.healthHistory.map((h) => {
    const item = document.createElement("li");
    const what = { "callback.circuit_opened": "circuit opened", "callback.circuit_closed": "circuit closed",
                   "callback.disabled": "disabled" }[h.kind] || h.kind;
    const why = h.detail.reason || h.detail.lastError || (h.detail.consecutiveFailures ? `${h.detail.consecutiveFailures} failures in a row` : "");
    item.textContent = `${when(h.at)} — ${what}${why ? " — " + why : ""}`;
    item.className = h.kind.endsWith("closed") ? "ok" : "error";
    return item;
  }));
  $("detail-attempts").querySelector("tbody").replaceChildren(...activity.recentAttempts.map((a) => {
    const tr = document.createElement("tr");
    tr.append(cell(when(a.at)), cell(a.webhookId), cell(a.events), cell(a.outcome, a.outcome === "delivered" ? "ok" : "error"),
              cell(a.status), cell(`${Math.round(a.latencyMs)} ms`), cell(a.error || a.responseExcerpt));
    return tr;
  }));
}

function drawDetailChart(activity) {
  const svg = $("detail-chart");
  svg.replaceChildren();
  const minutes = 60;
  const last = Math.floor(activity.until / 60000) * 60000;
  const byStart = new Map(activity.series.map((b) => [b.start, b]));
  const peak = Math.max(1, ...activity.series.map((b) => b.delivered + b.retry + b.dead));
  const width = 600 / minutes;
  for (let i = 0; i < minutes; i++) {
    const b = byStart.get(last - (minutes - 1 - i) * 60000);
    if (!b) continue;
    let y = 98;
    for (const [count, kind] of [[b.delivered, "delivered"], [b.retry + b.dead, "bounced"]]) {
      const h = (count / peak) * 90;
      if (!h) continue;
      y -= h;
      svg.appendChild(bar(i * width, y, width, h, kind,
                          `${b.delivered} delivered, ${b.retry + b.dead} failed, ${b.averageLatencyMs} ms`));
    }
  }
}

$("detail-close").addEventListener("click", () => { $("callback-detail").hidden = true; detailId = null; });

// A signed sample event, sent now; the endpoint's answer shows in the cell.
function testCell(cb) {
  if (!cb.verified) return cell("unverified");
  const td = document.createElement("td");
  const button = document.createElement("button");
  button.textContent = "Send test";
  button.className = "test-send";
  const result = document.createElement("span");
  result.className = "test-result";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const r = await api("POST", `/v1/callbacks/${cb.id}/test`, {});
      result.textContent = r.ok ? ` ${r.status} in ${Math.round(r.latencyMs)} ms`
        : ` failed: ${r.status || ""} ${r.error || r.responseExcerpt || ""}`;
      result.className = r.ok ? "test-result ok" : "test-result error";
    } catch (error) {
      result.textContent = ` ${error.message}`;
      result.className = "test-result error";
    }
    button.disabled = false;
  });
  td.append(button, result);
  return td;
}

// -- durable background operations: progress, pause, resume, cancel --
async function renderOperations() {
  const { data } = await api("GET", "/v1/operations?limit=20");
  const shown = data.filter((op) => op.kind === "redrive" || op.kind === "recover");
  $("operations-empty").hidden = shown.length > 0;
  $("operations").querySelector("tbody").replaceChildren(...shown.map((op) => {
    const tr = document.createElement("tr");
    tr.dataset.id = op.id;
    const total = op.progress.total === null ? "?" : op.progress.total;
    const bar = document.createElement("progress");
    bar.max = op.progress.total || 1;
    bar.value = op.progress.done;
    const progress = cell(` ${op.progress.done} / ${total}`, "progress");
    progress.prepend(bar);
    const actions = document.createElement("td");
    for (const [action, states] of [["pause", ["queued", "running"]], ["resume", ["paused"]],
                                    ["cancel", ["queued", "running", "paused"]]]) {
      if (!states.includes(op.state)) continue;
      const button = document.createElement("button");
      button.textContent = action[0].toUpperCase() + action.slice(1);
      button.className = `op-${action}`;
      button.addEventListener("click", async () => {
        button.disabled = true;
        await api("POST", `/v1/operations/${op.id}/${action}`, {});
        renderOperations();
      });
      actions.appendChild(button);
    }
    tr.append(cell(op.id), cell(op.kind), cell(op.state, op.state === "failed" ? "error" : ""), progress,
              cell(op.etaSeconds === null || op.etaSeconds === undefined ? null : `${Math.ceil(op.etaSeconds)} s`),
              cell(op.error), actions);
    return tr;
  }));
}

async function startRecovery(event) {
  event.preventDefault();
  $("recover-error").textContent = "";
  const until = Date.now() / 1000;
  try {
    await api("POST", `/v1/callbacks/${$("recover-callback").value}/recover`, {
      since: until - Number($("recover-minutes").value) * 60, until,
      ratePerSecond: Number($("recover-rate").value),
    });
  } catch (error) {
    $("recover-error").textContent = error.message;
  }
  await renderOperations();
}

// -- dead letters: filters, paging, select-and-replay, replay-all-matching, attempts --
const dlq = { cursor: "0", next: null, names: new Map() };

function dlqFilter() {
  const filter = {};
  if ($("dlq-callback").value) filter.callbackId = $("dlq-callback").value;
  if ($("dlq-type").value.trim()) filter.eventType = $("dlq-type").value.trim();
  if ($("dlq-reason").value.trim()) filter.reason = $("dlq-reason").value.trim();
  return filter;
}

async function renderDeadLetters(callbacks) {
  dlq.names = new Map(callbacks.map((cb) => [cb.id, cb.name]));
  const select = $("dlq-callback");
  const chosen = select.value;
  select.replaceChildren(new Option("every callback", ""), ...callbacks.map((cb) => new Option(cb.name, cb.id)));
  select.value = chosen;
  const query = new URLSearchParams({ ...dlqFilter(), limit: "50", cursor: dlq.cursor });
  const { data, nextCursor } = await api("GET", `/v1/deadletters?${query}`);
  dlq.next = nextCursor;
  $("dlq-next").hidden = !nextCursor;
  $("dlq-first").hidden = dlq.cursor === "0";
  $("deadletters-empty").hidden = data.length > 0;
  const body = $("deadletters").querySelector("tbody");
  const open = new Set([...body.querySelectorAll("tr.attempts")].map((tr) => tr.dataset.of));
  const picked = new Set([...body.querySelectorAll("input.pick:checked")].map((box) => box.value));
  const rows = [];
  for (const d of data) {
    const tr = document.createElement("tr");
    tr.dataset.id = d.id;
    const pick = document.createElement("input");
    pick.type = "checkbox";
    pick.className = "pick";
    pick.value = d.id;
    pick.checked = picked.has(String(d.id));
    const check = document.createElement("td");
    check.appendChild(pick);
    const replay = document.createElement("button");
    replay.textContent = "Replay";
    replay.className = "replay";
    replay.addEventListener("click", async () => {
      replay.disabled = true;
      await api("POST", `/v1/deadletters/${d.id}/replay`);
      replay.textContent = "Replayed";
      setTimeout(refresh, 500);
    });
    const details = document.createElement("button");
    details.textContent = "Attempts";
    details.className = "show-attempts";
    details.addEventListener("click", () => toggleAttempts(tr, d.id));
    const actions = document.createElement("td");
    actions.append(replay, details);
    tr.append(check, cell(d.id), cell(when(d.createdAt)), cell(d.eventType), cell(d.subscriberKey),
              cell(dlq.names.get(d.callbackId) || d.callbackId), cell(d.reason), cell(d.attemptCount), actions);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  for (const tr of rows) if (open.has(tr.dataset.id)) await toggleAttempts(tr, tr.dataset.id);
}

async function toggleAttempts(tr, id) {
  const shown = tr.nextElementSibling;
  if (shown && shown.classList.contains("attempts")) {
    shown.remove();
    return;
  }
  const letter = await api("GET", `/v1/deadletters/${id}`);
  const row = document.createElement("tr");
  row.className = "attempts";
  row.dataset.of = String(id);
  const td = document.createElement("td");
  td.colSpan = 9;
  const list = document.createElement("ol");
  for (const a of letter.attempts) {
    const item = document.createElement("li");
    item.textContent = `${when(a.at)} — ${a.status === null ? "no answer" : "HTTP " + a.status} in `
      + `${Math.round(a.latencyMs)} ms${a.error ? " — " + a.error : ""}${a.responseExcerpt ? " — " + a.responseExcerpt : ""}`;
    list.appendChild(item);
  }
  td.appendChild(list);
  row.appendChild(td);
  tr.after(row);
}

async function replayDeadLetters(body) {
  $("dlq-message").textContent = "";
  try {
    const started = await api("POST", "/v1/deadletters/replay", { ratePerSecond: 100, ...body });
    $("dlq-message").textContent = `replay ${started.id} started — progress under Background operations`;
  } catch (error) {
    $("dlq-message").textContent = error.message;
  }
  await refresh();
}

$("dlq-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  dlq.cursor = "0";
  refresh();
});
$("dlq-next").addEventListener("click", () => { dlq.cursor = dlq.next || "0"; refresh(); });
$("dlq-first").addEventListener("click", () => { dlq.cursor = "0"; refresh(); });
$("dlq-replay-selected").addEventListener("click", () => {
  const ids = [...document.querySelectorAll("#deadletters input.pick:checked")].map((box) => Number(box.value));
  if (ids.length) replayDeadLetters({ ids });
});
$("dlq-replay-all").addEventListener("click", () => {
  const filter = dlqFilter();
  replayDeadLetters(Object.keys(filter).length ? filter : { all: true });
});

// -- quarantine: what ingest refused, and why --
async function renderQuarantine() {
  const { data } = await api("GET", "/v1/quarantine?limit=50");
  $("quarantine-empty").hidden = data.length > 0;
  $("quarantine").querySelector("tbody").replaceChildren(...data.map((q) => {
    const tr = document.createElement("tr");
    tr.append(cell(when(q.at)), cell(q.reason, "error"), cell(q.detail), cell(`${q.topic} / ${q.partition} / ${q.offset}`),
              cell(q.bytes), cell(q.excerpt, "excerpt"));
    return tr;
  }));
}

// -- message status search --
async function search(event) {
  event.preventDefault();
  const field = $("search-field").value;
  const value = $("search-value").value.trim();
  const result = await api("GET", `/v1/messages?${field}=${encodeURIComponent(value)}`);
  $("timeline-empty").hidden = result.events.length > 0;
  $("timeline").querySelector("tbody").replaceChildren(...result.events.map((e) => {
    const tr = document.createElement("tr");
    const status = [e.status, e.bounceCode, e.reason].filter(Boolean).join(" · ");
    const deliveries = e.deliveries.map((d) => `${dlq.names.get(d.callbackId) || d.callbackId}: ${d.state}${d.deliveredAt ? " at " + when(d.deliveredAt) : ""}`);
    tr.append(cell(new Date(e.timestampUTC).toLocaleString()), cell(e.eventCategoryType), cell(status), cell(e.to),
              cell(deliveries.join("; ") || "not subscribed"));
    return tr;
  }));
}

async function refresh() {
  try {
    const { data: callbacks } = await api("GET", "/v1/callbacks");  // one read serves both panels
    await Promise.all([renderCallbacks(callbacks), renderDeadLetters(callbacks), renderOperations(),
                       renderQuarantine()]);
  } catch (error) {
    console.warn("refresh failed", error.message);
  }
}

async function open() {
  try {
    await api("GET", "/v1/callbacks");
  } catch (error) {
    $("login-error").textContent = `That key does not work (${error.message}).`;
    sessionStorage.removeItem("relay.apiKey");
    apiKey = null;
    return;
  }
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = `key ${apiKey.slice(0, 7)}…`;
  await refresh();
  refreshTimer = setInterval(refresh, 5000);
  streamCounts();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("api-key").value.trim();
  sessionStorage.setItem("relay.apiKey", apiKey);
  open();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem("relay.apiKey");
  apiKey = null;
  if (streamAbort) streamAbort.abort();
  clearInterval(refreshTimer);
  location.reload();
});
$("search-form").addEventListener("submit", (event) => search(event).catch((e) => console.warn(e.message)));
$("recover-form").addEventListener("submit", (event) => startRecovery(event));
if (apiKey) open();

// The operator's console of authz. Every 2 s it reads the Prometheus text of /metrics (the
// very figures a Prometheus server scrapes, so the two never disagree) and the most recent
// decisions of /console/decisions, and writes them into the page. Read-only: it only GETs.
// Every figure is written with textContent, never as HTML.
"use strict";

const REFRESH_MS = 2000;
const FETCH_TIMEOUT_MS = 5000;
const PREFIX = "mps_authz_";

let previous = null; // { at: seconds, samples } of the refresh before

// --- Prometheus text exposition --------------------------------------------------------------

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/;
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function parseValue(text) {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text);
}

function unescapeLabel(text) {
  return text.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
}

// [{ name, labels: {k: v}, value }] from the text format; throws on a line it cannot read.
function parseExposition(text) {
  const samples = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const match = SAMPLE_LINE.exec(line);
    if (!match) throw new Error("unreadable /metrics line: " + line.slice(0, 80));
    const labels = {};
    for (const pair of (match[2] || "").matchAll(LABEL_PAIR)) labels[pair[1]] = unescapeLabel(pair[2]);
    samples.push({ name: match[1], labels, value: parseValue(match[3]) });
  }
  return samples;
}

function select(samples, name, where) {
  return samples.filter(
    (s) => s.name === PREFIX + name && Object.entries(where || {}).every(([k, v]) => s.labels[k] === v),
  );
}

// The sum of every sample of `name` matching `where`; null when there is none.
function total(samples, name, where) {
  const found = select(samples, name, where);
  return found.length === 0 ? null : found.reduce((sum, s) => sum + s.value, 0);
}

// Cumulative buckets of a histogram summed over its other labels: [[le, count]], ascending.
function buckets(samples, name, where) {
  const byBound = new Map();
  for (const s of select(samples, name + "_bucket", where)) {
    const le = parseValue(s.labels.le);
    byBound.set(le, (byBound.get(le) || 0) + s.value);
  }
  return [...byBound.entries()].sort((a, b) => a[0] - b[0]);
}

function minus(now, before) {
  if (!before) return now;
  const old = new Map(before);
  return now.map(([le, count]) => [le, count - (old.get(le) || 0)]);
}

// Quantile q of cumulative buckets, as PromQL's histogram_quantile: linear within the bucket,
// the highest finite bound when it falls in +Inf; null without observations.
function quantile(q, cumulative) {
  if (cumulative.length === 0) return null;
  const count = cumulative[cumulative.length - 1][1];
  if (!(count > 0)) return null;
  const rank = q * count;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [le, cumulativeCount] of cumulative) {
    if (cumulativeCount >= rank) {
      if (le === Infinity) return lowerBound;
      const inBucket = cumulativeCount - lowerCount;
      return inBucket > 0 ? lowerBound + ((le - lowerBound) * (rank - lowerCount)) / inBucket : le;
    }
    lowerBound = le;
    lowerCount = cumulativeCount;
  }
  return lowerBound;
}

// The upper bound of the bucket that holds quantile q: for small whole counts (commands per
// batch), where interpolating inside a bucket would invent fractions.
function bucketBound(q, cumulative) {
  if (cumulative.length === 0) return null;
  const count = cumulative[cumulative.length - 1][1];
  if (!(count > 0)) return null;
  const found = cumulative.find(([, cumulativeCount]) => cumulativeCount >= q * count);
  return found ? found[0] : null;
}

// --- Formatting ------------------------------------------------------------------------------

function count(value) {
  if (value === null || !Number.isFinite(value)) return "–";
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

function seconds(value) {
  if (value === null || !Number.isFinite(value)) return "–";
  const ms = value * 1000;
  return ms < 10 ? ms.toFixed(2) + " ms" : ms < 1000 ? ms.toFixed(1) + " ms" : value.toFixed(2) + " s";
}

function duration(secondsLeft) {
  const sign = secondsLeft < 0 ? "-" : "";
  let rest = Math.abs(Math.round(secondsLeft));
  const days = Math.floor(rest / 86400);
  rest -= days * 86400;
  const hours = Math.floor(rest / 3600);
  const minutes = Math.floor((rest - hours * 3600) / 60);
  return sign + (days > 0 ? days + " d " : "") + hours + " h " + minutes + " min";
}

function set(id, text, tone) {
  const element = document.getElementById(id);
  if (!element) throw new Error("the page has no #" + id);
  element.textContent = text;
  element.className = tone || "";
}

function row(cells, id) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (typeof cell === "object" && cell !== null) {
      td.textContent = cell.text;
      if (cell.id) td.id = cell.id;
      if (cell.tone) td.className = cell.tone;
    } else {
      td.textContent = cell;
    }
    tr.appendChild(td);
  }
  if (id) tr.id = id;
  return tr;
}

function fill(id, rows) {
  const body = document.getElementById(id);
  if (!body) throw new Error("the page has no #" + id);
  body.replaceChildren(...rows);
}

// --- Sections --------------------------------------------------------------------------------

function perSecond(now, before, name, where, elapsed) {
  if (!before || !(elapsed > 0)) return null;
  const a = total(now, name, where);
  const b = total(before, name, where);
  return a === null ? null : (a - (b || 0)) / elapsed;
}

function showThroughput(samples, before, elapsed) {
  const rate = perSecond(samples, before, "http_responses_total", {}, elapsed);
  set("requests-per-second", rate === null ? "–" : rate.toFixed(1));
  const approvals = perSecond(samples, before, "responses_total", { code: "00" }, elapsed);
  set("approvals-per-second", approvals === null ? "–" : approvals.toFixed(1));
  set("requests-total", count(total(samples, "http_responses_total") || 0));
  set("approvals-total", count(total(samples, "responses_total", { code: "00" }) || 0));
  set("in-flight", count(total(samples, "in_flight")));
  set("overload-total", count(total(samples, "overload_total")));
  set("outcome-unknown-total", count(total(samples, "outcome_unknown_total")));
  set("mac-failures-total", count(total(samples, "mac_failures_total")));
}

function showLatency(samples, before) {
  const all = buckets(samples, "request_duration_seconds");
  for (const q of [50, 90, 99]) set("latency-p" + q, seconds(quantile(q / 100, all)));
  set("latency-count", count(total(samples, "request_duration_seconds_count") || 0));
  const recent = before ? minus(all, buckets(before, "request_duration_seconds")) : [];
  for (const q of [50, 90, 99]) set("latency-recent-p" + q, seconds(quantile(q / 100, recent)));
  set("latency-recent-count", recent.length ? count(recent[recent.length - 1][1]) : "–");
  const stages = [...new Set(select(samples, "stage_duration_seconds_count").map((s) => s.labels.stage))].sort();
  fill(
    "stages",
    stages.map((stage) => {
      const cumulative = buckets(samples, "stage_duration_seconds", { stage });
      return row([
        stage,
        seconds(quantile(0.5, cumulative)),
        seconds(quantile(0.99, cumulative)),
        count(total(samples, "stage_duration_seconds_count", { stage })),
      ]);
    }),
  );
}

function countsBy(samples, name, label, idPrefix) {
  return select(samples, name)
    .map((s) => [s.labels[label] || "", s.value])
    .sort((a, b) => a[0].localeCompare(b[0]))
    .map(([key, value]) => row([key, { text: count(value), id: idPrefix + key }]));
}

function showCodes(samples) {
  fill("codes", countsBy(samples, "responses_total", "code", "code-"));
  fill("statuses", countsBy(samples, "http_responses_total", "status", "status-"));
}

function showHsm(samples) {
  const ready = total(samples, "hsm_pool_ready");
  set("hsm-pool-ready", ready === 1 ? "ready" : "NOT READY", ready === 1 ? "good" : "bad");
  set("hsm-pool-size", count(total(samples, "hsm_pool_size")));
  set("hsm-in-flight", count(total(samples, "hsm_in_flight")));
  set("hsm-queued", count(total(samples, "hsm_queued")));
  set("hsm-open-sessions", count(total(samples, "hsm_open_sessions")));
  set("hsm-recycles-total", count(total(samples, "hsm_recycles_total")));
  set("hsm-reconnects-total", count(total(samples, "hsm_reconnects_total")));
  set("hsm-objects-since-init", count(total(samples, "hsm_objects_since_init")));
  const members = select(samples, "hsm_member_up")
    .map((s) => s.labels.hsm)
    .sort((a, b) => Number(a) - Number(b));
  fill(
    "hsm-members",
    members.map((hsm) => {
      const figure = (name) => count(total(samples, name, { hsm }));
      const up = total(samples, "hsm_member_up", { hsm }) === 1;
      return row(
        [
          "HSM " + hsm,
          { text: up ? "up" : "DOWN", id: "hsm-" + hsm + "-state", tone: up ? "good" : "bad" },
          figure("hsm_member_pool_size"),
          figure("hsm_member_in_flight"),
          { text: figure("hsm_member_operations_total"), id: "hsm-" + hsm + "-operations" },
          figure("hsm_member_errors_total"),
          figure("hsm_member_reconnects_total"),
          figure("hsm_member_recycles_total"),
        ],
        "hsm-" + hsm,
      );
    }),
  );
}

function showLedger(samples) {
  const batches = total(samples, "ledger_commit_batch_commands_count");
  const commands = total(samples, "ledger_commit_batch_commands_sum");
  set("ledger-batches", count(batches));
  set("ledger-commands", count(commands));
  set("ledger-batch-mean", batches > 0 ? (commands / batches).toFixed(2) : "–");
  const batchBuckets = buckets(samples, "ledger_commit_batch_commands");
  const p99 = bucketBound(0.99, batchBuckets);
  const largest = batchBuckets.length > 1 ? batchBuckets[batchBuckets.length - 2][0] : null;
  set("ledger-batch-p99", p99 === null ? "–" : p99 === Infinity ? "> " + count(largest) : "≤ " + count(p99));
  const commit = buckets(samples, "ledger_commit_duration_seconds");
  set("ledger-commit-p50", seconds(quantile(0.5, commit)));
  set("ledger-commit-p99", seconds(quantile(0.99, commit)));
  set("ledger-failed-commands", count(total(samples, "ledger_failed_commands_total")));
}

function showCrl(samples, nowSeconds) {
  const nextUpdate = total(samples, "crl_next_update_seconds");
  if (!nextUpdate) {
    set("crl-next-update", "none loaded");
    set("crl-time-left", "–");
  } else {
    const left = nextUpdate - nowSeconds;
    set("crl-next-update", new Date(nextUpdate * 1000).toISOString().replace(".000Z", "Z"));
    set("crl-time-left", left > 0 ? duration(left) : "EXPIRED " + duration(-left) + " ago", left < 0 ? "bad" : left < 86400 ? "warn" : "good");
  }
  set("crl-reloads", count(total(samples, "crl_reloads_total")));
  set("crl-reload-failures", count(total(samples, "crl_reload_failures_total")));
}

function text(value) {
  return value === null || value === undefined ? "–" : String(value);
}

function showDecisions(decisions) {
  if (!Array.isArray(decisions)) throw new Error("/console/decisions is not a list");
  fill(
    "decisions",
    decisions.map((d) => {
      const tone = d.response_code === "00" ? "good" : d.status >= 500 ? "bad" : "";
      return row([
        text(d.at).replace("T", " "),
        text(d.operation),
        text(d.status),
        { text: text(d.response_code), tone },
        text(d.merchant_id),
        text(d.amount),
        text(d.sim_id),
        text(d.account),
        typeof d.latency_ms === "number" ? d.latency_ms.toFixed(1) + " ms" : "–",
      ]);
    }),
  );
}

// --- Refresh loop ----------------------------------------------------------------------------

async function get(path, read) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  try {
    const response = await fetch(path, { cache: "no-store", signal: controller.signal });
    if (!response.ok) throw new Error(path + " answered " + response.status);
    return await read(response);
  } finally {
    clearTimeout(timer);
  }
}

async function refresh() {
  const [metricsText, decisions] = await Promise.all([
    get("/metrics", (r) => r.text()),
    get("/console/decisions", (r) => r.json()),
  ]);
  const at = Date.now() / 1000;
  const samples = parseExposition(metricsText);
  const before = previous ? previous.samples : null;
  const elapsed = previous ? at - previous.at : 0;
  showThroughput(samples, before, elapsed);
  showLatency(samples, before);
  showCodes(samples);
  showHsm(samples);
  showLedger(samples);
  showCrl(samples, at);
  showDecisions(decisions);
  previous = { at, samples };
}

async function loop() {
  try {
    await refresh();
    set("updated", new Date().toISOString().replace(/\.\d+Z$/, "Z"));
    set("problem", "");
    document.body.dataset.state = "ok";
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (error) {
    document.body.dataset.state = "error";
    set("problem", "Refresh failed: " + (error && error.message ? error.message : String(error)), "bad");
    console.error("console refresh failed:", error);
  }
  setTimeout(loop, REFRESH_MS);
}

loop();

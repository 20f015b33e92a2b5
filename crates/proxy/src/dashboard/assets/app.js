// prefixcache dashboard: polls admin/summary every few seconds and draws it. Plain
// DOM and SVG, no library; every value goes in through textContent, never as HTML.
"use strict";

const REFRESH_MS = 5000;
const NS = "http://www.w3.org/2000/svg";
const STATUSES = ["hit", "coalesced", "miss", "bypass", "error", "passthrough"];
const STATUS_NAMES = {
  hit: "HIT", coalesced: "COALESCED", miss: "MISS", bypass: "BYPASS", error: "error", passthrough: "passthrough",
};
const STATUS_HELP = {
  hit: "answered from the cache",
  coalesced: "joined an identical request in flight",
  miss: "forwarded, stored if complete",
  bypass: "forwarded without lookup (no-cache)",
  error: "the proxy answered with an error",
  passthrough: "uncached route, forwarded",
};

// The JSON sits next to the page: .../dashboard -> .../admin/summary. Built from the
// origin so credentials typed into the address bar never end up in a fetch URL.
const BASE = location.origin + location.pathname.replace(/dashboard\/?$/, "");
const SUMMARY_URL = BASE + "admin/summary";

let last = null;
let paused = false;
let timer = null;

// ---------------------------------------------------------------- formatting

const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

function fmtInt(v) {
  return v == null ? "—" : intFmt.format(v);
}

function fmtPct(v) {
  return v == null ? "—" : (v * 100).toFixed(1) + "%";
}

function fmtRate(v) {
  if (v == null) return "—";
  if (v === 0) return "0";
  if (v < 0.1) return v.toFixed(3);
  if (v < 10) return v.toFixed(2);
  return intFmt.format(v);
}

// Dollars: cents above $1, otherwise three significant digits, so a cheap model's
// fractions of a cent stay visible.
function fmtUsd(v) {
  if (v == null) return "—";
  const a = Math.abs(v);
  if (a === 0) return "$0.00";
  if (a >= 1) {
    return "$" + v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }
  const decimals = Math.min(12, Math.max(2, 2 - Math.floor(Math.log10(a))));
  let s = v.toFixed(decimals);
  s = s.replace(/(\.\d\d\d*?)0+$/, "$1");
  return "$" + s;
}

function fmtMs(v) {
  if (v == null) return "—";
  if (v < 1) return v.toFixed(3) + " ms";
  if (v < 10) return v.toFixed(2) + " ms";
  if (v < 1000) return v.toFixed(0) + " ms";
  return (v / 1000).toFixed(v < 10000 ? 2 : 1) + " s";
}

function fmtBytes(v) {
  if (v == null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let x = v;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return (i === 0 ? x.toFixed(0) : x.toFixed(1)) + " " + units[i];
}

function fmtDuration(s) {
  if (s < 60) return Math.floor(s) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function fmtTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// ---------------------------------------------------------------- DOM helpers

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c == null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

// A figure with its raw value kept in data-value (tests and scripts read it).
function cell(key, value, fmt, cls) {
  return el("td", { class: cls || "num", "data-key": key, "data-value": value == null ? "" : String(value) }, fmt(value));
}

function setKey(key, value, fmt) {
  for (const node of document.querySelectorAll('[data-key="' + key + '"]')) {
    node.textContent = fmt(value);
    node.setAttribute("data-value", value == null ? "" : String(value));
    // Fractions of a cent are long: the headline figures shrink rather than overflow.
    if (node.classList.contains("big")) node.classList.toggle("long", node.textContent.length > 8);
  }
}

function fillBody(table, rows, emptyText, columns) {
  const body = document.querySelector("#" + table + " tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    body.append(el("tr", {}, el("td", { class: "empty-row", colspan: String(columns) }, emptyText)));
    return;
  }
  // Narrow screens show each row as a block of "label value" lines (see .stack in
  // the CSS): every cell carries its column's name.
  const labels = [...document.querySelectorAll("#" + table + " thead th")].map((th) => th.textContent);
  for (const r of rows) {
    [...r.children].forEach((c, i) => { if (labels[i]) c.setAttribute("data-label", labels[i]); });
    body.append(r);
  }
}

// ---------------------------------------------------------------- charts

const CHART_H = 200;
const PAD = { left: 44, right: 12, top: 10, bottom: 24 };

// Draws one chart of the history (the last hour, or less while the process is
// younger, but at least ten minutes). `series`: [{cls, values, name}] aligned with `t`.
function drawChart(id, s, opts) {
  const box = document.getElementById(id);
  const width = Math.max(260, Math.floor(box.clientWidth || 600));
  const root = svg("svg", { viewBox: "0 0 " + width + " " + CHART_H, role: "img", "aria-label": opts.label });
  const title = svg("title", {});
  title.textContent = opts.label;
  root.append(title);
  const end = s.t.length ? s.t[s.t.length - 1] : Date.now();
  const spanMin = Math.min(60, Math.max(10, Math.ceil(opts.coversS / 60 / 5) * 5));
  const start = end - spanMin * 60 * 1000;
  const x = (t) => PAD.left + ((t - start) / (end - start)) * (width - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - v / opts.yMax) * (CHART_H - PAD.top - PAD.bottom);

  for (const tick of opts.yTicks) {
    root.append(svg("line", { class: "gridline", x1: PAD.left, x2: width - PAD.right, y1: y(tick), y2: y(tick) }));
    const label = svg("text", { class: "axis", x: PAD.left - 6, y: y(tick) + 4, "text-anchor": "end" });
    label.textContent = opts.yFmt(tick);
    root.append(label);
  }
  const step = spanMin <= 15 ? 5 : spanMin <= 30 ? 10 : 15;
  for (let m = spanMin; m >= 0; m -= step) {
    const t = end - m * 60 * 1000;
    const label = svg("text", { class: "axis", x: x(t), y: CHART_H - 6, "text-anchor": m === 0 ? "end" : m === spanMin ? "start" : "middle" });
    label.textContent = m === 0 ? "now" : "−" + m + " min";
    root.append(label);
  }
  if (opts.threshold != null) {
    root.append(svg("line", { class: "threshold", x1: PAD.left, x2: width - PAD.right, y1: y(opts.threshold), y2: y(opts.threshold) }));
    const label = svg("text", { class: "threshold-label", x: width - PAD.right - 2, y: y(opts.threshold) - 4, "text-anchor": "end" });
    label.textContent = "alert " + opts.threshold;
    root.append(label);
  }

  let drawn = false;
  if (opts.stacked) {
    const below = new Array(s.t.length).fill(0);
    for (const series of opts.series) {
      const top = series.values.map((v, i) => below[i] + (v || 0));
      if (top.some((v, i) => v > below[i])) {
        let d = "";
        s.t.forEach((t, i) => { d += (i ? "L" : "M") + x(t).toFixed(1) + "," + y(top[i]).toFixed(1); });
        for (let i = s.t.length - 1; i >= 0; i--) d += "L" + x(s.t[i]).toFixed(1) + "," + y(below[i]).toFixed(1);
        root.append(svg("path", { class: "area c-" + series.cls, d: d + "Z" }));
        drawn = true;
      }
      top.forEach((v, i) => { below[i] = v; });
    }
  } else {
    for (const series of opts.series) {
      let d = "";
      let pen = false;
      series.values.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        d += (pen ? "L" : "M") + x(s.t[i]).toFixed(1) + "," + y(v).toFixed(1);
        pen = true;
      });
      if (d) {
        // A lone point gets a dot so it is visible.
        if (!d.includes("L")) d += "h0.01";
        root.append(svg("path", { class: "line c-" + series.cls + (series.cls === "all" ? " all" : ""), d: d }));
        drawn = true;
      }
    }
  }
  if (!drawn) {
    const t = svg("text", { class: "nodata", x: width / 2, y: CHART_H / 2, "text-anchor": "middle" });
    t.textContent = opts.empty;
    root.append(t);
  }
  box.replaceChildren(root);
}

function legend(id, items) {
  const ul = document.getElementById(id);
  ul.replaceChildren(...items.map((it) =>
    el("li", {}, el("span", { class: "swatch " + (it.dashed ? "dashed" : "c-" + it.cls), "aria-hidden": "true" }), it.name)));
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function drawCharts(d) {
  const s = d.series;
  const byStrategy = s.hit_ratio_by_strategy.length > 1 ? s.hit_ratio_by_strategy : [];
  const hitSeries = [{ cls: "all", name: "all strategies", values: s.hit_ratio }].concat(
    byStrategy.map((row, i) => ({ cls: "s" + (i % 6), name: row.strategy, values: row.values })));
  const now = d.hit_ratio.last_5m;
  drawChart("chart-hit", s, {
    label: "Hit ratio over the last hour, 5-minute windows; now " + fmtPct(now) + "; alert line at " + d.alert.hit_ratio_below,
    series: hitSeries, yMax: 1, yTicks: [0, 0.25, 0.5, 0.75, 1], yFmt: (v) => Math.round(v * 100) + "%",
    threshold: d.alert.hit_ratio_below, empty: "No cacheable requests in the last hour",
    coversS: d.history.covers_s,
  });
  legend("legend-hit", hitSeries.map((x) => ({ cls: x.cls, name: x.name }))
    .concat([{ dashed: true, name: "alert at " + d.alert.hit_ratio_below }]));

  const reqSeries = STATUSES.map((st) => ({ cls: st, name: STATUS_NAMES[st], values: s.requests_per_s[st] }));
  let peak = 0;
  s.t.forEach((_, i) => {
    peak = Math.max(peak, STATUSES.reduce((a, st) => a + (s.requests_per_s[st][i] || 0), 0));
  });
  const yMax = niceMax(peak);
  drawChart("chart-req", s, {
    label: "Requests per second by outcome over the last hour; now " + fmtRate(d.requests.per_second.total) + " per second",
    series: reqSeries, yMax: yMax, yTicks: [0, yMax / 2, yMax], yFmt: (v) => String(+v.toFixed(3)), stacked: true,
    empty: "No requests in the last hour",
    coversS: d.history.covers_s,
  });
  legend("legend-req", reqSeries.filter((x) => x.values.some((v) => v > 0) || ["hit", "miss"].includes(x.cls))
    .map((x) => ({ cls: x.cls, name: x.name })));
}

// ---------------------------------------------------------------- sections

function renderHeader(d) {
  const r = d.replica;
  const p = document.getElementById("replica");
  p.replaceChildren("Replica ", el("b", {}, r.host), " · up " + fmtDuration(r.uptime_s) +
    " · history " + fmtDuration(d.history.covers_s) + " of " + fmtDuration(d.history.window_s));
  document.getElementById("updated").textContent = "Updated " + fmtTime(d.generated_at_ms);
  document.getElementById("alert-line").textContent = String(d.alert.hit_ratio_below);
  const ratio = d.hit_ratio.last_5m;
  document.title = (ratio == null ? "" : fmtPct(ratio) + " hits · ") + "prefixcache on " + r.host;
}

function renderEmpty(d) {
  const empty = d.requests.since_start.total === 0;
  document.getElementById("empty").hidden = !empty;
  if (!empty) return;
  let [host, port] = splitListen(d.replica.listen);
  if (host === "0.0.0.0" || host === "::" || host === "[::]") host = location.hostname || "127.0.0.1";
  const url = "http://" + host + ":" + port;
  document.getElementById("empty-python").textContent =
    "from openai import OpenAI\n\nclient = OpenAI(base_url=\"" + url + "/v1\")\n" +
    "client.chat.completions.create(\n    model=\"gpt-4o-mini\",\n    messages=[{\"role\": \"user\", \"content\": \"Name three prime numbers.\"}],\n)";
  document.getElementById("empty-curl").textContent =
    "curl -s -D - -o /dev/null " + url + "/v1/chat/completions \\\n" +
    "  -H \"Authorization: Bearer $OPENAI_API_KEY\" -H 'Content-Type: application/json' \\\n" +
    "  -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}' | grep x-prefixcache-status";
}

function splitListen(listen) {
  const i = listen.lastIndexOf(":");
  return i < 0 ? [listen, "80"] : [listen.slice(0, i), listen.slice(i + 1)];
}

function renderKpis(d) {
  setKey("hit_ratio.last_5m", d.hit_ratio.last_5m, fmtPct);
  setKey("hit_ratio.last_hour", d.hit_ratio.last_hour, fmtPct);
  setKey("hit_ratio.since_start", d.hit_ratio.since_start, fmtPct);
  const badge = document.getElementById("alert-badge");
  const now = d.hit_ratio.last_5m;
  if (now == null) {
    badge.hidden = true;
  } else {
    badge.hidden = false;
    const low = now < d.alert.hit_ratio_below;
    badge.className = "badge " + (low ? "bad" : "ok");
    badge.textContent = low ? "below the " + d.alert.hit_ratio_below + " alert line" : "above the " + d.alert.hit_ratio_below + " alert line";
  }
  document.getElementById("kpi-hit").querySelector(".big").classList.toggle("low", now != null && now < d.alert.hit_ratio_below);
  setKey("requests.per_second.total", d.requests.per_second.total, fmtRate);
  setKey("inflight.upstream", d.inflight.upstream, fmtInt);
  setKey("provider_cache.cached_share.last_hour", d.provider_cache.cached_share.last_hour, fmtPct);
  setKey("provider_cache.cacheable_share.last_hour", d.provider_cache.cacheable_share.last_hour, fmtPct);
  setKey("money.projected_month_saved_usd", d.money.projected_month_saved_usd, fmtUsd);
  setKey("money.projected_month_spent_usd", d.money.projected_month_spent_usd, fmtUsd);
}

function renderOutcomes(d) {
  const rows = STATUSES.map((st) => el("tr", {},
    el("th", { scope: "row", title: STATUS_HELP[st] },
      el("span", { class: "outcome" }, el("span", { class: "swatch c-" + st, "aria-hidden": "true" }), STATUS_NAMES[st])),
    cell("requests.last_5m." + st, d.requests.last_5m[st], fmtInt),
    cell("requests.last_hour." + st, d.requests.last_hour[st], fmtInt),
    cell("requests.since_start." + st, d.requests.since_start[st], fmtInt)));
  rows.push(el("tr", {}, el("th", { scope: "row" }, "All"),
    cell("requests.last_5m.total", d.requests.last_5m.total, fmtInt),
    cell("requests.last_hour.total", d.requests.last_hour.total, fmtInt),
    cell("requests.since_start.total", d.requests.since_start.total, fmtInt)));
  fillBody("outcomes", rows, "", 4);
  setKey("requests.since_start.total", d.requests.since_start.total, fmtInt);
}

function renderMoney(d) {
  const m = d.money;
  const t = d.tokens;
  const rows = [
    el("tr", {}, el("th", { scope: "row" }, "Saved"),
      cell("money.saved_usd.last_hour", m.saved_usd.last_hour, fmtUsd),
      cell("money.saved_usd.today", m.saved_usd.today, fmtUsd),
      cell("money.saved_usd.since_start", m.saved_usd.since_start, fmtUsd),
      cell("money.projected_month_saved_usd", m.projected_month_saved_usd, fmtUsd)),
    el("tr", {}, el("th", { scope: "row" }, "Spent"),
      cell("money.spent_usd.last_hour", m.spent_usd.last_hour, fmtUsd),
      cell("money.spent_usd.today", m.spent_usd.today, fmtUsd),
      cell("money.spent_usd.since_start", m.spent_usd.since_start, fmtUsd),
      cell("money.projected_month_spent_usd", m.projected_month_spent_usd, fmtUsd)),
    el("tr", {}, el("th", { scope: "row" }, "Tokens saved"),
      cell("tokens.saved.last_hour", t.saved.last_hour, fmtInt),
      cell("tokens.saved.today", t.saved.today, fmtInt),
      cell("tokens.saved.since_start", t.saved.since_start, fmtInt),
      el("td", { class: "num muted" })),
    el("tr", {}, el("th", { scope: "row" }, "Tokens paid"),
      cell("tokens.paid.last_hour", t.paid.last_hour, fmtInt),
      cell("tokens.paid.today", t.paid.today, fmtInt),
      cell("tokens.paid.since_start", t.paid.since_start, fmtInt),
      el("td", { class: "num muted" })),
  ];
  fillBody("money", rows, "", 5);
  for (const k of ["today", "since_start"]) {
    setKey("money.saved_usd." + k, m.saved_usd[k], fmtUsd);
    setKey("money.spent_usd." + k, m.spent_usd[k], fmtUsd);
    setKey("tokens.saved." + k, t.saved[k], fmtInt);
    setKey("tokens.paid." + k, t.paid[k], fmtInt);
  }
  document.getElementById("projection-note").textContent = m.projected_month_spent_usd == null
    ? "Per month: projected once a minute of history is in (from the last hour's rate)."
    : "Per month: the rate of the last " + fmtDuration(m.projection_basis_s) + " over 30 days. Prices from the pricing table.";
}

function ratioCell(key, v, alert) {
  const c = cell(key, v, fmtPct);
  if (v != null && v < alert) c.classList.add("low");
  return c;
}

function renderStrategies(d) {
  const a = d.alert.hit_ratio_below;
  const rows = d.strategies.map((s) => el("tr", {},
    el("th", { scope: "row" }, s.name),
    cell("strategy." + s.name + ".requests_last_hour", s.requests_last_hour.total, fmtInt),
    cell("strategy." + s.name + ".requests", s.requests.total, fmtInt),
    ratioCell("strategy." + s.name + ".hit_ratio.last_5m", s.hit_ratio.last_5m, a),
    ratioCell("strategy." + s.name + ".hit_ratio.last_hour", s.hit_ratio.last_hour, a),
    ratioCell("strategy." + s.name + ".hit_ratio.since_start", s.hit_ratio.since_start, a)));
  fillBody("strategies", rows, "No strategies configured", 6);
}

function findingChip(f) {
  const text = f.rule + " · " + f.kind + " · tokens " + f.tokens[0] + "–" + f.tokens[1];
  return el("span", {
    class: "chip" + (f.severity === "error" ? " error" : ""),
    title: f.severity + ": seen on " + f.count + " request" + (f.count === 1 ? "" : "s"),
    "data-rule": f.rule,
  }, text);
}

function renderFamilies(d) {
  const a = d.alert.hit_ratio_below;
  const rows = d.families.map((f) => {
    let stable = "—";
    if (f.stable_prefix_tokens != null) {
      stable = (f.stable_prefix_at_least ? "≥ " : "") + fmtInt(f.stable_prefix_tokens) + (f.static_varies ? " (varies)" : "");
    }
    const findings = f.findings.length
      ? el("div", { class: "chips" }, ...f.findings.map(findingChip))
      : el("span", { class: "muted" }, "none");
    return el("tr", { "data-family": f.short },
      el("th", { scope: "row", class: "id", title: f.id }, f.short),
      el("td", {}, f.strategy),
      cell("family." + f.short + ".requests_last_hour", f.requests_last_hour, fmtInt),
      ratioCell("family." + f.short + ".hit_ratio_last_hour", f.hit_ratio_last_hour, a),
      el("td", { class: "num", title: f.static_varies ? "the static part differs between requests of this family" : "tools, schema, system and developer messages" }, stable),
      cell("family." + f.short + ".provider_cacheable_share", f.provider_cacheable_share, fmtPct),
      el("td", {}, findings));
  });
  fillBody("families", rows, "No prefix families yet: they appear with the first request to a cached route.", 7);
  document.getElementById("families-note").textContent = d.families_tracked > d.families.length
    ? d.families_tracked + " families tracked on this replica; the " + d.families.length + " busiest are shown."
    : "";
}

function renderFindings(d) {
  const rows = d.findings.recent.map((f) => el("tr", {},
    el("th", { scope: "row" }, f.rule, el("br", {}), el("span", { class: "kind" }, f.kind)),
    el("td", {}, f.strategy),
    cell("finding." + f.rule + "." + f.kind + ".count", f.count, fmtInt),
    el("td", { class: "num" }, fmtInt(f.families)),
    el("td", { class: "where" }, el("span", {}, "tokens " + f.tokens[0] + "–" + f.tokens[1], el("br", {}), "in ", el("span", { class: "id" }, f.family)))));
  fillBody("findings", rows, "No findings: no ids, timestamps or whitespace drift in the prefixes seen.", 5);
}

function renderPolicies(d) {
  const rows = d.provider_cache.policies.map((p) => {
    const name = p.policy.prompt_cache_key + (p.policy.breakpoints ? " + " + p.policy.breakpoints : "");
    const f = p.since_start;
    return el("tr", {},
      el("th", { scope: "row" }, name),
      cell("policy." + name + ".prompt_tokens", f.prompt_tokens, fmtInt),
      cell("policy." + name + ".cached_share", f.cached_share, fmtPct),
      cell("policy." + name + ".cache_write_tokens", f.cache_write_tokens, fmtInt),
      cell("policy." + name + ".cache_write_usd", f.cache_write_usd, fmtUsd));
  });
  fillBody("policies", rows, "No upstream calls yet.", 5);
}

function facts(id, pairs) {
  const dl = document.getElementById(id);
  dl.replaceChildren();
  for (const [name, value, cls, key, raw] of pairs) {
    dl.append(el("dt", {}, name), el("dd", { class: cls || null, "data-key": key || null, "data-value": raw == null ? null : String(raw) }, value));
  }
}

function renderHealth(d) {
  const st = d.store;
  const pairs = [
    ["Backend", st.backend],
    ["Status", st.degraded ? "degraded: failing open to upstream" : "ok", st.degraded ? "state-bad" : "state-ok", "store.degraded", st.degraded],
  ];
  if (st.circuit) {
    pairs.push(["Circuit breaker", st.circuit.state.replace("_", "-"), st.circuit.state === "closed" ? "state-ok" : "state-bad", "store.circuit.state", st.circuit.state]);
    pairs.push(["Breaker trips", fmtInt(st.circuit.trips)]);
  }
  pairs.push(["Entries", fmtInt(st.entries), null, "store.entries", st.entries]);
  pairs.push(["Size", fmtBytes(st.bytes), null, "store.bytes", st.bytes]);
  pairs.push(["Evictions", fmtInt(st.evictions), null, "store.evictions", st.evictions]);
  facts("store", pairs);
  facts("inflight", [
    ["Upstream calls", fmtInt(d.inflight.upstream), null, "inflight.upstream", d.inflight.upstream],
    ["Requests others can join", fmtInt(d.inflight.flights), null, "inflight.flights", d.inflight.flights],
    ["Coalesced followers", fmtInt(d.inflight.followers), null, "inflight.followers", d.inflight.followers],
    ["Coalesced, last hour", fmtInt(d.requests.last_hour.coalesced)],
    ["Coalesced, since start", fmtInt(d.requests.since_start.coalesced)],
  ]);
  const rows = ["hit", "coalesced", "miss"].map((st) => {
    const q = d.latency_ms[st].last_hour;
    return el("tr", {},
      el("th", { scope: "row" }, STATUS_NAMES[st]),
      cell("latency." + st + ".p50", q.p50, fmtMs),
      cell("latency." + st + ".p99", q.p99, fmtMs),
      cell("latency." + st + ".count", q.count, fmtInt));
  });
  fillBody("latency", rows, "", 4);
}

function render(d) {
  renderHeader(d);
  renderEmpty(d);
  renderKpis(d);
  renderOutcomes(d);
  renderMoney(d);
  renderStrategies(d);
  renderFamilies(d);
  renderFindings(d);
  renderPolicies(d);
  renderHealth(d);
  drawCharts(d);
  document.body.setAttribute("data-loaded", String(d.generated_at_ms));
}

// ---------------------------------------------------------------- polling

function showError(text) {
  const b = document.getElementById("error");
  b.hidden = text == null;
  b.textContent = text || "";
}

async function refresh() {
  try {
    const resp = await fetch(SUMMARY_URL, { cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!resp.ok) {
      const hint = resp.status === 401 ? " (the admin token is missing or wrong: reload the page to enter it)" : "";
      throw new Error("HTTP " + resp.status + hint);
    }
    last = await resp.json();
    showError(null);
    render(last);
  } catch (e) {
    showError("Could not load " + SUMMARY_URL.replace(location.origin, "") + ": " + e.message + ". Showing the last figures; retrying every " + REFRESH_MS / 1000 + " s.");
  }
}

function schedule() {
  clearTimeout(timer);
  if (!paused && !document.hidden) timer = setTimeout(async () => { await refresh(); schedule(); }, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const pause = document.getElementById("pause");
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume updates" : "Pause updates";
    if (!paused) refresh();
    schedule();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !paused) refresh();
    schedule();
  });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (last) drawCharts(last); }, 150);
  });
  refresh().then(schedule);
});

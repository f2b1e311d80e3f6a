// shunt's dashboard: reads GET /status, /recent and /history, and drives POST /use, /strategy and
// /alerts. Hand-written, no library: the charts are a few SVG rectangles per bucket. Every call sends
// the remote key (x-api-key) once the user typed it after a 401; it lives in sessionStorage only.
"use strict";
(() => {
  const KEY_STORE = "shunt.remote_key";
  const POLL_MS = 2000;    // accounts and the request feed
  const CHART_MS = 10000;  // history charts (usage.db holds minute totals)
  const FEED_ROWS = 100;
  const RANGES = { day: { span: 86400, step: 3600 }, week: { span: 7 * 86400, step: 6 * 3600 } };
  const PALETTE = ["#3182ce", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#d69e2e", "#718096"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const state = { status: null, lastSeq: 0, range: "day", locked: false, colors: new Map(), cards: new Map() };

  class Locked extends Error {}

  // -- the control API ------------------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = {};
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers["x-api-key"] = key;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";  // shunt refuses state changes without it
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    if (r.status === 401) {
      askKey(Boolean(key));
      throw new Locked();
    }
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new Error((data && data.error && data.error.message) || `${method} ${path}: HTTP ${r.status}`);
    return data;
  }

  function askKey(wrong) {
    sessionStorage.removeItem(KEY_STORE);
    if (wrong) $("keyprompt").textContent = "That key was not accepted. Enter this shunt's remote key.";
    state.locked = true;
    $("keyform").hidden = false;
    $("key").focus();
  }

  function problem(message) {
    $("problem").hidden = !message;
    $("problem").textContent = message || "";
  }

  async function guarded(action) {
    try {
      await action();
      problem(null);
    } catch (e) {
      if (!(e instanceof Locked)) problem(e.message);
    }
  }

  // -- formatting -----------------------------------------------------------------------------------
  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
  }
  const until = (at, now) => (at ? (at - now < 1 ? "now" : duration(at - now)) : "");
  function tokens(n) {
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
    if (n >= 1e4) return `${Math.round(n / 1e3)}k`;
    return String(n);
  }
  const usd = (v) => "$" + (v >= 1 || v === 0 ? v.toFixed(2) : v.toFixed(4).replace(/0+$/, ""));
  const label = (key) => key || "(no account)";

  function colour(name) {
    if (!state.colors.has(name)) state.colors.set(name, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(name);
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // The runtime overrides (`shunt override`): the global ones, then each client token's own.
  function overridesText(doc) {
    if (!doc) return "";
    const fields = (o) => Object.entries(o).map(([f, v]) => `${f} ${v}`).join(", ");
    const parts = [];
    if (doc.global && Object.keys(doc.global).length) parts.push(`every request: ${fields(doc.global)}`);
    for (const [token, o] of Object.entries(doc.tokens || {})) parts.push(`token ${token}: ${fields(o)}`);
    return parts.length ? `Overrides — ${parts.join("; ")}` : "";
  }

  // -- status: header, savings, cards ---------------------------------------------------------------
  async function loadStatus() {
    const doc = await api("GET", "/status");
    state.status = doc;
    const now = Date.now() / 1000;
    $("version").textContent = doc.version;
    $("routing").textContent = doc.pinned_account ? `pinned to ${doc.pinned_account}` : "routing automatically";
    $("auto").disabled = !doc.pinned_account;
    if (document.activeElement !== $("strategy")) $("strategy").value = doc.strategy;
    const muted = Boolean(doc.alerts && doc.alerts.muted);
    $("mute").setAttribute("aria-pressed", String(muted));
    $("mute").textContent = muted ? "Alerts muted" : "Mute alerts";
    $("savings").textContent = savingsText(doc.savings);
    const ov = overridesText(doc.overrides);
    $("overrides").hidden = !ov;
    $("overrides").textContent = ov;
    const seen = new Set();
    for (const a of doc.accounts) {
      seen.add(a.name);
      updateCard(card(a.name), a, doc.pinned_account, now);
    }
    for (const [name, node] of state.cards) {
      if (!seen.has(name)) {
        node.remove();
        state.cards.delete(name);
      }
    }
    showClients(doc.clients || []);
  }

  // The clients of today (most active first), shown once some request came from other than `local`.
  function showClients(clients) {
    const shown = clients.some((c) => c.name !== "local");
    $("clients").hidden = !shown;
    if (!shown) return;
    const rows = clients.map((c) => {
      const tr = el("tr");
      const limits = Object.entries(c.limits || {}).filter(([, v]) => v.limit != null)
        .map(([k, v]) => (v.used == null ? `${k} ${v.limit}` : `${k} ${v.used}/${v.limit}`)).join(" · ");
      const cost = usd(c.cost_usd || 0) + (c.unpriced_requests ? ` +${c.unpriced_requests} unpriced` : "");
      const cells = [[c.name], [String(c.requests || 0), "num"], [String(c.in_flight || 0), "num"],
        [tokens(c.input_tokens || 0), "num"], [tokens(c.output_tokens || 0), "num"],
        [tokens(c.cache_read_tokens || 0), "num"], [cost, "num"], [limits || "-"]];
      for (const [text, cls] of cells) tr.append(el("td", cls, text));
      return tr;
    });
    $("client-rows").replaceChildren(...rows);
  }

  function savingsText(s) {
    if (!s) return "";
    const parts = [["today", "today"], ["7d", "7 days"], ["30d", "30 days"], ["all_time", "all time"]]
      .map(([k, l]) => `${l} ${usd((s[k] && s[k].usd) || 0)}`);
    const unpriced = (s.all_time && s.all_time.unpriced_requests) || 0;
    return "Saved at API list prices: " + parts.join(" · ") + (unpriced ? ` · ${unpriced} requests unpriced` : "");
  }

  function card(name) {
    if (state.cards.has(name)) return state.cards.get(name);
    const c = el("article", "card");
    c.dataset.account = name;
    c.style.setProperty("--swatch", colour(name));
    const h = el("h2");
    h.append(el("span", "name", name), el("span", "status"));
    c.append(h, el("p", "who"));
    for (const w of ["5h", "7d"]) {
      const row = el("div", "window w" + w);
      const bar = el("div", "bar");
      bar.append(el("div", "fill"));
      row.append(el("span", "label", w), bar, el("span", "text"));
      c.append(row);
    }
    c.append(el("p", "cooldown"), el("p", "action"), el("p", "stats"), el("p", "saved"));
    const pin = el("button", "pin", "Pin");
    pin.type = "button";
    pin.addEventListener("click", () => control("/use", { account: name }));
    c.append(pin);
    $("cards").append(c);
    state.cards.set(name, c);
    return c;
  }

  function updateCard(c, a, pinned, now) {
    const q = (sel) => c.querySelector(sel);
    c.classList.toggle("pinned", pinned === a.name);
    q(".status").textContent = a.status.replace("_", " ");
    q(".status").className = "status " + a.status;
    q(".who").textContent = [a.email, a.plan || (a.kind === "api_key" ? "API key" : "")].filter(Boolean).join(" · ");
    for (const [w, util, reset] of [["5h", a.utilization_5h, a.reset_5h_at_s], ["7d", a.utilization_7d, a.reset_7d_at_s]]) {
      const fill = q(`.w${w} .fill`);
      const pct = util === null || util === undefined ? null : Math.round(util * 100);
      fill.style.width = `${Math.min(100, pct || 0)}%`;
      fill.classList.toggle("high", pct !== null && pct >= 80 && pct < 100);
      fill.classList.toggle("full", pct !== null && pct >= 100);
      const left = until(reset, now);
      q(`.w${w} .text`).textContent = pct === null ? "not reported yet" : `${pct}% used` + (left ? ` · resets in ${left}` : "");
    }
    let cool = "";
    if (a.cooldown_until_s) {
      cool = `${a.status === "exhausted" ? "exhausted" : "cooling"} for ${until(a.cooldown_until_s, now)}` +
        (a.cooldown_reason ? ` (${a.cooldown_reason})` : "");
    }
    q(".cooldown").textContent = cool;
    q(".action").textContent = a.action || "";
    q(".stats").textContent = `${a.requests} requests · in ${tokens(a.input_tokens)} · out ${tokens(a.output_tokens)}` +
      ` · cache ${tokens(a.cache_read_tokens)}/${tokens(a.cache_creation_tokens)} · ${a.active_sessions} sessions`;
    const s = a.savings;
    q(".saved").textContent = s ? `saved today ${usd(s.today.usd)} · 30 days ${usd(s["30d"].usd)}` : "";
    const pin = q(".pin");
    pin.disabled = pinned === a.name;
    pin.textContent = pinned === a.name ? "Pinned" : "Pin";
    pin.setAttribute("aria-label", `pin ${a.name}`);
  }

  // -- controls -------------------------------------------------------------------------------------
  async function control(path, body) {
    await guarded(async () => {
      await api("POST", path, body);
      await loadStatus();
    });
  }

  // -- the request feed -----------------------------------------------------------------------------
  async function loadFeed() {
    const data = await api("GET", `/recent?after=${state.lastSeq}&limit=${FEED_ROWS}`);
    const body = $("feed-rows");
    if (data.last_seq < state.lastSeq) {  // shunt restarted: its numbering starts again
      body.replaceChildren();
      state.lastSeq = 0;
    }
    for (const r of data.requests) {
      if (r.seq <= state.lastSeq) continue;  // already shown (two loads crossed)
      const tr = el("tr", r.status >= 400 || r.broke ? "err" : "");
      const when = new Date(r.ts_s * 1000).toLocaleTimeString([], { hour12: false });
      const marks = [r.held ? `held ${((r.held_ms || 0) / 1000).toFixed(1)}s` : "", r.moved ? `moved ×${r.attempts}` : "",
        r.broke ? "broke" : "", r.client && r.client !== "local" ? `by ${r.client}` : ""];
      const cells = [[when], [label(r.account)], [r.model], [String(r.status), "code"],
        [tokens(r.input_tokens || 0), "num"], [tokens(r.output_tokens || 0), "num"],
        [`${tokens(r.cache_read_tokens || 0)}/${tokens(r.cache_creation_tokens || 0)}`, "num"],
        [`${((r.duration_ms || 0) / 1000).toFixed(1)}s`, "num"], [marks.filter(Boolean).join(" "), "marks"]];
      for (const [text, cls] of cells) tr.append(el("td", cls, text));
      body.prepend(tr);
    }
    while (body.rows.length > FEED_ROWS) body.deleteRow(-1);
    state.lastSeq = Math.max(state.lastSeq, data.last_seq);
  }

  // -- history charts -------------------------------------------------------------------------------
  async function loadCharts() {
    const { span, step } = RANGES[state.range];
    const now = Math.floor(Date.now() / 1000);
    const since = Math.floor(now / step) * step - span + step;
    const data = await api("GET", `/history?since_s=${since}&until_s=${now + 1}&step_s=${step}&by=account`);
    const starts = Array.from({ length: span / step }, (_, i) => data.since_s + i * step);
    const keys = [...new Set(data.buckets.map((b) => b.key))].sort();
    const total = (b) => b.input_tokens + b.output_tokens + b.cache_read_tokens + b.cache_write_tokens;
    drawStacked($("chart-tokens"), starts, keys, data.buckets, total, tokens, step);
    drawStacked($("chart-requests"), starts, keys, data.buckets, (b) => b.requests, String, step);
    const legend = $("legend");
    legend.replaceChildren(...keys.map((k) => {
      const li = el("li", "", label(k));
      li.style.setProperty("--swatch", colour(k));
      return li;
    }));
  }

  function niceCeiling(v) {
    if (v <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 2.5, 5, 10].map((m) => m * p).find((c) => c >= v);
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Stacked bars: one column per bucket, one rectangle per account with a value in it.
  function drawStacked(node, starts, keys, buckets, value, fmt, step) {
    const W = 640, H = 180, L = 44, R = 6, T = 8, B = 20;
    const cell = new Map(buckets.map((b) => [`${b.start_s}|${b.key}`, value(b)]));
    const sums = starts.map((s) => keys.reduce((acc, k) => acc + (cell.get(`${s}|${k}`) || 0), 0));
    const top = niceCeiling(Math.max(0, ...sums));
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const colW = (W - L - R) / starts.length;
    const parts = [];
    for (const f of [0, 0.5, 1]) {
      parts.push(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(top * f), y2: y(top * f) }));
      parts.push(svg("text", { x: L - 4, y: y(top * f) + 3, "text-anchor": "end" }, fmt(top * f)));
    }
    const every = Math.ceil(starts.length / 6);
    starts.forEach((s, i) => {
      if (i % every === 0) {
        const d = new Date(s * 1000);
        const text = step < 86400 && starts.length <= 24
          ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false })
          : d.toLocaleDateString([], { weekday: "short", day: "numeric" });
        parts.push(svg("text", { x: L + i * colW + 1, y: H - 6 }, text));
      }
      let base = 0;
      for (const k of keys) {
        const v = cell.get(`${s}|${k}`) || 0;
        if (!v) continue;
        const r = svg("rect", { class: "series", "data-account": label(k), x: (L + i * colW + 1).toFixed(1),
          y: y(base + v).toFixed(1), width: Math.max(1, colW - 2).toFixed(1),
          height: Math.max(0.5, y(base) - y(base + v)).toFixed(1), fill: colour(k) });
        r.append(svg("title", {}, `${label(k)}: ${fmt(v)}`));
        parts.push(r);
        base += v;
      }
    });
    if (!sums.some(Boolean)) parts.push(svg("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no requests in this range yet"));
    node.replaceChildren(...parts);
  }

  // -- wiring ---------------------------------------------------------------------------------------
  function loop(fn, ms) {
    const run = async () => {
      if (!state.locked) await guarded(fn);
      setTimeout(run, ms);
    };
    run();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("auto").addEventListener("click", () => control("/use", { account: "auto" }));
    $("strategy").addEventListener("change", (e) => control("/strategy", { strategy: e.target.value }));
    $("mute").addEventListener("click", () => {
      const muted = $("mute").getAttribute("aria-pressed") === "true";
      control("/alerts", { muted: !muted });
    });
    for (const b of document.querySelectorAll(".tabs button")) {
      b.addEventListener("click", () => {
        state.range = b.dataset.range;
        for (const o of document.querySelectorAll(".tabs button")) o.setAttribute("aria-pressed", String(o === b));
        guarded(loadCharts);
      });
    }
    $("keyform").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY_STORE, $("key").value);
      $("key").value = "";
      $("keyform").hidden = true;
      state.locked = false;
      guarded(loadStatus);
      guarded(loadFeed);
      guarded(loadCharts);
    });
    loop(loadStatus, POLL_MS);
    loop(loadFeed, POLL_MS);
    loop(loadCharts, CHART_MS);
  });
})();

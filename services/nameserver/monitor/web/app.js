// rsp pool page: renders the name server's live pool state from the
// server-sent events of api/stream (see ../STREAM.md). No polling: the
// EventSource reconnects by itself and every (re)connect starts with a
// snapshot. All data is written with textContent / attributes, never as HTML.
"use strict";

(() => {
  const HISTORY = 120;        // stats points kept per chart
  const LINGER_MS = 10000;    // removed rows and empty pools stay this long
  const TICK_MS = 250;        // countdown refresh
  const LOG_MAX = 50;         // entries in the change log
  const MIN_SLOTS = 30;       // narrowest chart window, in stats points
  const SVGNS = "http://www.w3.org/2000/svg";

  const page = { changes: 0, stats: 0 };
  window.rspPage = page;

  // ---------- state ----------
  let offset = 0;             // server clock - browser clock, ms
  let replica = "";
  let replicaIDs = new Set(); // the replica field may list several, comma-separated
  let lastTotalRate = 0;
  let statsNo = 0;            // stats events seen (drives history pruning)
  const scopes = new Map();   // scope -> Scope
  const pools = new Map();    // "scope/pool" -> Pool
  // Chart history lives apart from the DOM so it survives a reconnect and
  // covers pools the page does not show (yet).
  const scopeHist = new Map(); // scope -> {rate: [], seen}
  const poolHist = new Map();  // "scope/pool" -> {size: [], rate: [], seen}

  const collator = new Intl.Collator("en", { numeric: true });
  const cmp = (a, b) => collator.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0);

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"), replica: $("replica"), clock: $("clock"),
    scopes: $("scopes"), placeholder: $("placeholder"),
    tScopes: $("t-scopes"), tPools: $("t-pools"), tPes: $("t-pes"), tRate: $("t-rate"),
    tNs: $("t-ns"), tNsBox: $("t-ns-box"),
    changes: $("changes"), changesEmpty: $("changes-empty"),
  };

  // ---------- small helpers ----------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function setText(e, s) {
    if (e.textContent !== s) e.textContent = s;
  }

  // parseTime accepts RFC 3339 with up to nanoseconds (Go's time.Time).
  function parseTime(s) {
    if (typeof s !== "string" || s === "") return NaN;
    const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$/.exec(s);
    let t;
    if (m) {
      const frac = m[2] ? (m[2] + "000").slice(0, 4) : "";
      t = Date.parse(m[1] + frac + (m[3] || "Z"));
    } else {
      t = Date.parse(s);
    }
    // Go's zero time (year 1) means "not set".
    return t > 0 ? t : NaN;
  }
  const now = () => Date.now() + offset;
  function syncClock(msg) {
    const t = parseTime(msg && msg.time);
    if (!Number.isNaN(t)) offset = t - Date.now();
  }

  const pad2 = (n) => (n < 10 ? "0" : "") + n;
  function hms(t) {
    const d = new Date(t);
    return pad2(d.getUTCHours()) + ":" + pad2(d.getUTCMinutes()) + ":" + pad2(d.getUTCSeconds());
  }
  // fmtDur: "12s", "3m 4s", "2h 5m", "3d 4h".
  function fmtDur(ms) {
    let s = Math.floor(Math.max(0, ms) / 1000);
    if (s < 60) return s + "s";
    let m = Math.floor(s / 60); s %= 60;
    if (m < 60) return m + "m " + s + "s";
    let h = Math.floor(m / 60); m %= 60;
    if (h < 24) return h + "h " + m + "m";
    const d = Math.floor(h / 24); h %= 24;
    return d + "d " + h + "h";
  }
  function fmtLeft(ms) {
    if (ms <= 0) return "0.0s";
    if (ms < 60000) return (Math.floor(ms / 100) / 10).toFixed(1) + "s";
    return fmtDur(ms);
  }
  function fmtRate(v) {
    if (!Number.isFinite(v)) return "0";
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
    if (a >= 100) return Math.round(v).toLocaleString("en");
    if (a >= 10) return v.toFixed(0);
    if (v === 0) return "0";
    return v.toFixed(1);
  }
  const fmtInt = (n) => Number(n || 0).toLocaleString("en");
  function fmtNum(v) {
    // policy parameters: as compact as they came
    return Number.isInteger(v) ? String(v) : String(Math.round(v * 10000) / 10000);
  }
  function push(arr, v) {
    arr.push(v);
    if (arr.length > HISTORY) arr.splice(0, arr.length - HISTORY);
  }

  // ---------- charts ----------
  // A chart is a fixed-size inline SVG: faint baseline, filled area, line and
  // a dot at the newest point, right-aligned (newest at the right edge).
  function makeChart(kind, w, h, cls) {
    const svg = svgEl("svg", {
      "data-chart": kind, width: w, height: h, viewBox: `0 0 ${w} ${h}`,
      class: "chart " + cls, "aria-hidden": "true",
    });
    const title = svgEl("title");
    const top = svgEl("line", { x1: 0, x2: w, y1: 2.5, y2: 2.5, class: "grid" });
    const base = svgEl("line", { x1: 0, x2: w, y1: h - 0.5, y2: h - 0.5, class: "base" });
    const area = svgEl("path", { class: "area", d: "" });
    const line = svgEl("path", { class: "line", d: "" });
    const dot = svgEl("circle", { class: "dot", r: 2.2, cx: -10, cy: -10 });
    const maxLabel = svgEl("text", { class: "max", x: 2, y: 10 });
    svg.append(title, top, base, area, line, dot, maxLabel);
    return { svg, title, area, line, dot, maxLabel, w, h, sig: "" };
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  function drawChart(c, values, opts) {
    const n = values.length;
    const last = n ? values[n - 1] : 0;
    const sig = n + ":" + values[0] + ":" + last + ":" + (n > 1 ? values[n - 2] : "");
    if (sig === c.sig) return;
    c.sig = sig;
    let max = 0;
    for (const v of values) if (v > max) max = v;
    const top = opts.integer ? Math.max(2, Math.ceil(max * 1.25)) : niceMax(max * 1.1);
    const padTop = 3, h = c.h - 1, w = c.w - 3;
    // The window is the last HISTORY seconds; while fewer points exist it
    // is at least MIN_SLOTS wide, so a new page's charts are not a sliver.
    const slots = Math.min(HISTORY, Math.max(MIN_SLOTS, n));
    const step = w / (slots - 1);
    const x = (i) => w - (n - 1 - i) * step;
    const y = (v) => h - (Math.max(0, v) / top) * (h - padTop);
    if (n === 0) {
      c.area.setAttribute("d", "");
      c.line.setAttribute("d", "");
      c.dot.setAttribute("cx", -10);
      c.maxLabel.textContent = "";
      c.title.textContent = opts.label + ": no data yet";
      return;
    }
    let d = "";
    for (let i = 0; i < n; i++) {
      const xi = x(i).toFixed(1), yi = y(values[i]).toFixed(1);
      if (i === 0) d = "M" + xi + " " + yi;
      else if (opts.step) d += "H" + xi + "V" + yi;
      else d += "L" + xi + " " + yi;
    }
    if (n === 1) d += "H" + (x(0) + 0.1).toFixed(1);
    c.line.setAttribute("d", d);
    c.area.setAttribute("d", d + "V" + h + "H" + x(0).toFixed(1) + "Z");
    c.dot.setAttribute("cx", x(n - 1).toFixed(1));
    c.dot.setAttribute("cy", y(last).toFixed(1));
    c.maxLabel.textContent = opts.maxLabel && max > 0 ? "max " + (opts.integer ? fmtInt(max) : fmtRate(max)) : "";
    c.title.textContent = `${opts.label}: now ${opts.integer ? fmtInt(last) : fmtRate(last)}, max ${opts.integer ? fmtInt(max) : fmtRate(max)} over the last ${n} s`;
  }

  // ---------- scopes ----------
  function ensureScope(name) {
    let s = scopes.get(name);
    if (s) return s;
    const sec = el("section", "scope");
    sec.dataset.scope = name;
    const head = el("div", "scope-head");
    const title = el("h2", "scope-title");
    title.append(el("span", "tag", "scope"), el("span", "scope-name", name));
    const meta = el("span", "scope-meta muted", "");
    const box = el("div", "chart-box");
    const chart = makeChart("scope-rate", 320, 44, "rate");
    const lab = el("div", "chart-text");
    const val = el("span", "chart-value", "0");
    lab.append(val, el("span", "chart-unit", "resolutions/s"));
    box.append(chart.svg, lab);
    head.append(title, meta, box);
    const ns = makeStrip(name);
    const list = el("div", "pools");
    const empty = el("p", "muted small none", "No pools in this scope.");
    sec.append(head, ns.strip, list, empty);
    s = { name, sec, meta, chart, val, list, empty, pools: new Map(), ns };
    scopes.set(name, s);
    // keep sections sorted by scope name
    let before = null;
    for (const other of scopes.values()) {
      if (other !== s && cmp(other.name, name) > 0 && (!before || cmp(other.name, before.name) < 0)) before = other;
    }
    ui.scopes.insertBefore(sec, before ? before.sec : null);
    ui.placeholder.hidden = true;
    const hist = scopeHist.get(name);
    drawChart(chart, hist ? hist.rate : [], { label: "resolutions/s", maxLabel: true });
    if (hist && hist.rate.length) val.textContent = fmtRate(hist.rate[hist.rate.length - 1]);
    return s;
  }
  function dropScope(s) {
    for (const p of [...s.pools.values()]) dropPool(p);
    s.sec.remove();
    scopes.delete(s.name);
    if (scopes.size === 0) ui.placeholder.hidden = false;
    updateNsTotal();
  }
  function updateScopeMeta(s) {
    let live = 0, shown = 0;
    for (const p of s.pools.values()) { live += p.live; shown++; }
    setText(s.meta, `${shown} pool${shown === 1 ? "" : "s"} · ${fmtInt(live)} PE${live === 1 ? "" : "s"}`);
    s.empty.hidden = shown > 0;
  }

  // ---------- name servers ----------
  // A strip of small cards between the scope header and its pools: every
  // name-server replica of the scope (stats' "nameservers", sorted by id),
  // its state, its share of the scope's resolutions and how long it has
  // been up (or since when it is gone). Cards are updated in place.
  const NS_STATES = { up: "up", stopped: "stopped", silent: "silent" };
  function makeStrip(scope) {
    const strip = el("div", "ns-strip");
    strip.hidden = true; // until a stats message lists the replicas
    strip.setAttribute("role", "group");
    strip.setAttribute("aria-label", "name servers of scope " + scope);
    const label = el("div", "ns-label");
    const sum = el("span", "ns-sum", "");
    label.append(el("span", "ns-title", "Name servers"), sum);
    const list = el("div", "ns-list");
    const none = el("span", "ns-none muted small", "no name-server beats heard yet");
    none.hidden = true;
    list.append(none);
    strip.append(label, list);
    return { scope, strip, sum, list, none, cards: new Map(), known: false, states: [] };
  }
  function makeCard(ns, id) {
    const card = el("div", "ns");
    card.dataset.nameserver = ns.scope + "/" + id;
    card.dataset.state = "";
    const top = el("div", "ns-top");
    const dot = el("span", "ns-dot");
    const idEl = el("span", "ns-id mono", id);
    const self = el("span", "ns-self", "this page");
    self.hidden = true;
    const stateEl = el("span", "ns-state", "");
    stateEl.dataset.field = "ns-state";
    top.append(dot, idEl, self, stateEl);
    const mid = el("div", "ns-mid");
    const rateBox = el("span", "ns-ratebox");
    const rate = el("span", "ns-rate", "0");
    rate.dataset.field = "ns-rate";
    rateBox.append(rate, el("span", "ns-unit", "/s"));
    const bar = el("span", "ns-bar");
    const fill = el("span", "ns-fill");
    bar.append(fill);
    const share = el("span", "ns-share", "");
    share.dataset.field = "ns-share";
    mid.append(rateBox, bar, share);
    const bot = el("div", "ns-bot");
    const pes = el("span", "ns-pes", "");
    pes.dataset.field = "ns-pes";
    const time = el("span", "ns-time", "");
    time.dataset.field = "ns-time";
    bot.append(pes, time);
    card.append(top, mid, bot);
    return {
      id, card, idEl, self, stateEl, rate, fill, share, pes, time,
      state: "", startAt: NaN, seenAt: NaN, timeStr: null, tip: "",
    };
  }
  // fmtNsRate: the replica's resolutions per second as a plain number
  // (no separators or k suffix, so the text is the number).
  function fmtNsRate(v) {
    if (!(v > 0)) return "0";
    return v >= 10 ? String(Math.round(v)) : v.toFixed(1);
  }
  function refreshNsTime(c, t) {
    let str;
    if (c.state === "up") str = Number.isNaN(c.startAt) ? "up" : "up " + fmtDur(t - c.startAt);
    else str = Number.isNaN(c.seenAt) ? "not seen" : "last seen " + fmtDur(t - c.seenAt) + " ago";
    if (str !== c.timeStr) { c.timeStr = str; c.time.textContent = str; }
  }
  function setSelfTag(c) {
    const mine = replicaIDs.has(c.id);
    if (c.self.hidden === mine) c.self.hidden = !mine;
    c.card.classList.toggle("self", mine);
  }
  // applyNameServers shows one scope's replicas from a stats message.
  function applyNameServers(s, sc) {
    const ns = s.ns;
    if (!Array.isArray(sc.nameservers)) return; // a server without beats: no strip
    const total = Number(sc.resolutions_per_s) || 0;
    const t = now();
    const seen = new Set();
    const states = [];
    let up = 0, silent = 0, prev = null;
    for (const r of sc.nameservers) {
      if (!r || r.id === undefined || r.id === null) continue;
      const id = String(r.id);
      if (seen.has(id)) continue;
      seen.add(id);
      let c = ns.cards.get(id);
      if (!c) {
        c = makeCard(ns, id);
        ns.cards.set(id, c);
        setSelfTag(c);
      }
      // keep the cards in the list's order (sorted by id)
      const want = prev ? prev.card.nextSibling : ns.list.firstChild;
      if (want !== c.card) ns.list.insertBefore(c.card, want);
      prev = c;
      const state = NS_STATES[r.state] || String(r.state || "unknown");
      states.push([id, state]);
      if (state === "up") up++;
      if (state === "silent") silent++;
      if (state !== c.state) {
        c.state = state;
        c.card.dataset.state = state;
        c.stateEl.textContent = state;
        c.timeStr = null;
      }
      const rate = Math.max(0, Number(r.resolutions_per_s) || 0);
      setText(c.rate, fmtNsRate(rate));
      c.rate.dataset.value = String(rate);
      const share = total > 0 ? Math.min(1, rate / total) : 0;
      const pct = Math.round(share * 100);
      const w = (Math.round(share * 1000) / 10) + "%";
      if (c.fill.style.width !== w) c.fill.style.width = w;
      setText(c.share, state === "up" && total > 0 ? pct + "%" : "—");
      const nPes = Number(r.pes) || 0, nPools = Number(r.pools) || 0;
      setText(c.pes, fmtInt(nPes) + (nPes === 1 ? " PE" : " PEs") + " · " + fmtInt(nPools) + (nPools === 1 ? " pool" : " pools"));
      c.startAt = parseTime(r.started_at);
      c.seenAt = parseTime(r.last_seen);
      refreshNsTime(c, t);
      const tip = [id + " — " + state + (replicaIDs.has(id) ? " (serves this page)" : ""),
        fmtRate(rate) + " resolutions/s" + (total > 0 ? " (" + pct + "% of the scope's " + fmtRate(total) + ")" : "")];
      if (r.started_at) tip.push("started " + r.started_at);
      if (r.last_seen) tip.push("last beat " + r.last_seen);
      if (r.key) tip.push("key " + r.key);
      const tipStr = tip.join("\n");
      if (tipStr !== c.tip) { c.tip = tipStr; c.card.title = tipStr; }
    }
    for (const [id, c] of ns.cards) {
      if (!seen.has(id)) { c.card.remove(); ns.cards.delete(id); }
    }
    ns.known = true;
    ns.states = states;
    ns.none.hidden = seen.size > 0;
    setText(ns.sum, seen.size ? up + "/" + seen.size + " up" : "");
    ns.strip.classList.toggle("has-silent", silent > 0);
    ns.strip.hidden = false;
  }
  // The header's count: replicas up / replicas listed, across scopes (a
  // replica that serves several scopes counts once: up only if up in all).
  function updateNsTotal() {
    const byId = new Map();
    let known = false;
    for (const s of scopes.values()) {
      if (!s.ns.known) continue;
      known = true;
      for (const [id, state] of s.ns.states) {
        const old = byId.get(id);
        if (!old || old === "up" || (old === "stopped" && state === "silent")) byId.set(id, state);
      }
    }
    let up = 0, silent = 0, stopped = 0;
    for (const st of byId.values()) {
      if (st === "up") up++;
      else if (st === "silent") silent++;
      else stopped++;
    }
    setText(ui.tNs, known ? up + "/" + byId.size : "—");
    const state = silent ? "silent" : stopped ? "stopped" : "up";
    if (ui.tNs.dataset.state !== state) ui.tNs.dataset.state = state;
    const tip = known ? `${up} up` + (stopped ? `, ${stopped} stopped` : "") + (silent ? `, ${silent} silent (no beat for 3 s)` : "") : "";
    if (ui.tNsBox.title !== tip) ui.tNsBox.title = tip;
  }

  // ---------- pools ----------
  const COLUMNS = [
    ["state", ""], ["pe_id", "PE"], ["transports", "transports"], ["load", "load"],
    ["params", "policy parameters"], ["meta", "meta"], ["age", "age"],
    ["lifetime-left", "lifetime left"], ["home", "home"],
  ];

  function ensurePool(s, name, policy) {
    const key = s.name + "/" + name;
    let p = pools.get(key);
    if (p) return p;
    const card = el("article", "pool");
    card.dataset.pool = key;
    card.dataset.size = "0";
    card.dataset.policy = policy || "";
    const head = el("div", "pool-head");
    const toggle = el("button", "toggle", "");
    toggle.type = "button";
    toggle.title = "show / hide the PE table";
    toggle.setAttribute("aria-expanded", "true");
    const title = el("div", "pool-title");
    const nameEl = el("h3", "pool-name", name);
    const policyEl = el("span", "policy", policy || "—");
    policyEl.title = "pool policy";
    const emptyTag = el("span", "empty-tag", "empty");
    title.append(nameEl, policyEl, emptyTag);
    const count = el("div", "pool-count");
    const countNum = el("span", "count-num", "0");
    const countUnit = el("span", "count-unit", "PEs");
    count.append(countNum, countUnit);
    const minis = el("div", "minis");
    const sizeChart = makeChart("pool-size", 150, 30, "size");
    const rateChart = makeChart("pool-rate", 150, 30, "rate");
    const sizeVal = el("span", "mini-value", "0");
    const rateVal = el("span", "mini-value", "0");
    const m1 = el("div", "mini");
    const m1t = el("div", "mini-text");
    m1t.append(el("span", "mini-label", "size"), sizeVal);
    m1.append(m1t, sizeChart.svg);
    const m2 = el("div", "mini");
    const m2t = el("div", "mini-text");
    m2t.append(el("span", "mini-label", "resolutions/s"), rateVal);
    m2.append(m2t, rateChart.svg);
    minis.append(m1, m2);
    head.append(toggle, title, count, minis);

    const wrap = el("div", "table-wrap");
    const table = el("table", "pes");
    table.setAttribute("role", "table"); // rows are CSS grids: keep the table semantics
    const thead = el("thead");
    const hr = el("tr");
    hr.setAttribute("role", "row");
    for (const [f, label] of COLUMNS) {
      const th = el("th", "c-" + f, label);
      th.scope = "col";
      th.setAttribute("role", "columnheader");
      if (f === "home") th.title = "home name server (● this replica)";
      if (f === "lifetime-left") th.title = "updated_at + lifetime_ms − now; the reason once removed";
      hr.append(th);
    }
    thead.append(hr);
    const tbody = el("tbody");
    table.append(thead, tbody);
    wrap.append(table);
    card.append(head, wrap);

    p = {
      key, name, scope: s, card, tbody, policyEl, countNum, countUnit,
      sizeChart, rateChart, sizeVal, rateVal, emptyTag,
      pes: new Map(), order: [], live: 0, baseRev: 0, policy: policy || "",
      emptyTimer: 0, collapsed: false,
    };
    toggle.addEventListener("click", () => {
      p.collapsed = !p.collapsed;
      card.classList.toggle("collapsed", p.collapsed);
      toggle.setAttribute("aria-expanded", String(!p.collapsed));
    });
    pools.set(key, p);
    s.pools.set(name, p);
    let before = null;
    for (const other of s.pools.values()) {
      if (other !== p && cmp(other.name, name) > 0 && (!before || cmp(other.name, before.name) < 0)) before = other;
    }
    s.list.insertBefore(card, before ? before.card : null);
    const hist = poolHist.get(key);
    if (hist) drawPoolCharts(p, hist);
    else drawPoolCharts(p, { size: [], rate: [] });
    updateScopeMeta(s);
    return p;
  }
  function setPolicy(p, policy) {
    if (!policy || policy === p.policy) return;
    p.policy = policy;
    p.card.dataset.policy = policy;
    p.policyEl.textContent = policy;
  }
  function setSize(p) {
    const n = String(p.live);
    if (p.card.dataset.size !== n) p.card.dataset.size = n;
    setText(p.countNum, fmtInt(p.live));
    setText(p.countUnit, p.live === 1 ? "PE" : "PEs");
    setText(p.sizeVal, fmtInt(p.live));
  }
  function drawPoolCharts(p, hist) {
    drawChart(p.sizeChart, hist.size, { label: "pool size", integer: true, step: true });
    drawChart(p.rateChart, hist.rate, { label: "resolutions/s" });
    setText(p.rateVal, fmtRate(hist.rate.length ? hist.rate[hist.rate.length - 1] : 0));
  }
  // checkEmpty starts (or cancels) the 10 s linger of a pool with no live PE.
  function checkEmpty(p) {
    const empty = p.live === 0;
    p.card.classList.toggle("is-empty", empty);
    if (empty && !p.emptyTimer) {
      p.emptyTimer = setTimeout(() => {
        p.emptyTimer = 0;
        if (p.live === 0 && pools.get(p.key) === p) {
          dropPool(p);
          updateTotals();
        }
      }, LINGER_MS);
    } else if (!empty && p.emptyTimer) {
      clearTimeout(p.emptyTimer);
      p.emptyTimer = 0;
    }
  }
  function dropPool(p) {
    if (p.emptyTimer) clearTimeout(p.emptyTimer);
    for (const pe of p.pes.values()) {
      if (pe.timer) clearTimeout(pe.timer);
      forget(pe);
    }
    p.card.remove();
    pools.delete(p.key);
    p.scope.pools.delete(p.name);
    updateScopeMeta(p.scope);
  }

  // ---------- PEs ----------
  // Which rows are on screen (near the viewport, not scrolled away inside
  // their pool's table, pool not collapsed): the tick favours those.
  const rowPE = new WeakMap(); // tr -> PE
  const onScreen = new Set();  // PEs whose row is (nearly) visible
  const rowObserver = typeof IntersectionObserver === "function"
    ? new IntersectionObserver((entries) => {
      const t = now();
      for (const e of entries) {
        const pe = rowPE.get(e.target);
        if (!pe) continue;
        if (e.isIntersecting) {
          onScreen.add(pe);
          if (pe.state === "live") refreshTimes(pe, t);
        } else {
          onScreen.delete(pe);
        }
      }
    }, { rootMargin: "150px 0px" })
    : null;
  function forget(pe) {
    if (rowObserver) rowObserver.unobserve(pe.tr);
    onScreen.delete(pe);
  }
  function makeRow(p, id) {
    const tr = el("tr");
    tr.setAttribute("role", "row");
    tr.dataset.pe = p.key + "/" + id;
    tr.dataset.state = "live";
    const cells = {};
    for (const [f] of COLUMNS) {
      const td = el("td", "c-" + f);
      td.setAttribute("role", "cell");
      td.dataset.field = f;
      tr.append(td);
      cells[f] = td;
    }
    // the state cell is a dot: green when live, red when removed
    cells.state.removeAttribute("data-field");
    cells.state.append(el("span", "pe-dot"));
    cells.pe_id.textContent = id;
    const bar = el("span", "bar");
    const fill = el("span", "fill");
    bar.append(fill);
    const pct = el("span", "pct");
    cells.load.append(bar, pct);
    return { tr, cells, fill, pct };
  }
  function insertSorted(p, pe) {
    const ord = p.order;
    let lo = 0, hi = ord.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cmp(ord[mid], pe.id) < 0) lo = mid + 1; else hi = mid;
    }
    ord.splice(lo, 0, pe.id);
    const next = lo + 1 < ord.length ? p.pes.get(ord[lo + 1]) : null;
    p.tbody.insertBefore(pe.tr, next ? next.tr : null);
  }
  function newPE(id, rec, rev, row) {
    const pe = { id, rec, rev, state: "live", reason: "", timer: 0, tr: row.tr, cells: row.cells, fill: row.fill, pct: row.pct };
    rowPE.set(row.tr, pe);
    if (rowObserver) rowObserver.observe(row.tr);
    return pe;
  }
  function dropPE(p, pe) {
    if (pe.timer) clearTimeout(pe.timer);
    forget(pe);
    pe.tr.remove();
    p.pes.delete(pe.id);
    const i = p.order.indexOf(pe.id);
    if (i >= 0) p.order.splice(i, 1);
    if (pe.state === "live") p.live--;
  }

  function fillTransports(td, list) {
    td.textContent = "";
    if (!Array.isArray(list) || list.length === 0) {
      td.append(el("span", "muted", "—"));
      return;
    }
    for (const t of list) {
      const line = el("div", "tp");
      line.append(el("span", "proto proto-" + String(t.proto || "?").replace(/[^a-z0-9]/gi, ""), t.proto || "?"));
      let where = t.subject || t.addr || "";
      if (!where) {
        const rest = Object.assign({}, t);
        delete rest.proto;
        where = Object.keys(rest).length ? JSON.stringify(rest) : "";
      }
      const w = el("span", "where mono", where);
      w.title = (t.proto || "?") + " " + where;
      line.append(w);
      td.append(line);
    }
  }
  function fillParams(td, pol) {
    td.textContent = "";
    const parts = [];
    if (pol) {
      for (const k of ["weight", "priority", "degradation", "load_increment"]) {
        const v = pol[k];
        if (typeof v === "number" && v !== 0) parts.push([k, v]);
      }
    }
    if (!parts.length) {
      td.append(el("span", "muted", "—"));
      return;
    }
    for (const [k, v] of parts) {
      const chip = el("span", "chip chip-" + k, k + "=" + fmtNum(v));
      chip.title = chip.textContent;
      td.append(chip);
    }
  }
  function fillMeta(td, meta) {
    td.textContent = "";
    const keys = meta && typeof meta === "object" ? Object.keys(meta).sort(cmp) : [];
    if (!keys.length) {
      td.append(el("span", "muted", "—"));
      return;
    }
    for (const k of keys) {
      const chip = el("span", "chip meta", k + "=" + meta[k]);
      chip.title = chip.textContent;
      td.append(chip);
    }
  }
  function fillRow(pe) {
    const r = pe.rec, c = pe.cells;
    fillTransports(c.transports, r.transports);
    const pol = r.policy || {};
    let load = typeof pol.load === "number" ? pol.load : 0;
    load = Math.min(1, Math.max(0, load));
    const pct = Math.round(load * 1000) / 10;
    pe.fill.style.width = pct + "%";
    pe.fill.className = "fill " + (load >= 0.8 ? "hi" : load >= 0.5 ? "mid" : "lo");
    pe.pct.textContent = (Number.isInteger(pct) ? pct : pct.toFixed(1)) + "%";
    fillParams(c.params, pol);
    fillMeta(c.meta, r.meta);
    const home = r.home_nameserver || "";
    c.home.textContent = home || "—";
    c.home.classList.toggle("self", replicaIDs.has(home));
    c.home.title = replicaIDs.has(home) ? home + " (this replica)" : home;
    const tip = [];
    if (r.registered_at) tip.push("registered " + r.registered_at);
    if (r.updated_at) tip.push("updated " + r.updated_at);
    if (r.last_seq) tip.push("last_seq " + r.last_seq);
    if (r.signer) tip.push("signer " + r.signer);
    if (r.conn) tip.push("conn " + (r.conn.server || "?") + " cid " + r.conn.cid);
    c.pe_id.title = tip.join("\n");
    pe.regAt = parseTime(r.registered_at);
    pe.updAt = parseTime(r.updated_at);
    pe.lifeMs = Number(r.lifetime_ms) || 0;
    pe.ageStr = pe.leftStr = pe.leftCls = null;
    refreshTimes(pe, now());
  }
  function refreshTimes(pe, t) {
    const c = pe.cells;
    const age = Number.isNaN(pe.regAt) ? "—" : fmtDur(t - pe.regAt);
    if (age !== pe.ageStr) { pe.ageStr = age; c.age.textContent = age; }
    let left = "—", cls = "";
    if (pe.state !== "live") {
      // a removed PE has no lifetime left: its cell shows why it went
      left = pe.reason || "removed";
      cls = "gone";
    } else if (!Number.isNaN(pe.updAt) && pe.lifeMs > 0) {
      const ms = pe.updAt + pe.lifeMs - t;
      left = fmtLeft(ms);
      cls = ms <= 0 ? "due" : ms < pe.lifeMs * 0.25 ? "low" : "";
    }
    if (left !== pe.leftStr) { pe.leftStr = left; c["lifetime-left"].textContent = left; }
    if (cls !== pe.leftCls) { pe.leftCls = cls; c["lifetime-left"].className = "c-lifetime-left " + cls; }
  }
  // flash marks a changed row for a moment: on, dimmed, off. Discrete
  // steps instead of a per-frame fade keep many changes cheap to paint.
  const flashing = new WeakMap(); // tr -> timers
  function flash(tr, kind) {
    const old = flashing.get(tr);
    if (old) { clearTimeout(old[0]); clearTimeout(old[1]); }
    tr.removeAttribute("data-fade");
    tr.dataset.flash = kind;
    flashing.set(tr, [
      setTimeout(() => tr.setAttribute("data-fade", ""), 900),
      setTimeout(() => { tr.removeAttribute("data-flash"); tr.removeAttribute("data-fade"); flashing.delete(tr); }, 1500),
    ]);
  }

  // putRecord makes the PE live with this record (add, update, snapshot).
  function putRecord(p, rec, rev, flashKind) {
    const id = String(rec.pe_id);
    let pe = p.pes.get(id);
    if (!pe) {
      const row = makeRow(p, id);
      pe = newPE(id, rec, 0, row);
      p.pes.set(id, pe);
      insertSorted(p, pe);
      p.live++;
    } else if (pe.state !== "live") {
      if (pe.timer) { clearTimeout(pe.timer); pe.timer = 0; }
      pe.state = "live";
      pe.tr.dataset.state = "live";
      pe.tr.removeAttribute("data-reason");
      pe.tr.classList.remove("removed");
      pe.cells.state.title = "";
      pe.reason = "";
      p.live++;
    }
    pe.rec = rec;
    if (typeof rev === "number") pe.rev = rev;
    fillRow(pe);
    if (flashKind) flash(pe.tr, flashKind);
    return pe;
  }
  function markRemoved(p, pe, reason, rev) {
    if (typeof rev === "number") pe.rev = rev;
    const why = reason || "removed";
    pe.reason = why;
    pe.tr.dataset.reason = why;
    pe.cells.state.title = "removed: " + why;
    if (pe.state === "live") {
      pe.state = "removed";
      pe.tr.dataset.state = "removed";
      pe.tr.classList.add("removed");
      p.live--;
      flash(pe.tr, "remove");
    }
    refreshTimes(pe, now());
    if (pe.timer) clearTimeout(pe.timer);
    pe.timer = setTimeout(() => {
      pe.timer = 0;
      if (pe.state === "removed" && p.pes.get(pe.id) === pe) {
        dropPE(p, pe);
        updateTotals();
      }
    }, LINGER_MS);
  }

  // ---------- totals and header ----------
  function updateTotals() {
    let nPools = 0, nPes = 0;
    for (const p of pools.values()) {
      if (p.live > 0) nPools++;
      nPes += p.live;
      setSize(p);
    }
    for (const s of scopes.values()) updateScopeMeta(s);
    setText(ui.tScopes, fmtInt(scopes.size));
    setText(ui.tPools, fmtInt(nPools));
    setText(ui.tPes, fmtInt(nPes));
    setText(ui.tRate, fmtRate(lastTotalRate));
  }
  function setReplica(r) {
    if (typeof r !== "string" || r === replica) return;
    replica = r;
    replicaIDs = new Set(r.split(",").map((x) => x.trim()).filter(Boolean));
    ui.replica.textContent = r || "—";
    for (const s of scopes.values()) for (const c of s.ns.cards.values()) setSelfTag(c);
    for (const p of pools.values()) {
      for (const pe of p.pes.values()) {
        const home = pe.rec.home_nameserver || "";
        pe.cells.home.classList.toggle("self", replicaIDs.has(home));
        pe.cells.home.title = replicaIDs.has(home) ? home + " (this replica)" : home;
      }
    }
  }

  // ---------- events ----------
  function onSnapshot(msg) {
    syncClock(msg);
    setReplica(msg.replica || "");
    const seenScopes = new Set(), seenPools = new Set();
    for (const sc of msg.scopes || []) {
      if (!sc || typeof sc.scope !== "string") continue;
      seenScopes.add(sc.scope);
      const s = ensureScope(sc.scope);
      for (const pl of sc.pools || []) {
        if (!pl || typeof pl.pool !== "string") continue;
        const p = ensurePool(s, pl.pool, pl.policy);
        seenPools.add(p.key);
        setPolicy(p, pl.policy);
        const base = Number(pl.revision) || 0;
        p.baseRev = base;
        const present = new Set();
        const elems = (pl.elements || []).filter((r) => r && r.pe_id !== undefined);
        const fresh = p.pes.size === 0;
        if (fresh) {
          // first fill of a pool: build all rows off-document, in order
          elems.sort((a, b) => cmp(String(a.pe_id), String(b.pe_id)));
          const frag = document.createDocumentFragment();
          for (const rec of elems) {
            const id = String(rec.pe_id);
            if (present.has(id)) continue;
            present.add(id);
            const row = makeRow(p, id);
            const pe = newPE(id, rec, base, row);
            p.pes.set(id, pe);
            p.order.push(id);
            p.live++;
            fillRow(pe);
            frag.append(pe.tr);
          }
          p.tbody.append(frag);
        } else {
          for (const rec of elems) {
            present.add(String(rec.pe_id));
            putRecord(p, rec, base, null);
          }
          for (const pe of [...p.pes.values()]) if (!present.has(pe.id)) dropPE(p, pe);
        }
        for (const pe of p.pes.values()) pe.rev = base;
        checkEmpty(p);
      }
    }
    for (const p of [...pools.values()]) if (!seenPools.has(p.key)) dropPool(p);
    for (const s of [...scopes.values()]) if (!seenScopes.has(s.name)) dropScope(s);
    // The snapshot's history (the last stats, oldest first) replaces the
    // charts' points, so a page opened late starts with filled charts.
    if (Array.isArray(msg.history)) {
      scopeHist.clear();
      poolHist.clear();
      lastTotalRate = 0;
      for (const h of msg.history.slice(-HISTORY)) if (h && typeof h === "object") recordStats(h, false);
      // the newest of them shows the replicas until the next stats
      const last = msg.history[msg.history.length - 1];
      if (last && typeof last === "object") applyAllNameServers(last);
    }
    redrawCharts();
    updateTotals();
  }

  function recordFromElement(c) {
    const e = c.element || {};
    return { pe_id: c.pe_id, pool: c.pool, transports: e.transports, policy: e.policy, meta: e.meta };
  }

  function onChange(msg) {
    syncClock(msg);
    const c = msg.change;
    if (!c || typeof c.scope !== "string" || typeof c.pool !== "string" || c.pe_id === undefined) return;
    const key = c.scope + "/" + c.pool;
    const id = String(c.pe_id);
    let p = pools.get(key);
    const pe = p ? p.pes.get(id) : undefined;
    const known = Math.max(p ? p.baseRev : 0, pe ? pe.rev : 0);
    const rev = typeof c.revision === "number" ? c.revision : undefined;
    if (rev !== undefined && rev > 0 && rev <= known) return; // already in the snapshot
    page.changes++;
    const op = c.op;
    if (op === "add" || op === "update") {
      const rec = msg.record && typeof msg.record === "object" ? msg.record : recordFromElement(c);
      if (rec.pe_id === undefined) rec.pe_id = id;
      if (!p) p = ensurePool(ensureScope(c.scope), c.pool, msg.policy || (rec.policy && rec.policy.name));
      setPolicy(p, msg.policy);
      putRecord(p, rec, rev, op);
      checkEmpty(p);
    } else if (op === "remove") {
      if (p) {
        if (pe) markRemoved(p, pe, c.reason, rev);
        setPolicy(p, msg.policy);
        checkEmpty(p);
      }
    }
    logChange(msg, c);
    updateTotals();
  }

  function logChange(msg, c) {
    const li = el("li", "change op-" + String(c.op || "").replace(/[^a-z]/g, ""));
    li.dataset.change = String(c.op || "");
    if (c.reason) li.dataset.reason = String(c.reason);
    const t = parseTime(msg.time);
    const time = el("time", "ch-time mono", Number.isNaN(t) ? "" : hms(t));
    if (msg.time) time.dateTime = String(msg.time);
    const opEl = el("span", "ch-op", c.op || "?");
    const where = el("span", "ch-where", c.scope + "/" + c.pool);
    const peEl = el("span", "ch-pe mono", String(c.pe_id));
    const reason = el("span", "ch-reason", c.reason || "");
    const line1 = el("div", "ch-line");
    line1.append(time, " ", opEl, " ", peEl);
    if (typeof c.revision === "number") line1.append(" ", el("span", "ch-rev muted", "rev " + c.revision));
    const line2 = el("div", "ch-line ch-sub");
    line2.append(where, " ", reason);
    li.append(line1, line2);
    ui.changes.insertBefore(li, ui.changes.firstChild);
    while (ui.changes.childElementCount > LOG_MAX) ui.changes.lastElementChild.remove();
    ui.changesEmpty.hidden = true;
  }

  // recordStats appends one stats message to the chart history. live: it is
  // this second's (shown scopes and pools it leaves out get a zero point, a
  // scope it names gets a section); else it is the snapshot's history.
  function recordStats(msg, live) {
    statsNo++;
    let total = 0;
    const seenScopes = new Set(), seenPools = new Set();
    for (const sc of msg.scopes || []) {
      if (!sc || typeof sc.scope !== "string") continue;
      const rate = Number(sc.resolutions_per_s) || 0;
      total += rate;
      seenScopes.add(sc.scope);
      let h = scopeHist.get(sc.scope);
      if (!h) scopeHist.set(sc.scope, (h = { rate: [], seen: 0 }));
      push(h.rate, rate);
      h.seen = statsNo;
      if (live) ensureScope(sc.scope);
      for (const pl of sc.pools || []) {
        if (!pl || typeof pl.pool !== "string") continue;
        const key = sc.scope + "/" + pl.pool;
        seenPools.add(key);
        let ph = poolHist.get(key);
        if (!ph) poolHist.set(key, (ph = { size: [], rate: [], seen: 0 }));
        const p = pools.get(key);
        const size = typeof pl.size === "number" ? pl.size : p ? p.live : 0;
        push(ph.size, size);
        push(ph.rate, Number(pl.resolutions_per_s) || 0);
        ph.seen = statsNo;
      }
    }
    lastTotalRate = total;
    if (!live) return;
    // Shown scopes and pools the stats left out had no traffic this second.
    for (const s of scopes.values()) {
      if (seenScopes.has(s.name)) continue;
      let h = scopeHist.get(s.name);
      if (!h) scopeHist.set(s.name, (h = { rate: [], seen: 0 }));
      push(h.rate, 0);
      h.seen = statsNo;
    }
    for (const p of pools.values()) {
      if (seenPools.has(p.key)) continue;
      let ph = poolHist.get(p.key);
      if (!ph) poolHist.set(p.key, (ph = { size: [], rate: [], seen: 0 }));
      push(ph.size, p.live);
      push(ph.rate, 0);
      ph.seen = statsNo;
    }
    // forget the history of what has been gone for a whole chart width
    for (const [k, h] of scopeHist) if (statsNo - h.seen > HISTORY && !scopes.has(k)) scopeHist.delete(k);
    for (const [k, h] of poolHist) if (statsNo - h.seen > HISTORY && !pools.has(k)) poolHist.delete(k);
  }

  function redrawCharts() {
    const none = { rate: [], size: [] };
    for (const s of scopes.values()) {
      const h = scopeHist.get(s.name) || none;
      drawChart(s.chart, h.rate, { label: "resolutions/s", maxLabel: true });
      setText(s.val, fmtRate(h.rate.length ? h.rate[h.rate.length - 1] : 0));
    }
    for (const p of pools.values()) drawPoolCharts(p, poolHist.get(p.key) || none);
  }

  function applyAllNameServers(msg) {
    for (const sc of msg.scopes || []) {
      if (!sc || typeof sc.scope !== "string") continue;
      const s = scopes.get(sc.scope);
      if (s) applyNameServers(s, sc);
    }
    updateNsTotal();
  }

  function onStats(msg) {
    syncClock(msg);
    page.stats++;
    recordStats(msg, true);
    applyAllNameServers(msg);
    // renewals move updated_at (and may change the lifetime)
    for (const r of msg.renewed || []) {
      if (!r) continue;
      const p = pools.get(r.scope + "/" + r.pool);
      const pe = p && p.pes.get(String(r.pe_id));
      if (!pe || pe.state !== "live") continue;
      if (r.updated_at) { pe.rec.updated_at = r.updated_at; pe.updAt = parseTime(r.updated_at); }
      if (typeof r.lifetime_ms === "number") { pe.rec.lifetime_ms = r.lifetime_ms; pe.lifeMs = r.lifetime_ms; }
      refreshTimes(pe, now());
    }
    redrawCharts();
    updateTotals();
  }

  // ---------- the 250 ms tick: clock, age, lifetime left ----------
  // Rows on screen count down every tick; the others (scrolled away in a big
  // pool, or in a collapsed one) are refreshed in turn, each every
  // SWEEP ticks, so their text never lags by more than two seconds while the
  // page does not re-lay out hundreds of unseen rows four times a second.
  const SWEEP = 8;
  let tickNo = 0;
  function tick() {
    const t = now();
    setText(ui.clock, hms(t) + " UTC");
    if (document.hidden) return;
    for (const s of scopes.values()) for (const c of s.ns.cards.values()) refreshNsTime(c, t);
    const phase = tickNo++ % SWEEP;
    for (const p of pools.values()) {
      let i = 0;
      for (const pe of p.pes.values()) {
        if (pe.state === "live" && (!rowObserver || onScreen.has(pe) || i % SWEEP === phase)) refreshTimes(pe, t);
        i++;
      }
    }
  }
  setInterval(tick, TICK_MS);

  // ---------- connection ----------
  let es = null, retry = 1000;
  function setState(open) {
    ui.status.dataset.state = open ? "open" : "closed";
    ui.status.textContent = open ? "live" : "reconnecting";
    document.body.classList.toggle("offline", !open);
  }
  function handler(fn) {
    return (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (err) {
        console.warn("rsp page: undecodable event", ev.type, err);
        return;
      }
      try { fn(msg || {}); } catch (err) {
        console.error("rsp page: event", ev.type, err);
      }
    };
  }
  function connect() {
    if (es) es.close();
    es = new EventSource("api/stream");
    es.addEventListener("open", () => { retry = 1000; setState(true); });
    es.addEventListener("error", () => {
      setState(false);
      // EventSource retries by itself unless the server refused the stream
      // (CLOSED): then open a new one after a growing pause.
      if (es.readyState === EventSource.CLOSED) {
        const wait = retry;
        retry = Math.min(retry * 2, 15000);
        setTimeout(connect, wait);
      }
    });
    es.addEventListener("snapshot", handler(onSnapshot));
    es.addEventListener("change", handler(onChange));
    es.addEventListener("stats", handler(onStats));
  }
  setState(false);
  tick();
  connect();
})();

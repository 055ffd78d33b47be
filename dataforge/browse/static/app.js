// dataforge browse: the page. Plain JavaScript, no build step. The URL's query string holds the
// whole view (filters, page, open sample, compare), so a copied address opens the same view.
"use strict";

const FACET_TITLES = {kind: "Kind", status: "Kept or dropped", stage: "Drop stage", reason: "Drop reason",
  topic: "Topic", audience: "Audience", style: "Style", source: "Source", label: "Label"};
const NONE = "(none)";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmt = (n) => (n ?? 0).toLocaleString("en-US");
const num = (x) => (typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(3)) : esc(x));

let info = null;          // /api/info
let page = null;          // the current /api/samples answer
let selected = -1;        // index of the selected row in page.rows
let detail = null;        // the open sample's /api/sample answer
let pending = 0;          // requests in flight (for the "loading" state)

// --- the URL is the state ---------------------------------------------------------------------
function params() { return new URLSearchParams(location.search); }
function setParams(p, push = true) {
  const url = location.pathname + (p.toString() ? "?" + p.toString() : "");
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}
function filterParams(p) {  // the filter part only: what the API takes
  const out = new URLSearchParams();
  for (const [k, v] of p) if (k === "q" || k in FACET_TITLES || (info && k in info.scores)) out.append(k, v);
  return out;
}
function offset() { return Math.max(0, parseInt(params().get("offset") || "0", 10) || 0); }

async function api(path, options) {
  pending++; status();
  try {
    const t0 = performance.now();
    const r = await fetch(path, options);
    const body = await r.json().catch(() => ({error: `${r.status} ${r.statusText}`}));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    body._ms = Math.round(performance.now() - t0);
    return body;
  } finally { pending--; status(); }
}

let lastTiming = "";
function status(text) {
  if (text !== undefined) lastTiming = text;
  $("status").textContent = (pending ? "loading… " : "") + lastTiming;
}
function banner(message) {
  const b = $("banner");
  if (!message) { b.hidden = true; return; }
  b.innerHTML = `${esc(message)} <button type="button" id="retry">Retry</button>`;
  b.hidden = false;
  $("retry").onclick = () => { banner(); refresh(); };
}
function toast(text) {
  const t = $("toast"); t.textContent = text; t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 1600);
}

// --- list and facets --------------------------------------------------------------------------
async function refresh(keepSelection) {
  const p = params();
  if (p.get("view") === "compare") return showCompare();
  showList();
  $("search").value = p.get("q") || "";
  const f = filterParams(p);
  const qs = f.toString();
  try {
    const [list, facets] = await Promise.all([
      api(`/api/samples?${qs}${qs ? "&" : ""}offset=${offset()}&limit=${info.page_size}`),
      api(`/api/facets?${qs}`)]);
    banner();
    page = list;
    renderFacets(facets, p);
    renderChips(p);
    renderList(keepSelection);
    status(`list ${list._ms} ms · facets ${facets._ms} ms`);
  } catch (e) {
    banner(`Could not load the samples: ${e.message}`);
    page = {rows: [], total: 0, offset: 0, limit: info.page_size};
    renderList();
  }
  const sid = p.get("sample");
  if (sid && (!detail || detail.id !== sid)) openSample(sid, false);
  if (!sid) { detail = null; $("detail").innerHTML = `<div class="empty">Select a sample (j / k, or click one) to see its whole story.</div>`; }
  document.body.dataset.loads = String((+document.body.dataset.loads || 0) + 1);  // for tests and scripts
}

function toggle(name, value) {
  const p = params();
  const vals = p.getAll(name);
  p.delete(name);
  for (const v of vals) if (v !== value) p.append(name, v);
  if (!vals.includes(value)) p.append(name, value);
  p.delete("offset"); p.delete("sample");
  setParams(p); refresh();
}

function renderFacets(data, p) {
  const box = $("facets");
  let html = "";
  for (const name of Object.keys(FACET_TITLES)) {
    const vals = data.facets[name];
    if (!vals || !vals.length) continue;
    if (name !== "label" && vals.length === 1 && vals[0].value === NONE && !p.getAll(name).length) continue;
    const on = new Set(p.getAll(name));
    html += `<div class="facet" data-facet="${name}"><h3>${FACET_TITLES[name]}</h3><ul>`;
    for (const v of vals) {
      html += `<li class="${on.has(v.value) ? "on" : ""}${v.count ? "" : " zero"}" data-facet="${name}" data-value="${esc(v.value)}"
        title="${esc(v.value)}"><span class="v">${esc(v.value)}</span><span class="n">${fmt(v.count)}</span></li>`;
    }
    html += `</ul></div>`;
  }
  for (const [name, h] of Object.entries(data.scores || {})) {
    if (!h.bins.some((c) => c) && !p.get(name)) continue;  // no row under these filters has this score
    const [lo, hi] = (p.get(name) || ":").split(":");
    const max = Math.max(1, ...h.bins);
    const width = (h.hi - h.lo) / h.bins.length;
    const bars = h.bins.map((c, i) => {
      const a = h.lo + i * width, b = a + width;
      const inside = (lo === "" || b > parseFloat(lo)) && (hi === "" || a < parseFloat(hi));
      return `<div class="${(lo || hi) && inside ? "in" : ""}" style="height:${Math.max(1, Math.round(34 * c / max))}px"
        data-lo="${a.toFixed(3)}" data-hi="${b.toFixed(3)}" title="${a.toFixed(3)} – ${b.toFixed(3)}: ${fmt(c)}"></div>`;
    }).join("");
    html += `<div class="facet" data-score="${name}"><h3>${esc(name)}</h3><div class="hist" data-score="${name}">${bars}</div>
      <div class="range"><input data-score="${name}" data-side="lo" value="${esc(lo || "")}" placeholder="${h.lo.toFixed(2)}" aria-label="${name} from">
      – <input data-score="${name}" data-side="hi" value="${esc(hi || "")}" placeholder="${h.hi.toFixed(2)}" aria-label="${name} to">
      ${lo || hi ? `<button type="button" data-clear-score="${name}">clear</button>` : ""}</div>
      ${h.missing ? `<div class="more">${fmt(h.missing)} without a score</div>` : ""}</div>`;
  }
  box.innerHTML = html;
}

function setRange(name, lo, hi) {
  const p = params();
  if (lo === "" && hi === "") p.delete(name); else p.set(name, `${lo}:${hi}`);
  p.delete("offset"); p.delete("sample");
  setParams(p); refresh();
}

function renderChips(p) {
  const chips = [];
  if (p.get("q")) chips.push(`<span class="chip" data-chip="q" title="Remove the search">“${esc(p.get("q"))}”</span>`);
  for (const name of Object.keys(FACET_TITLES)) for (const v of p.getAll(name))
    chips.push(`<span class="chip" data-chip="${name}" data-value="${esc(v)}">${FACET_TITLES[name].toLowerCase()}: ${esc(v)}</span>`);
  for (const name of Object.keys(info.scores)) if (p.get(name))
    chips.push(`<span class="chip" data-chip="${name}">${esc(name)} ${esc(p.get(name).replace(":", " – "))}</span>`);
  if (chips.length > 1) chips.push(`<span class="chip clear" data-chip="*">clear all</span>`);
  $("chips").innerHTML = chips.join("");
}

function renderList(keepSelection) {
  const ol = $("list");
  const rows = page.rows;
  const start = page.offset;
  $("count").textContent = page.total ? `${fmt(start + 1)}–${fmt(start + rows.length)} of ${fmt(page.total)}` : "0 samples";
  $("prev").disabled = start === 0;
  $("next").disabled = start + rows.length >= page.total;
  ol.innerHTML = rows.map((r, i) => {
    const scores = Object.entries(r.scores).slice(0, 2).map(([k, v]) => `<span class="score" title="${esc(k)}">${esc(k.replace(/_score$/, ""))} ${num(v)}</span>`).join(" ");
    return `<li data-i="${i}" data-id="${esc(r.id)}" class="${r.id === params().get("sample") ? "sel" : ""}">
      <div class="meta"><span class="pos">${fmt(r.pos)}</span><span class="badge kind">${esc(r.kind)}</span>
      <span class="badge ${r.status}">${r.status === "kept" ? "kept" : "dropped · " + esc(r.stage)}</span>
      ${r.reason ? `<span class="reason" title="${esc(r.drop_reason)}">${esc(r.reason)}</span>` : ""}
      ${r.label ? `<span class="badge ${r.label}">${r.label}</span>` : ""}
      ${r.topic ? `<span>${esc(r.topic)}</span>` : ""}${r.source ? `<span>${esc(r.source)}</span>` : ""} ${scores}</div>
      <div class="snippet">${esc(r.snippet)}</div></li>`;
  }).join("");
  const empty = $("list-empty");
  if (!rows.length) {
    const filtered = filterParams(params()).toString() !== "";
    empty.innerHTML = filtered ? `No sample matches these filters.<br><button type="button" id="clear-all">Clear the filters</button>`
      : page.total === 0 ? "This run has no samples yet (no stage has committed)." : "Past the last page.";
    empty.hidden = false;
    const b = $("clear-all"); if (b) b.onclick = () => clearAll();
  } else empty.hidden = true;
  const sid = params().get("sample");
  selected = sid ? rows.findIndex((r) => r.id === sid) : (keepSelection === "first" ? 0 : keepSelection === "last" ? rows.length - 1 : -1);
  if ((keepSelection === "first" || keepSelection === "last") && rows.length) select(selected);
}

function clearAll() {
  const p = new URLSearchParams();
  setParams(p); refresh();
}

function select(i) {
  if (!page || i < 0 || i >= page.rows.length) return;
  selected = i;
  for (const li of $("list").children) li.classList.toggle("sel", +li.dataset.i === i);
  const li = $("list").children[i];
  if (li) li.scrollIntoView({block: "nearest"});
  const p = params(); p.set("sample", page.rows[i].id); setParams(p, false);
  openSample(page.rows[i].id, false);
}

async function move(step) {
  if (!page) return;
  const next = selected + step;
  if (next >= 0 && next < page.rows.length) return select(next);
  if (step > 0 && page.offset + page.rows.length < page.total) return goPage(page.offset + page.limit, "first");
  if (step < 0 && page.offset > 0) return goPage(Math.max(0, page.offset - page.limit), "last");
}

function goPage(off, sel) {
  const p = params(); p.set("offset", String(off)); if (!off) p.delete("offset"); p.delete("sample");
  setParams(p); detail = null; refresh(sel);
}

// --- one sample -------------------------------------------------------------------------------
let openSeq = 0;
async function openSample(id, push) {
  const seq = ++openSeq;
  $("detail").innerHTML = `<div class="empty">Loading ${esc(id)}…</div>`;
  try {
    const d = await api(`/api/sample/${encodeURIComponent(id)}`);
    if (seq !== openSeq) return;
    detail = d;
    if (push) { const p = params(); p.set("sample", id); setParams(p); }
    renderDetail(d);
  } catch (e) {
    if (seq !== openSeq) return;
    detail = null;
    $("detail").innerHTML = `<div class="empty">Could not open sample ${esc(id)}: ${esc(e.message)}</div>`;
  }
}

function card(title, body, cls = "") { return `<div class="card ${cls}"><h3>${title}</h3><div class="body">${body}</div></div>`; }
function kv(obj) {
  return `<table class="kv">${Object.entries(obj).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${
    typeof v === "object" && v !== null ? esc(JSON.stringify(v, null, 1)) : num(v)}</td></tr>`).join("")}</table>`;
}
function sampleLink(id, text) { return `<span class="link" data-open="${esc(id)}">${esc(text || id.slice(0, 12))}</span>`; }
function messages(list) {
  return list.map((m) => `<div class="msg"><div class="role">${esc(m.role)}</div><pre class="text">${esc(m.content)}</pre></div>`).join("");
}

function renderDetail(d) {
  const lab = d.label ? d.label.label : null;
  let html = `<div class="d-head"><span class="badge kind">${esc(d.kind)}</span>
    <span class="badge ${d.status}">${d.status === "kept" ? "kept" : "dropped · " + esc(d.drop_stage)}</span>
    <h2 title="sample id">${esc(d.id)}</h2>
    <div class="labels"><button type="button" class="good ${lab === "good" ? "on" : ""}" data-label="good" title="good (+ or 1)">+ good</button>
    <button type="button" class="bad ${lab === "bad" ? "on" : ""}" data-label="bad" title="bad (- or 0)">− bad</button>
    ${lab ? `<button type="button" data-label="clear" title="take the label back (u)">clear</button>` : ""}</div></div>`;
  html += card("Path through the stages", `<div class="path">${d.path.map((s, i) =>
    `${i ? '<span class="arrow">→</span>' : ""}<span class="step ${s.status.replace(" ", "-")}" title="${esc(s.kind)}: ${esc(s.status)}">${esc(s.stage)}</span>`).join("")}</div>`);
  if (d.status === "dropped") {
    html += card(`Why it was dropped: ${esc(d.drop_stage)}`, `<code>${esc(d.drop_reason)}</code>`, "why");
  }
  if (d.copies.length > 1) html += card("Rows with this id", `<p class="note">Identical content has one id: ${d.copies.length} rows of this run share it.</p>
    <table class="grid">${d.copies.map((c) => `<tr><td>${esc(c.status)}</td><td>${esc(c.drop_stage || "")}</td><td><code>${esc(c.drop_reason || "")}</code></td></tr>`).join("")}</table>`);
  html += card(d.messages ? "Messages" : "Text", d.messages ? messages(d.messages) : `<pre class="text">${esc(d.text)}</pre>`);
  if (d.dedup) html += card("Dedup cluster", dedupHtml(d));
  if (d.decontam) html += card("Decontamination", decontamHtml(d.decontam), d.decontam.matched ? "why" : "");
  if (d.cot) html += card("Chain of thought: votes and the other samples of the question", cotHtml(d));
  if (Object.keys(d.seed).length) html += card("Seed and source", kv(d.seed));
  html += card("Teacher request and response", teacherHtml(d.teacher));
  html += card("Columns by stage", d.groups.map((g, i) => `<details class="group" ${i < 2 ? "open" : ""}><summary>${esc(g.group)}
    (${Object.keys(g.columns).length})</summary>${kv(g.columns)}</details>`).join("") +
    (d.left_out.length ? `<p class="note">Not shown: ${d.left_out.map(esc).join(", ")} (embeddings).</p>` : ""));
  if (d.label_history.length) html += card("Labels", `<table class="grid"><tr><th>label</th><th>by</th><th>at</th></tr>${
    d.label_history.map((e) => `<tr><td>${esc(e.label)}</td><td>${esc(e.user)}</td><td>${esc(e.labelled_at)}</td></tr>`).join("")}</table>`);
  $("detail").innerHTML = html;
  $("detail").scrollTop = 0;
  document.body.dataset.sample = d.id;
}

function teacherHtml(t) {
  if (t.status !== "ok") return `<p class="note">${esc(t.message)}</p>${t.request_hash ? `<p class="note">request_hash <code>${esc(t.request_hash)}</code></p>` : ""}`;
  const req = t.request || {};
  const params_ = req.params || {};
  return `<table class="kv"><tr><td>model</td><td>${esc(req.model)}</td></tr>
    <tr><td>parameters</td><td>${esc(JSON.stringify(params_))}</td></tr>
    <tr><td>request_hash</td><td><code>${esc(t.request_hash)}</code> (<code>dataforge teacher show ${esc(t.request_hash.slice(0, 12))}</code>)</td></tr>
    <tr><td>answered</td><td>${esc(t.cached_at)} · ${esc(t.finish_reason || "")} · ${esc(JSON.stringify(t.usage || {}))}</td></tr></table>
    <h4>Request</h4>${messages(req.messages || [])}<h4>Response</h4><pre class="text">${esc(t.reply ?? JSON.stringify(t.response, null, 1))}</pre>`;
}

function dedupHtml(d) {
  const x = d.dedup;
  let html = `<table class="kv"><tr><td>cluster (survivor)</td><td>${x.is_survivor ? "this sample survived" : sampleLink(x.cluster, x.cluster)}</td></tr>
    <tr><td>size</td><td>${num(x.size)}</td></tr><tr><td>similarity</td><td>${num(x.similarity)}</td></tr></table>`;
  if (x.diff) {
    let left = "", right = "";
    for (const s of x.diff) {
      if (s.op === "equal") { left += esc(s.a); right += esc(s.b); }
      else { if (s.a) left += `<del>${esc(s.a)}</del>`; if (s.b) right += `<ins>${esc(s.b)}</ins>`; }
    }
    html += `<div class="diff"><div><h4>this sample (${esc(d.status)})</h4><pre>${left}</pre></div>
      <div><h4>survivor ${sampleLink(x.cluster, x.cluster.slice(0, 12))} (${esc(x.survivor.status)})</h4><pre>${right}</pre></div></div>`;
  } else if (!x.is_survivor) html += `<p class="note">The survivor ${esc(x.cluster)} is not among this run's samples.</p>`;
  if (x.members.length) html += `<h4>Other members</h4><table class="grid">${x.members.map((m) =>
    `<tr><td>${sampleLink(m.id)}</td><td>${esc(m.status)}</td><td><code>${esc(m.drop_reason || "")}</code></td></tr>`).join("")}</table>`;
  return html;
}

function decontamHtml(c) {
  if (!c.matched) return `<p class="note">No benchmark item matched: the best candidate covered ${num(c.max_fraction)} of its words.</p>`;
  const segs = (list) => list.map((s) => s.match ? `<mark>${esc(s.text)}</mark>` : esc(s.text)).join(" ");
  return `<table class="kv"><tr><td>benchmark item</td><td>${esc(c.benchmark)} #${esc(c.item)}</td></tr>
    <tr><td>matched share</td><td>${num(c.fraction)}</td></tr></table>
    <div class="diff"><div><h4>benchmark excerpt</h4><pre>${segs(c.match.excerpt)}</pre></div>
    <div><h4>this sample</h4><pre>${c.match.cut_before ? "… " : ""}${segs(c.match.sample)}${c.match.cut_after ? " …" : ""}</pre></div></div>`;
}

function cotHtml(d) {
  const c = d.cot;
  const ok = c.answer_correct === true ? `<span class="ok">correct</span>` : c.answer_correct === false ? `<span class="no">wrong</span>` : "";
  return `<table class="kv"><tr><td>answer</td><td>${esc(c.answer)} ${ok} (gold ${esc(c.gold_answer)})</td></tr>
    <tr><td>votes</td><td>${num(c.votes)} · agreement ${num(c.agreement)}</td></tr>
    <tr><td>answers</td><td>${c.answers.map(([a, n]) => `${esc(a)} ×${n}`).join(", ")}</td></tr></table>
    <table class="grid"><tr><th>#</th><th>answer</th><th>correct</th><th class="num">votes</th><th>fate</th></tr>${
    c.samples.map((s) => `<tr class="${s.id === d.id ? "me" : ""}"><td>${sampleLink(s.id, String(s.sample_index ?? "?"))}</td>
    <td>${esc(s.answer)}</td><td>${s.answer_correct ? "✓" : "✗"}</td><td class="num">${num(s.votes)}</td>
    <td>${s._status === "kept" ? "kept" : `<code>${esc(s.drop_stage)}: ${esc(s.drop_reason)}</code>`}</td></tr>`).join("")}</table>`;
}

async function label(value) {
  if (!detail) return toast("Open a sample first (j / k)");
  try {
    const r = await api("/api/label", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({id: detail.id, label: value})});
    toast(value === "clear" ? "label cleared" : `labelled ${value}`);
    document.body.dataset.labelled = `${detail.id}:${value}`;
    detail.label = r.label ? {label: r.label, user: r.user, labelled_at: r.labelled_at} : null;
    detail.label_history.push({label: value, user: r.user, labelled_at: r.labelled_at});
    renderDetail(detail);
    if (page) for (const row of page.rows) if (row.id === detail.id) row.label = r.label;
    const li = [...$("list").children].find((x) => x.dataset.id === detail.id);
    if (li) {
      const meta = li.querySelector(".meta");
      meta.querySelectorAll(".badge.good, .badge.bad").forEach((b) => b.remove());
      if (r.label) meta.insertAdjacentHTML("beforeend", `<span class="badge ${r.label}">${r.label}</span>`);
    }
  } catch (e) { banner(`Could not write the label: ${e.message}`); }
}

// --- two runs side by side --------------------------------------------------------------------
function showList() { $("list-view").hidden = false; $("compare-view").hidden = true; $("view-list").classList.add("on"); $("view-compare").classList.remove("on"); }
async function showCompare() {
  $("list-view").hidden = true; $("compare-view").hidden = false;
  $("view-compare").classList.add("on"); $("view-list").classList.remove("on");
  $("compare-a").textContent = info.run_id;
  const others = info.runs.filter((r) => r !== info.run_id);
  const sel = $("compare-b");
  const want = params().get("other") || others[others.length - 1] || "";
  sel.innerHTML = others.length ? others.map((r) => `<option ${r === want ? "selected" : ""}>${esc(r)}</option>`).join("")
    : `<option value="">(no other run under this data root)</option>`;
  if (!want) { $("compare-body").innerHTML = `<div class="empty">There is no other run to compare with.</div>`; return; }
  $("compare-body").innerHTML = `<div class="empty">Loading…</div>`;
  try {
    const c = await api(`/api/compare?other=${encodeURIComponent(want)}`);
    banner();
    $("compare-body").innerHTML = compareHtml(c);
  } catch (e) { $("compare-body").innerHTML = ""; banner(`Could not compare: ${e.message}`); }
}

function compareHtml(c) {
  const [a, b] = c.sides;
  const top = Math.max(1, ...c.sides.flatMap((s) => s.funnel.map((f) => f.rows_in || 0)));
  const funnel = (s) => `<div><h3>${esc(s.run_id)} <span class="note">${esc(s.status)} · ${esc(s.created_at)}</span></h3>
    <table class="grid"><tr><th>stage</th><th class="num">in</th><th class="num">kept</th><th class="num">dropped</th><th class="num">kept %</th><th></th></tr>${
    s.funnel.map((f) => `<tr><td>${esc(f.stage)}</td><td class="num">${fmt(f.rows_in)}</td><td class="num">${fmt(f.rows_kept)}</td>
      <td class="num">${fmt(f.rows_dropped)}</td><td class="num">${f.kept_pct ?? ""}</td>
      <td><span class="bar" style="width:${Math.round(120 * (f.rows_kept || 0) / top)}px"></span><span class="bar drop" style="width:${Math.round(120 * (f.rows_dropped || 0) / top)}px"></span></td></tr>`).join("")}</table></div>`;
  const reasons = `<h3>Drop reasons</h3><table class="grid"><tr><th>stage</th><th>reason</th><th class="num">${esc(a.run_id)}</th>
    <th class="num">${esc(b.run_id)}</th><th class="num">change</th></tr>${c.reasons.map((r) => {
      const d = r.b - r.a;
      return `<tr><td>${esc(r.stage)}</td><td><code>${esc(r.reason)}</code></td><td class="num">${fmt(r.a)}</td><td class="num">${fmt(r.b)}</td>
        <td class="num delta ${d > 0 ? "up" : d < 0 ? "down" : ""}">${d > 0 ? "+" : ""}${fmt(d)}</td></tr>`;
    }).join("") || `<tr><td colspan="5" class="note">Neither run dropped a row.</td></tr>`}</table>`;
  return `<div class="cmp">${funnel(a)}${funnel(b)}</div>${reasons}`;
}

// --- events -----------------------------------------------------------------------------------
function wire() {
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const p = params(); const q = $("search").value.trim();
    if (q) p.set("q", q); else p.delete("q");
    p.delete("offset"); p.delete("sample"); p.delete("view");
    setParams(p); $("search").blur(); refresh();
  });
  $("facets").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-facet]");
    if (li) return toggle(li.dataset.facet, li.dataset.value);
    const bar = e.target.closest(".hist div");
    if (bar) return setRange(bar.parentElement.dataset.score, bar.dataset.lo, bar.dataset.hi);
    const clear = e.target.closest("[data-clear-score]");
    if (clear) return setRange(clear.dataset.clearScore, "", "");
  });
  $("facets").addEventListener("change", (e) => {
    const inp = e.target.closest("input[data-score]");
    if (!inp) return;
    const name = inp.dataset.score;
    const lo = $("facets").querySelector(`input[data-score="${name}"][data-side="lo"]`).value.trim();
    const hi = $("facets").querySelector(`input[data-score="${name}"][data-side="hi"]`).value.trim();
    setRange(name, lo, hi);
  });
  $("chips").addEventListener("click", (e) => {
    const c = e.target.closest("[data-chip]"); if (!c) return;
    if (c.dataset.chip === "*") return clearAll();
    if (c.dataset.value !== undefined) return toggle(c.dataset.chip, c.dataset.value);
    const p = params(); p.delete(c.dataset.chip); p.delete("offset"); setParams(p); refresh();
  });
  $("list").addEventListener("click", (e) => { const li = e.target.closest("li[data-i]"); if (li) select(+li.dataset.i); });
  $("detail").addEventListener("click", (e) => {
    const b = e.target.closest("[data-label]"); if (b) return label(b.dataset.label);
    const o = e.target.closest("[data-open]"); if (o) { openSample(o.dataset.open, true); }
  });
  $("prev").onclick = () => goPage(Math.max(0, page.offset - page.limit));
  $("next").onclick = () => goPage(page.offset + page.limit);
  $("view-list").onclick = () => { const p = params(); p.delete("view"); p.delete("other"); setParams(p); refresh(); };
  $("view-compare").onclick = () => { const p = params(); p.set("view", "compare"); setParams(p); refresh(); };
  $("compare-b").onchange = () => { const p = params(); p.set("other", $("compare-b").value); setParams(p); refresh(); };
  $("help-button").onclick = () => { $("help").hidden = false; };
  $("help").onclick = () => { $("help").hidden = true; };
  window.addEventListener("popstate", () => { detail = null; refresh(); });
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = e.target.matches("input, select, textarea");
    if (e.key === "Escape") { if (typing) e.target.blur(); $("help").hidden = true; return; }
    if (typing) return;
    const compare = params().get("view") === "compare";
    const keys = {
      "j": () => move(1), "k": () => move(-1), "/": () => { $("search").focus(); $("search").select(); },
      "g": () => (page && page.offset ? goPage(0, "first") : select(0)),
      "+": () => label("good"), "1": () => label("good"), "-": () => label("bad"), "0": () => label("bad"),
      "u": () => label("clear"), "]": () => page && !$("next").disabled && goPage(page.offset + page.limit),
      "[": () => page && page.offset && goPage(Math.max(0, page.offset - page.limit)),
      "c": () => (compare ? $("view-list") : $("view-compare")).click(), "?": () => { $("help").hidden = !$("help").hidden; },
    };
    const fn = keys[e.key];
    if (fn && (!compare || "c?".includes(e.key))) { e.preventDefault(); fn(); }
  });
}

async function start() {
  wire();
  try {
    info = await api("/api/info");
  } catch (e) { banner(`The browser's server did not answer: ${e.message}`); return; }
  document.title = `${info.run_id} · dataforge browse`;
  $("run").innerHTML = `run <b>${esc(info.run_id)}</b> · ${fmt(info.rows)} samples, ${fmt(info.kept)} kept · ${esc(info.user)}`;
  $("run").title = `stages: ${info.stages.join(", ")}; teacher cache: ${info.teacher_cache}`;
  await refresh();
  document.body.dataset.ready = "1";
}
start();

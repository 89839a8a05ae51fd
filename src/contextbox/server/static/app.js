// contextbox visualizer: start a run, follow its events live (Server-Sent Events), replay past runs.
// Plain JS, no dependencies. Every piece of run data is inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 25;
const S = {
  runId: null, lastSeq: -1, es: null, events: [], live: false, replaying: null,
  ctxChars: 0, docs: [], reads: [], lastRead: [], cards: {}, actions: {}, openAction: {}, nodes: {},
  usage: {}, calls: 0, startTs: null, offset: 0, total: 0, samples: [],
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
const fmt = (n) => (n || 0).toLocaleString("en-US");
// a cost of null is unknown (a model with no known price), never shown as $0
const money = (n) => (n === null ? "unknown" : "$" + (n || 0).toFixed(4));
const short = (s, n) => (s && s.length > n ? s.slice(0, n) + "…" : s || "");

function showError(msg) {
  const b = $("errbar");
  b.textContent = msg || "";
  b.hidden = !msg;
}

async function api(path, opts = {}) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts));
  if (r.status === 401) {
    $("authbar").hidden = false;
    throw new Error("authentication required");
  }
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try {
      const j = await r.json();
      msg = typeof j.detail === "string" ? j.detail : (j.error && j.error.message) || JSON.stringify(j.detail || j);
    } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

// ------------------------------------------------------------------ samples and the form
async function loadSamples() {
  const sel = $("sample");
  const r = await api("/samples");
  S.samples = (await r.json()).samples;
  sel.textContent = "";
  for (const s of S.samples) {
    const o = el("option", null, s.title + (s.chars ? ` — ${fmt(s.chars)} chars` : "") + (s.available ? "" : " (not on this server)"));
    o.value = s.name;
    o.disabled = !s.available;
    sel.appendChild(o);
  }
  const up = el("option", null, "Upload a file…");
  up.value = "__upload";
  sel.appendChild(up);
  const first = S.samples.find((s) => s.available);
  if (first) sel.value = first.name;
  onSample();
}

function onSample() {
  const v = $("sample").value;
  $("uploadlabel").hidden = v !== "__upload";
  const s = S.samples.find((x) => x.name === v);
  if (s) $("question").value = s.question;
}

async function startRun(e) {
  e.preventDefault();
  showError("");
  const levels = [...document.querySelectorAll("#levels input:checked")].map((i) => i.value).join(",");
  const limits = { max_iterations: parseInt($("maxit").value, 10) || 20 };
  const common = { question: $("question").value, model: $("model").value.trim() || null,
    sub_model: $("submodel").value.trim() || null, levels: levels || null };
  let opts;
  if ($("sample").value === "__upload") {
    const f = $("file").files[0];
    if (!f) { showError("choose a file to upload"); return; }
    const fd = new FormData();
    for (const [k, v] of Object.entries(common)) if (v) fd.append(k, v);
    fd.append("limits", JSON.stringify(limits));
    fd.append("file", f);
    opts = { method: "POST", body: fd };
  } else {
    opts = { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ sample: $("sample").value, limits }, common)) };
  }
  $("start").disabled = true;
  try {
    const r = await api("/v1/runs", opts);
    const { id } = await r.json();
    location.hash = "run=" + encodeURIComponent(id);
    await openRun(id);
    loadRuns(0);
  } catch (err) {
    showError("could not start the run: " + err.message);
  } finally {
    $("start").disabled = false;
  }
}

// ------------------------------------------------------------------ the run list
async function loadRuns(offset) {
  if (offset !== undefined) S.offset = Math.max(0, offset);
  let j;
  try {
    j = await (await api(`/v1/runs?limit=${PAGE}&offset=${S.offset}`)).json();
  } catch (err) {
    return;
  }
  S.total = j.total;
  const ul = $("runs");
  ul.textContent = "";
  for (const r of j.runs) {
    const li = el("li");
    li.dataset.id = r.run_id;
    if (r.run_id === S.runId) li.classList.add("sel");
    const top = el("div", "row");
    top.appendChild(el("span", "badge " + r.status, r.status));
    const when = new Date((r.started || r.created) * 1000);
    top.appendChild(el("span", "m", when.toLocaleString()));
    li.appendChild(top);
    li.appendChild(el("span", "q", r.question || "(no question)"));
    li.appendChild(el("span", "m", `${r.iterations || 0} it · ${fmt(r.tokens)} tok` + (r.answer ? " · " + short(r.answer, 40) : "")));
    li.addEventListener("click", () => { location.hash = "run=" + encodeURIComponent(r.run_id); openRun(r.run_id); });
    ul.appendChild(li);
  }
  if (!j.runs.length) ul.appendChild(el("li", "m", "no runs yet"));
  $("pageinfo").textContent = j.total ? `${S.offset + 1}–${S.offset + j.runs.length} of ${j.total}` : "";
  $("prev").disabled = S.offset === 0;
  $("next").disabled = j.next_offset === null;
}

// ------------------------------------------------------------------ opening and following a run
function resetView() {
  S.events = []; S.lastSeq = -1; S.reads = []; S.lastRead = []; S.cards = {}; S.actions = {}; S.openAction = {};
  S.nodes = {}; S.usage = {}; S.calls = 0; S.startTs = null; S.ctxChars = 0; S.docs = [];
  $("timeline").textContent = ""; $("tree").textContent = "";
  $("answerbox").hidden = true; $("answer").textContent = ""; $("reason").textContent = "";
  $("iterations").textContent = "0"; $("elapsed").textContent = "0.0s"; $("calls").textContent = "0";
  $("tok-root").textContent = "0"; $("tok-sub").textContent = "0"; $("cost").textContent = money(0);
  $("mapinfo").textContent = ""; $("mapdocs").textContent = "";
  setStatus("queued");
  drawMap();
}

function setStatus(st) {
  const b = $("status");
  b.textContent = st;  // "queued #3": its place in the server's queue
  b.className = "badge " + st.split(" ")[0];
  const active = st === "running" || st.startsWith("queued");
  $("cancel").hidden = !active || !S.live;
}

function setConn(text, cls) {
  const c = $("conn");
  c.textContent = text;
  c.className = "pill " + (cls || "");
}

async function openRun(id) {
  stopReplay();
  if (S.es) { S.es.close(); S.es = null; }
  S.runId = id;
  for (const li of document.querySelectorAll("#runs li")) li.classList.toggle("sel", li.dataset.id === id);
  $("empty").hidden = true;
  $("run").hidden = false;
  resetView();
  $("runid").textContent = id;
  $("export").href = `/v1/runs/${encodeURIComponent(id)}/export`;
  let info;
  try {
    info = await (await api(`/v1/runs/${encodeURIComponent(id)}`)).json();
  } catch (err) {
    showError(`run ${id}: ${err.message}`);
    return;
  }
  $("qline").textContent = info.question || "";
  $("meta").textContent = `model ${info.model || "?"} · sub ${info.sub_model || "?"} · levels ${(info.levels || []).join(",")}`;
  setStatus(info.status === "queued" && info.position ? `queued #${info.position}` : info.status);
  S.live = info.active || info.status === "running" || info.status === "queued";
  follow(id);
}

function follow(id) {
  // EventSource resends Last-Event-ID itself when it reconnects, so a dropped connection loses nothing;
  // events already seen are skipped by seq.
  const es = new EventSource(`/v1/runs/${encodeURIComponent(id)}/events`);
  S.es = es;
  setConn(S.live ? "live" : "loading", S.live ? "live" : "");
  es.onmessage = (m) => {
    if (S.runId !== id) return;
    const ev = JSON.parse(m.data);
    if (ev.seq <= S.lastSeq) return;
    S.lastSeq = ev.seq;
    S.events.push(ev);
    if (!S.replaying) handle(ev);
    if (ev.type === "run_end" && ev.path === "0") {
      es.close();
      S.live = false;
      setConn("done");
      $("cancel").hidden = true;
      loadRuns();
    }
  };
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) setConn("disconnected", "err");
    else setConn("reconnecting…", "err");
  };
  es.onopen = () => setConn(S.live ? "live" : "loading", S.live ? "live" : "");
}

// ------------------------------------------------------------------ rendering events
function pathLabel(path) {
  if (path === "0") return "root";
  return "child " + path.split(".").slice(1).join(".");
}

function node(path) {
  if (S.nodes[path]) return S.nodes[path];
  const parentPath = path.includes(".") ? path.slice(0, path.lastIndexOf(".")) : null;
  const li = el("li");
  const row = el("div");
  const kind = el("span", "kind " + (path === "0" ? "root" : "child"), pathLabel(path));
  const info = el("span", "muted");
  row.appendChild(kind);
  row.appendChild(document.createTextNode(" "));
  row.appendChild(info);
  row.addEventListener("click", () => focusPath(path, row));
  li.appendChild(row);
  const kids = el("ul");
  li.appendChild(kids);
  const n = { path, li, info, kids, iterations: 0, tokens: 0, status: "running", subs: 0 };
  S.nodes[path] = n;
  if (parentPath !== null) node(parentPath).kids.appendChild(li);
  else $("tree").appendChild(li);
  nodeInfo(n);
  return n;
}

function nodeInfo(n) {
  n.info.textContent = `${n.iterations} it · ${fmt(n.tokens)} tok · ${n.status}`;
}

function focusPath(path, row) {
  for (const d of document.querySelectorAll(".tree li > div")) d.classList.toggle("sel", d === row);
  const card = document.querySelector(`.iter[data-path="${CSS.escape(path)}"]`);
  $("filter").textContent = "· " + pathLabel(path);
  if (card) card.scrollIntoView({ behavior: "smooth", block: "start" });
}

function card(path, iteration) {
  const key = path + "#" + iteration;
  if (S.cards[key]) return S.cards[key];
  const c = el("div", "iter" + (path === "0" ? "" : " child"));
  c.dataset.path = path;
  const h = el("div", "ih");
  h.appendChild(el("span", null, (path === "0" ? "" : pathLabel(path) + " · ") + "iteration " + iteration));
  const body = el("div", "ib");
  c.appendChild(h);
  c.appendChild(body);
  // a child's iterations go inside the parent's action that started the child, when there is one
  const parentPath = path.includes(".") ? path.slice(0, path.lastIndexOf(".")) : null;
  const host = parentPath !== null && S.openAction[parentPath];
  (host ? host._kids : $("timeline")).appendChild(c);
  S.cards[key] = body;
  return body;
}

function lastCard(path) {
  const keys = Object.keys(S.cards).filter((k) => k.startsWith(path + "#"));
  return keys.length ? S.cards[keys[keys.length - 1]] : card(path, 0);
}

function block(cls, label, text) {
  const d = el("div", "ev " + cls);
  d.appendChild(el("span", "lbl", label));
  if (text !== undefined && text !== null) d.appendChild(el("pre", null, text));
  return d;
}

function addUsage(role, tokens, cost) {
  const u = S.usage[role] || (S.usage[role] = { tokens: 0, cost: 0, unknown: false });
  u.tokens += tokens || 0;
  if (cost === null) u.unknown = true;
  else u.cost += cost || 0;
  S.calls += 1;
  showUsage();
}

function showUsage() {
  const t = (r) => (S.usage[r] ? S.usage[r].tokens : 0);
  $("tok-root").textContent = fmt(t("root"));
  $("tok-sub").textContent = fmt(t("sub") + t("child"));
  $("calls").textContent = fmt(S.calls);
  const all = Object.values(S.usage);
  $("cost").textContent = money(all.some((u) => u.unknown) ? null : all.reduce((a, u) => a + u.cost, 0));
}

function handle(ev) {
  const d = ev.data || {};
  const path = ev.path || "0";
  const n = node(path);
  if (S.startTs === null) S.startTs = ev.ts;
  if (S.live || S.replaying) $("elapsed").textContent = (ev.ts - S.startTs).toFixed(1) + "s";
  switch (ev.type) {
    case "run_start":
      if (path === "0") {
        $("qline").textContent = d.question || "";
        const c = d.context || {};
        S.ctxChars = c.chars || 0;
        S.docs = c.document_sizes || [];
        $("mapdocs").textContent = S.docs.length > 1 ? S.docs.map((x) => x.path).join(" · ") : "";
        $("meta").textContent = `model ${d.model} · sub ${d.sub_model} · levels ${(d.levels || []).join(",")} · ` +
          `context ${fmt(c.chars)} chars, ${fmt(c.lines)} lines, ${c.documents || 1} document(s)`;
        setStatus("running");
        drawMap();
      } else {
        n.info.title = d.question || "";
      }
      break;
    case "iteration_start":
      card(path, d.iteration);
      n.iterations = d.iteration;
      if (path === "0") $("iterations").textContent = String(d.iteration);
      break;
    case "lm_response": {
      const b = block("reply", `model reply · ${fmt(d.input_tokens)}+${fmt(d.output_tokens)} tok · ${d.latency_s}s`, d.text);
      card(path, d.iteration).appendChild(b);
      addUsage(path === "0" ? "root" : "child", (d.input_tokens || 0) + (d.output_tokens || 0), d.cost_usd);
      n.tokens += (d.input_tokens || 0) + (d.output_tokens || 0);
      break;
    }
    case "action_start": {
      const input = d.code !== undefined ? d.code : JSON.stringify(d.args);
      const a = block("action", `${d.level} ${d.op}`, input);
      a._kids = el("div", "children");
      a.appendChild(a._kids);
      card(path, d.iteration).appendChild(a);
      S.actions[`${path}#${d.iteration}#${d.index}`] = a;
      S.openAction[path] = a;
      break;
    }
    case "action_end": {
      const key = `${path}#${d.iteration}#${d.index}`;
      let a = S.actions[key];
      if (!a) {
        a = block("action", `${d.level} ${d.op}${d.skipped ? " (not run)" : ""}`);
        card(path, d.iteration).appendChild(a);
      }
      if (d.error) a.classList.add("error");
      const out = block("out", `output${d.hits !== undefined && d.hits !== null ? " · " + d.hits + " hit(s)" : ""}` +
        (d.elapsed_s !== undefined ? ` · ${d.elapsed_s}s` : ""), d.output);
      a.appendChild(out);
      if (S.openAction[path] === a) delete S.openAction[path];
      if (path === "0" && d.read && d.read.length) {
        S.reads.push(...d.read);
        S.lastRead = d.read;
        drawMap();
      }
      break;
    }
    case "sub_call": {
      const target = S.openAction[path] ? S.openAction[path]._kids : lastCard(path);
      const what = [d.op, d.index !== undefined && d.index !== null ? "#" + d.index : null].filter(Boolean).join(" ");
      const seen = d.prompt !== undefined || d.answer !== undefined
        ? `prompt: ${short(d.prompt || "", 400)}\n\nanswer: ${short(d.answer || "", 400)}` : undefined;
      target.appendChild(block("sub", `sub-call${what ? " " + what : ""} · ${d.model} · ` +
        `${fmt(d.input_tokens)}+${fmt(d.output_tokens)} tok · ${d.latency_s}s` +
        (d.cost_usd === undefined ? "" : ` · ${money(d.cost_usd)}`), seen));
      addUsage("sub", (d.input_tokens || 0) + (d.output_tokens || 0), d.cost_usd);
      n.subs += 1;
      const leaf = el("li");
      leaf.appendChild(el("div", null, `sub-call ${n.subs} · ${fmt((d.input_tokens || 0) + (d.output_tokens || 0))} tok`));
      leaf.firstChild.classList.add("kind", "sub");
      n.kids.appendChild(leaf);
      break;
    }
    case "batch_progress": {
      const target = S.openAction[path] || lastCard(path);
      let bar = target._progress;
      if (!bar) { bar = target._progress = el("div", "ev progress"); target.appendChild(bar); }
      const what = d.op === "rlm_query_batched" ? "child runs" : "sub-calls";
      bar.textContent = `${d.op || "batch"}: ${fmt(d.done)}/${fmt(d.total)} ${what}` +
        (d.failed ? ` (${fmt(d.failed)} failed)` : "");
      break;
    }
    case "refused": case "warning": case "retry": case "failover":
      lastCard(path).appendChild(block("warn", ev.type, d.message || d.error || JSON.stringify(d)));
      break;
    case "error":
      lastCard(path).appendChild(block("err", d.fatal ? "error (fatal)" : "error", d.message));
      break;
    case "final":
      card(path, d.iteration).appendChild(block("final", "final answer", d.answer));
      break;
    case "run_end":
      n.status = d.status;
      if (path === "0") endRun(d);
      break;
    default:
      break;
  }
  nodeInfo(n);
}

function endRun(d) {
  setStatus(d.status);
  // only an answered run has a final answer; a stopped run's text is labelled partial, never final
  const has = d.answer !== null && d.answer !== undefined && String(d.answer) !== "";
  const kind = d.status === "answered" ? "final" : has ? "partial" : "none";
  $("answerbox").hidden = false;
  $("answerbox").classList.remove("final", "partial", "none");
  $("answerbox").classList.add(kind);
  $("answerhead").textContent = kind === "final" ? "Final answer"
    : kind === "partial" ? `Partial answer — not final (run ${d.status})` : `No answer (run ${d.status})`;
  $("answer").textContent = kind === "none" ? "the run ended without an answer" : String(d.answer);
  $("reason").textContent = d.reason ? `${d.status}: ${d.reason}` : "";
  $("iterations").textContent = String(d.iterations || 0);
  $("elapsed").textContent = (d.elapsed_s || 0).toFixed(1) + "s";
  const u = d.usage || {};
  const by = u.by_role || {};
  if (by.root) $("tok-root").textContent = fmt(by.root.total_tokens);
  if (by.sub) $("tok-sub").textContent = fmt(by.sub.total_tokens);
  if (u.total) {
    $("calls").textContent = fmt(u.total.calls);
    $("cost").textContent = money(u.total.cost_usd);
  }
  $("answerbox").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

// ------------------------------------------------------------------ the context map
function drawMap() {
  const cv = $("map");
  const dpr = window.devicePixelRatio || 1;
  const w = cv.clientWidth || 600;
  const h = 44;
  cv.width = w * dpr;
  cv.height = h * dpr;
  const g = cv.getContext("2d");
  g.scale(dpr, dpr);
  g.fillStyle = "#eef0f3";
  g.fillRect(0, 0, w, h);
  const total = S.ctxChars;
  if (!total) return;
  const x = (c) => Math.max(0, Math.min(w, (c / total) * w));
  g.fillStyle = "#9aa3b2";
  for (const doc of S.docs.slice(1)) g.fillRect(x(doc.start), 0, 1, h);
  const merged = mergeRanges(S.reads.map(([a, b]) => [Math.max(0, a), Math.min(total, b)]));
  g.fillStyle = "#2f6fde";
  for (const [a, b] of merged) g.fillRect(x(a), 6, Math.max(1.5, x(b) - x(a)), h - 12);
  g.fillStyle = "#f59e0b";
  for (const [a, b] of S.lastRead) g.fillRect(x(a), 2, Math.max(2, x(b) - x(a)), h - 4);
  const covered = merged.reduce((s, [a, b]) => s + (b - a), 0);
  $("mapinfo").textContent = `· read ${(100 * covered / total).toFixed(2)}% of ${fmt(total)} chars in ` +
    `${merged.length} range(s) (commands, chunks sent to sub-calls, code using the context) · orange: the latest read`;
}

function mergeRanges(rs) {
  const s = rs.filter(([a, b]) => b > a).sort((p, q) => p[0] - q[0]);
  const out = [];
  for (const [a, b] of s) {
    if (out.length && a <= out[out.length - 1][1]) out[out.length - 1][1] = Math.max(out[out.length - 1][1], b);
    else out.push([a, b]);
  }
  return out;
}

// ------------------------------------------------------------------ replay
function stopReplay() {
  if (S.replaying) { clearTimeout(S.replaying); S.replaying = null; }
}

function replay() {
  stopReplay();
  const events = S.events.slice();
  const delay = parseInt($("speed").value, 10) || 200;
  const live = S.live;
  resetView();
  S.events = events;
  S.lastSeq = events.length ? events[events.length - 1].seq : -1;
  let i = 0;
  const step = () => {
    if (i >= S.events.length) { S.replaying = null; S.live = live; return; }
    handle(S.events[i++]);
    S.replaying = setTimeout(step, delay);
  };
  S.replaying = setTimeout(step, 0);
}

async function cancelRun() {
  if (!S.runId) return;
  try {
    await api(`/v1/runs/${encodeURIComponent(S.runId)}/cancel`, { method: "POST" });
  } catch (err) {
    showError("cancel: " + err.message);
  }
}

// ------------------------------------------------------------------ start-up
function init() {
  $("runform").addEventListener("submit", startRun);
  $("sample").addEventListener("change", onSample);
  $("refresh").addEventListener("click", () => loadRuns());
  $("prev").addEventListener("click", () => loadRuns(S.offset - PAGE));
  $("next").addEventListener("click", () => loadRuns(S.offset + PAGE));
  $("replay").addEventListener("click", replay);
  $("cancel").addEventListener("click", cancelRun);
  $("authform").addEventListener("submit", (e) => {
    e.preventDefault();
    location.href = "/visualize?token=" + encodeURIComponent($("token").value);
  });
  window.addEventListener("resize", drawMap);
  loadSamples().catch((err) => showError(err.message));
  loadRuns(0);
  const m = /run=([^&]+)/.exec(location.hash);
  if (m) openRun(decodeURIComponent(m[1]));
}

init();

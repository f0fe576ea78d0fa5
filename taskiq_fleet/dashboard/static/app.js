// taskiq-fleet dashboard: one script for every page, no build step.
// Each page fetches its JSON once, then follows /events (server-sent events): what changes
// in the fleet is applied to the page as it is published, without a reload and without
// asking the server on a timer. The only timer re-draws "seen 3 s ago" from data in hand.
"use strict";

const main = document.getElementById("main");
const STATUS_ORDER = ["succeeded", "failed", "running", "placed", "ready", "pending",
  "cancelled", "skipped"];
let skew = 0; // server clock minus this browser's, in seconds

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}
function now() { return Date.now() / 1000 + skew; }
function setClock(serverNow) { if (serverNow) skew = serverNow - Date.now() / 1000; }
function num(x, digits = 2) { return Number(x ?? 0).toFixed(digits).replace(/\.?0+$/, "") || "0"; }
function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${num(s, 1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${num(s / 3600, 1)} h`;
}
function ago(t) { return t ? `${seconds(Math.max(0, now() - t))} ago` : ""; }
function badge(word) { return `<span class="badge ${esc(word)}">${esc(word)}</span>`; }
function runLink(id) { return `<a class="mono" href="/runs/${encodeURIComponent(id)}">${esc(id)}</a>`; }
function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}
async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  setClock(body.now);
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}
function meter(used, total, label, kind = "") {
  const share = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  return `<div class="meter ${kind}" title="${esc(label)}"><span style="width:${share}%"></span></div>` +
    `<div class="meter-label">${esc(label)}</div>`;
}
function stack(counts, total) {
  const parts = STATUS_ORDER.filter((s) => counts[s]).map((s) =>
    `<span class="s-${s}" style="width:${(100 * counts[s]) / total}%;background:var(--${s})" title="${s}: ${counts[s]}"></span>`);
  return `<div class="stack">${parts.join("")}</div>`;
}
function problem(error) { main.innerHTML = `<p class="failure">${esc(error.message || error)}</p>`; }

// -- the fleet ----------------------------------------------------------------------------

function health(w) {
  if (w.draining) return "draining";
  return now() - w.last_seen > 3 * (w.interval || 2) ? "silent" : "healthy";
}

function workerRow(w) {
  const [cpu, ram, ...custom] = w.dims;
  const labels = Object.entries(w.labels).map(([k, v]) => `<span class="chip">${esc(k)}=${esc(v)}</span>`);
  const gpus = w.gpus.map((g) => meter(g.reserved, 1,
    `gpu ${g.index} ${g.model}${g.memory_mb ? " " + g.memory_mb + " MB" : ""}: ${Math.round(g.reserved * 100)}% reserved`, "gpu"));
  const resources = custom.map((d) => meter(d.reserved, d.total, `${d.name} ${num(d.reserved)}/${num(d.total)}`));
  return `<tr data-worker="${esc(w.name)}">
    <td><b>${esc(w.name)}</b><div>${labels.join("")}</div></td>
    <td>${badge(health(w))}</td>
    <td>${meter(cpu.reserved, cpu.total, `${num(cpu.reserved)}/${num(cpu.total)} cores reserved, ${Math.round(w.cpu_percent)}% busy`)}</td>
    <td>${meter(ram.reserved, ram.total, `${Math.round(ram.reserved)}/${ram.total} MB reserved, ${w.available_ram_mb} MB free`)}</td>
    <td>${gpus.join("") || '<span class="muted">none</span>'}</td>
    <td>${resources.join("") || '<span class="muted">none</span>'}</td>
    <td>${w.running}</td>
    <td class="muted">${ago(w.last_seen)}</td></tr>`;
}

function fleetPage() {
  const state = { workers: new Map(), coordinators: [] };
  function render() {
    const workers = [...state.workers.values()].sort((a, b) => a.name.localeCompare(b.name));
    const sum = (dim, key) => workers.reduce((t, w) => t + (w.dims.find((d) => d.name === dim)?.[key] || 0), 0);
    const gpus = workers.flatMap((w) => w.gpus);
    const leader = state.coordinators.find((c) => c.role === "leader");
    const standbys = state.coordinators.filter((c) => c.role === "standby").map((c) => esc(c.name));
    main.innerHTML = `<h1>Fleet</h1>
      <div class="cards">
        <div class="card"><div class="big">${workers.length}</div><div class="small">workers, ${workers.filter((w) => health(w) === "healthy").length} healthy</div></div>
        <div class="card"><div class="big">${num(sum("cpu", "reserved"))} / ${num(sum("cpu", "total"))}</div><div class="small">cores reserved</div></div>
        <div class="card"><div class="big">${Math.round(sum("ram_mb", "reserved"))} / ${sum("ram_mb", "total")}</div><div class="small">MB reserved</div></div>
        <div class="card"><div class="big">${num(gpus.reduce((t, g) => t + g.reserved, 0))} / ${gpus.length}</div><div class="small">GPUs reserved</div></div>
        <div class="card"><div class="big">${workers.reduce((t, w) => t + w.running, 0)}</div><div class="small">attempts running</div></div>
      </div>
      <p class="muted">${leader ? `coordinator: ${esc(leader.name)} (leader, term ${leader.term})` : ""}${standbys.length ? `; standing by: ${standbys.join(", ")}` : ""}</p>
      <table id="workers"><thead><tr><th>worker</th><th>health</th><th>cpu</th><th>ram</th>
        <th>gpu devices</th><th>resources</th><th>running</th><th>last seen</th></tr></thead>
        <tbody>${workers.map(workerRow).join("") || '<tr><td colspan="8" class="muted">no workers</td></tr>'}</tbody></table>`;
  }
  getJSON("/api/fleet").then((body) => {
    body.workers.forEach((w) => state.workers.set(w.name, w));
    state.coordinators = body.coordinators;
    render();
    setInterval(render, 2000); // ages and health from data in hand
  }).catch(problem);
  return {
    onEvent(ev) {
      if (ev.type === "fleet") { state.workers = new Map(ev.workers.map((w) => [w.name, w])); }
      else if (ev.type === "workers") { ev.workers.forEach((w) => state.workers.set(w.name, w)); }
      else if (ev.type === "gone") { state.workers.delete(ev.worker); }
      else return;
      render();
    },
  };
}

// -- runs ---------------------------------------------------------------------------------

function runRow(r) {
  const done = (r.nodes.succeeded || 0) + (r.nodes.failed || 0) + (r.nodes.skipped || 0) + (r.nodes.cancelled || 0);
  const took = r.finished_at ? seconds(r.finished_at - r.submitted_at) : seconds(now() - r.submitted_at);
  return `<tr data-run="${esc(r.run_id)}"><td>${runLink(r.run_id)}</td><td>${esc(r.name)}</td>
    <td>${badge(r.status)}</td><td>${stack(r.nodes, r.total || 1)}<div class="meter-label">${done}/${r.total} nodes</div></td>
    <td class="muted">${ago(r.submitted_at)}</td><td>${took}</td>
    <td class="reason">${esc(r.error.length > 160 ? r.error.slice(0, 160) + "..." : r.error)}</td></tr>`;
}

function runsPage() {
  const params = new URLSearchParams(location.search);
  const state = { runs: [], status: params.get("status") || "", q: params.get("q") || "" };
  main.innerHTML = `<h1>Runs</h1><div class="controls">
      <select id="status">${["", "running", "succeeded", "failed", "cancelled"].map((s) =>
        `<option value="${s}" ${s === state.status ? "selected" : ""}>${s || "every status"}</option>`).join("")}</select>
      <input id="search" type="search" placeholder="run id or name" value="${esc(state.q)}">
    </div><div id="list"></div>`;
  const list = document.getElementById("list");
  function render() {
    list.innerHTML = `<table id="runs"><thead><tr><th>run</th><th>name</th><th>status</th>
      <th>progress</th><th>submitted</th><th>took</th><th>error</th></tr></thead>
      <tbody>${state.runs.map(runRow).join("") || '<tr><td colspan="7" class="muted">no runs</td></tr>'}</tbody></table>`;
  }
  async function load() {
    const query = new URLSearchParams();
    if (state.status) query.set("status", state.status);
    if (state.q) query.set("q", state.q);
    history.replaceState(null, "", query.toString() ? `/runs?${query}` : "/runs");
    try { state.runs = (await getJSON(`/api/runs?${query}`)).runs; render(); } catch (e) { problem(e); }
  }
  const matches = (r) => (!state.status || r.status === state.status) &&
    (!state.q || r.run_id.includes(state.q) || r.name.includes(state.q));
  document.getElementById("status").onchange = (e) => { state.status = e.target.value; load(); };
  document.getElementById("search").oninput = debounce(() => {
    state.q = document.getElementById("search").value.trim(); load();
  }, 250);
  load();
  return {
    onEvent(ev) {
      if (ev.type !== "run") return;
      const i = state.runs.findIndex((r) => r.run_id === ev.run.run_id);
      if (i >= 0 && matches(ev.run)) state.runs[i] = ev.run;
      else if (i >= 0) state.runs.splice(i, 1);
      else if (matches(ev.run)) state.runs.unshift(ev.run);
      else return;
      render();
    },
  };
}

// -- one run ------------------------------------------------------------------------------

const BOX = { w: 170, h: 46, dx: 220, dy: 66, pad: 24 };

function dag(run, selected) {
  if (run.nodes.length > 400) return `<p class="muted">${run.nodes.length} nodes: see the table below.</p>`;
  const columns = new Map();
  for (const n of run.nodes) {
    const level = run.levels[n.id] ?? 0;
    if (!columns.has(level)) columns.set(level, []);
    columns.get(level).push(n);
  }
  const at = new Map();
  let height = 0;
  for (const [level, nodes] of columns) {
    nodes.forEach((n, i) => at.set(n.id, { x: BOX.pad + level * BOX.dx, y: BOX.pad + i * BOX.dy }));
    height = Math.max(height, nodes.length);
  }
  const width = BOX.pad * 2 + (columns.size - 1) * BOX.dx + BOX.w;
  const edges = run.edges.filter(([a, b]) => at.has(a) && at.has(b)).map(([a, b]) => {
    const p = at.get(a), q = at.get(b);
    const x1 = p.x + BOX.w, y1 = p.y + BOX.h / 2, x2 = q.x, y2 = q.y + BOX.h / 2;
    const mid = (x1 + x2) / 2;
    return `<path class="edge" d="M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}"/>`;
  });
  const boxes = run.nodes.map((n) => {
    const p = at.get(n.id);
    const label = n.id.length > 22 ? n.id.slice(0, 21) + "…" : n.id;
    return `<g class="node ${n.id === selected ? "selected" : ""}" data-node="${esc(n.id)}" data-status="${esc(n.status)}" transform="translate(${p.x},${p.y})">
      <rect width="${BOX.w}" height="${BOX.h}" fill="var(--${esc(n.status)})"></rect>
      <text x="10" y="19" font-weight="600">${esc(label)}</text>
      <text x="10" y="36">${esc(n.status)}${n.worker ? " · " + esc(n.worker) : ""}</text></g>`;
  });
  return `<svg id="dag" width="${width}" height="${BOX.pad * 2 + (height - 1) * BOX.dy + BOX.h}">
    <defs></defs>${edges.join("")}${boxes.join("")}</svg>`;
}

function nodePanel(n) {
  if (!n) return '<p class="muted">Select a node in the DAG.</p>';
  const rows = [["task", n.task], ["status", badge(n.status)], ["worker", esc(n.worker || "")],
    ["GPU devices", esc(n.gpu_devices.join(", "))], ["attempt", n.attempt],
    ["system retries", n.system_retries], ["duration", seconds(n.duration)],
    ["why", esc(n.reason)]];
  const error = n.error ? `<div class="failure"><div class="error">${esc(n.error.type)}: ${esc(n.error.message)}</div>
    ${n.error.traceback ? `<pre class="trace">${esc(n.error.traceback)}</pre>` : ""}</div>` : "";
  return `<h2 class="mono">${esc(n.id)}</h2><dl>${rows.map(([k, v]) =>
    `<dt>${k}</dt><dd>${k === "status" || k === "worker" || k === "GPU devices" || k === "why" ? v : esc(v)}</dd>`).join("")}</dl>${error}`;
}

function runPage(runId) {
  const state = { run: null, selected: null };
  function render() {
    const run = state.run;
    const took = run.finished_at ? seconds(run.finished_at - run.submitted_at) : `${seconds(now() - run.submitted_at)} so far`;
    const failed = run.nodes.filter((n) => n.status === "failed" && n.error);
    const chosen = run.nodes.find((n) => n.id === state.selected) || failed[0];
    main.innerHTML = `<h1>Run <span class="mono">${esc(run.run_id)}</span> <span id="run-status">${badge(run.status)}</span></h1>
      <p class="muted">${esc(run.name)} submitted ${ago(run.submitted_at)}, took ${took};
        ${run.total} nodes${run.error ? ` · <span class="reason">${esc(run.error)}</span>` : ""}</p>
      <div class="layout"><div class="dag-wrap">${dag(run, chosen?.id)}</div>
        <div class="panel" id="node-panel">${nodePanel(chosen)}</div></div>
      ${failed.length ? `<h2>Failed nodes</h2><div id="failures">${failed.map((n) =>
        `<div class="failure" data-node="${esc(n.id)}"><div class="error">${esc(n.id)}: ${esc(n.error.type)}: ${esc(n.error.message)}</div>
         ${n.error.traceback ? `<details><summary>traceback</summary><pre class="trace">${esc(n.error.traceback)}</pre></details>` : ""}</div>`).join("")}</div>` : ""}
      <h2>Nodes</h2><table id="nodes"><thead><tr><th>node</th><th>task</th><th>status</th><th>worker</th>
        <th>GPU devices</th><th>attempt</th><th>duration</th><th>why</th></tr></thead><tbody>
        ${run.nodes.map((n) => `<tr data-node="${esc(n.id)}"><td class="mono">${esc(n.id)}</td><td class="mono">${esc(n.task)}</td>
          <td>${badge(n.status)}</td><td>${esc(n.worker || "")}</td><td>${esc(n.gpu_devices.join(", "))}</td>
          <td>${n.attempt}${n.system_retries ? ` (+${n.system_retries} system)` : ""}</td><td>${seconds(n.duration)}</td>
          <td class="reason">${esc(n.reason)}</td></tr>`).join("")}</tbody></table>
      ${Object.keys(run.outputs).length ? `<h2>Outputs</h2><table><tbody>${Object.entries(run.outputs).map(([k, v]) =>
        `<tr><td class="mono">${esc(k)}</td><td class="mono">${esc(v)}</td></tr>`).join("")}</tbody></table>` : ""}`;
    document.querySelectorAll("#dag .node").forEach((g) => {
      g.onclick = () => { state.selected = g.dataset.node; render(); };
    });
  }
  async function load() {
    try { state.run = (await getJSON(`/api/runs/${encodeURIComponent(runId)}`)).run; render(); }
    catch (e) { problem(e); }
  }
  const reload = debounce(load, 200);
  load();
  return { onEvent(ev) { if (ev.type === "run" && ev.run.run_id === runId) reload(); } };
}

// -- why work waits -----------------------------------------------------------------------

function waitingPage() {
  async function load() {
    try {
      const body = await getJSON("/api/waiting");
      main.innerHTML = `<h1>Waiting</h1>
        <p class="muted">Ready nodes with the pool's last answer: <b>busy</b> waits for capacity
        to be released; <b>infeasible</b> waits for a worker that could ever hold it.
        ${body.upstream} more nodes wait for the nodes before them.</p>
        <table id="waiting"><thead><tr><th>run</th><th>node</th><th>task</th><th>status</th><th>why</th>
        <th>the pool's reason</th></tr></thead><tbody>${body.nodes.map((n) =>
          `<tr data-node="${esc(n.node)}"><td>${runLink(n.run_id)}${n.run_name ? `<div class="muted">${esc(n.run_name)}</div>` : ""}</td>
          <td class="mono">${esc(n.node)}</td><td class="mono">${esc(n.task)}</td><td>${badge(n.status)}</td>
          <td>${badge(n.why)}</td><td class="reason">${esc(n.reason)}</td></tr>`).join("") ||
          '<tr><td colspan="6" class="muted">nothing waits</td></tr>'}</tbody></table>`;
    } catch (e) { problem(e); }
  }
  const reload = debounce(load, 1000);
  load();
  return { onEvent(ev) { if (ev.type === "run" || ev.type === "fleet" || ev.type === "gone") reload(); } };
}

// -- routing and the event stream ---------------------------------------------------------

function route(path) {
  if (path === "/") return ["fleet", fleetPage];
  if (path === "/runs") return ["runs", runsPage];
  if (path.startsWith("/runs/")) return ["runs", () => runPage(decodeURIComponent(path.slice(6)))];
  if (path === "/waiting") return ["waiting", waitingPage];
  return ["", () => { problem(`no page ${path}`); return { onEvent() {} }; }];
}

const [name, make] = route(location.pathname);
document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === name));
const page = make();
const live = document.getElementById("live");
const events = new EventSource("/events");
events.onopen = () => { live.className = "live on"; live.textContent = "live"; };
events.onerror = () => { live.className = "live off"; live.textContent = "reconnecting"; };
events.onmessage = (message) => {
  const ev = JSON.parse(message.data);
  setClock(ev.now);
  page.onEvent(ev);
};

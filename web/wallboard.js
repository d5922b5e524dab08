// The wallboard page: figures from /ws/wallboard (docs/wallboard-protocol.md), coloured by
// the levels the server judged. Everything shown goes through textContent.

import { DesktopConnection } from "/static/desktop-connection.js";
import { drawChart } from "/static/wallboard-chart.js";

const $ = (id) => document.getElementById(id);
const STATES = ["available", "reserved", "on_call", "wrap_up", "not_ready", "logged_out"];
const STATE_NAMES = {
  available: "空闲 Ready",
  reserved: "振铃 Ringing",
  on_call: "通话 On call",
  wrap_up: "整理 Wrap-up",
  not_ready: "未就绪 Not ready",
  logged_out: "未登录 Logged out",
};
const SPY_ACTIONS = ["listen", "whisper", "barge"];
const ACTION_NAMES = {
  listen: "监听 Listen",
  whisper: "耳语 Whisper",
  barge: "强插 Barge",
  force_not_ready: "置忙 Not ready",
  force_logout: "签出 Log out",
  stop_listening: "停止监听 Stop listening",
};

const state = { figures: null, levels: null, you: null, supervision: false, chartQueue: "" };

function text(node, value) {
  node.textContent = value === null || value === undefined ? "–" : String(value);
}

function secs(value) {
  if (typeof value !== "number") return "–";
  const s = Math.round(value);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}:${String(s % 60).padStart(2, "0")}`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}`;
}

function pct(value) {
  return typeof value === "number" ? `${Math.round(value * 100)}%` : "–";
}

function worst(levels) {
  const order = ["none", "ok", "warn", "alarm"];
  let at = 0;
  for (const level of Object.values(levels || {})) at = Math.max(at, order.indexOf(level));
  return order[at];
}

function fig(tile, key, value, label, level) {
  let box = tile.querySelector(`.fig[data-figure="${key}"]`);
  if (!box) {
    box = document.createElement("div");
    box.className = "fig";
    box.dataset.figure = key;
    const v = document.createElement("span");
    v.className = "value";
    const l = document.createElement("span");
    l.className = "label";
    l.textContent = label;
    box.append(v, l);
    tile.querySelector(".figs").append(box);
  }
  box.querySelector(".value").textContent = value;
  box.dataset.level = level || "none";
}

function renderQueue(name, q, levels) {
  let tile = document.querySelector(`.tile[data-queue="${CSS.escape(name)}"]`);
  if (!tile) {
    tile = document.createElement("article");
    tile.className = "tile";
    tile.dataset.queue = name;
    const h = document.createElement("h3");
    const title = document.createElement("span");
    title.className = "title";
    const small = document.createElement("small");
    h.append(title, small);
    const figs = document.createElement("div");
    figs.className = "figs";
    const states = document.createElement("div");
    states.className = "states";
    tile.append(h, figs, states);
    $("queues").append(tile);
  }
  tile.querySelector(".title").textContent = q.name || name;
  tile.querySelector("h3 small").textContent = q.name ? name : "";
  const now = q.now || {};
  const today = q.today || {};
  const window_ = q.window || {};
  const staffing = q.staffing || {};
  fig(tile, "waiting", String(now.waiting ?? 0), "排队 Waiting", levels.waiting);
  fig(tile, "longest_wait_s", secs(now.longest_wait_s), "最长等待 Longest", levels.longest_wait_s);
  fig(tile, "service_level_today", pct(today.service_level), "服务水平 SL today", levels.service_level_today);
  fig(tile, "service_level_window", pct(window_.service_level), "近15分 SL 15 min", levels.service_level_window);
  fig(tile, "asa_s", secs(today.asa_s), "平均应答 ASA", levels.asa_s);
  fig(tile, "abandonment_rate", pct(today.abandonment_rate), "放弃率 Abandoned", levels.abandonment_rate);
  fig(tile, "offered", `${today.offered ?? 0}/${today.answered ?? 0}`, "来电/接通 Offered/ans.", "none");
  const required = staffing.required ?? null;
  const logged = staffing.logged_in ?? now.agents_logged_in ?? 0;
  fig(tile, "agents_short", `${required ?? "–"}/${logged}`, "需/在线 Erlang req./in", levels.agents_short);
  const statesBox = tile.querySelector(".states");
  const parts = [];
  for (const s of STATES) {
    if (s === "logged_out") continue;
    const n = (now.agents_by_state || {})[s] ?? 0;
    const span = document.createElement("span");
    span.dataset.state = s;
    const b = document.createElement("b");
    b.textContent = String(n);
    span.append(b, ` ${STATE_NAMES[s]}`);
    parts.push(span);
  }
  statesBox.replaceChildren(...parts);
  tile.dataset.level = worst(levels);
}

function actionButton(kind, agentId) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.action = kind;
  button.dataset.agent = agentId;
  button.textContent = ACTION_NAMES[kind];
  return button;
}

// The agent's desktop as they see it (current pop included), read-only, in a new tab.
function viewLink(agentId, name) {
  const link = document.createElement("a");
  link.className = "view";
  link.href = `/desktop?agent=${encodeURIComponent(agentId)}`;
  link.target = "_blank";
  link.rel = "noopener";
  link.dataset.agent = agentId;
  link.textContent = "查看 · View";
  link.style.color = "inherit"; // readable on the dark board (wallboard.css has no link style)
  link.style.fontSize = "0.8em";
  link.title = `查看 ${name || agentId} 的桌面（只读） · Watch ${name || agentId}'s desktop (read-only)`;
  return link;
}

function renderAgents(agents) {
  const body = $("agents").querySelector("tbody");
  const rows = [];
  const supervise = state.supervision;
  for (const [id, a] of Object.entries(agents || {})) {
    const now = a.now || { state: "logged_out" };
    const tr = document.createElement("tr");
    tr.dataset.agent = id;
    const cells = [];
    for (let i = 0; i < 8; i++) cells.push(document.createElement("td"));
    cells[0].textContent = a.name ? `${a.name} (${id})` : id;
    cells[0].append(" ", viewLink(id, a.name));
    const badge = document.createElement("span");
    badge.className = "state";
    badge.dataset.state = now.state;
    badge.textContent = STATE_NAMES[now.state] || now.state;
    cells[1].append(badge);
    cells[2].textContent = now.state === "logged_out" ? "–" : secs(now.time_in_state_s);
    cells[3].textContent = now.reason || "";
    cells[4].textContent = now.call_id ? `${now.queue || ""} ${now.call_id}`.trim() : "";
    cells[5].textContent = String((a.today || {}).calls_handled ?? 0);
    cells[6].textContent = pct((a.today || {}).occupancy);
    cells[7].className = "actions";
    cells[7].hidden = !supervise;
    if (supervise && now.state !== "logged_out") {
      if (now.state === "on_call") for (const kind of SPY_ACTIONS) cells[7].append(actionButton(kind, id));
      if (now.state !== "not_ready") cells[7].append(actionButton("force_not_ready", id));
      cells[7].append(actionButton("force_logout", id));
    }
    tr.append(...cells);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function renderChart() {
  const f = state.figures || {};
  const intervals = f.intervals || {};
  const select = $("chart-queue");
  const names = Object.keys(f.queues || {});
  const wanted = ["", ...names];
  if (select.options.length !== wanted.length) {
    const options = wanted.map((name) => {
      const o = document.createElement("option");
      o.value = name;
      o.textContent = name ? ((f.queues[name] || {}).name || name) : "全部 · All queues";
      return o;
    });
    select.replaceChildren(...options);
    select.value = state.chartQueue;
  }
  const series = state.chartQueue ? (intervals.queues || {})[state.chartQueue] : intervals.centre;
  drawChart($("chart"), series || [], (f.staffing_target || {}).target_sl ?? null);
}

function render() {
  const f = state.figures;
  if (!f) return;
  const levels = state.levels || { centre: {}, queues: {} };
  const centre = f.centre || {};
  text($("centre-waiting"), (centre.now || {}).waiting ?? 0);
  $("centre-waiting").dataset.level = levels.centre.waiting || "none";
  text($("centre-longest"), secs((centre.now || {}).longest_wait_s));
  $("centre-longest").dataset.level = levels.centre.longest_wait_s || "none";
  text($("centre-sl"), pct((centre.today || {}).service_level));
  $("centre-sl").dataset.level = levels.centre.service_level_today || "none";
  text($("centre-offered"), (centre.today || {}).offered ?? 0);
  $("as-of").textContent = typeof f.as_of === "string" ? f.as_of.slice(11, 19) : "";
  const seen = new Set();
  for (const [name, q] of Object.entries(f.queues || {})) {
    renderQueue(name, q, (levels.queues || {})[name] || {});
    seen.add(name);
  }
  for (const tile of document.querySelectorAll(".tile")) if (!seen.has(tile.dataset.queue)) tile.remove();
  renderAgents(f.agents);
  renderChart();
}

function showError(message) {
  const line = document.createElement("div");
  line.textContent = message;
  $("errors").replaceChildren(line);
  setTimeout(() => { if (line.parentNode) line.remove(); }, 8000);
}

function showNotice(message) {
  $("notice").textContent = message;
}

function onMessage(msg) {
  switch (msg.type) {
    case "snapshot":
      state.you = msg.you || null;
      state.supervision = Boolean(msg.supervision);
      $("who").textContent = state.you ? `${state.you.name || state.you.login} · ${state.you.role}` : "";
      $("supervise-tools").hidden = !state.supervision;
      document.querySelector(".actions-col").hidden = !state.supervision;
      if (Array.isArray(msg.reason_codes)) {
        $("reason").replaceChildren(...msg.reason_codes.map((code) => {
          const o = document.createElement("option");
          o.value = code;
          o.textContent = code;
          return o;
        }));
      }
    // falls through: a snapshot carries the figures too
    case "figures":
      state.figures = msg.figures || null;
      state.levels = msg.levels || null;
      render();
      break;
    case "result":
      showNotice(`✔ ${ACTION_NAMES[msg.action] || msg.action} ${msg.agent || ""}`.trim());
      break;
    case "error":
      showError(`${msg.code}: ${msg.message}`);
      break;
    default:
      break;
  }
}

function onStatus(status, detail) {
  const box = $("connection");
  box.dataset.status = status;
  const words = {
    connecting: "连接中 · Connecting…",
    connected: "实时 · Live",
    disconnected: "已断开，重连中 · Reconnecting…",
    forbidden: `无权限 · Forbidden: ${detail.reason || ""}`,
  };
  $("connection-text").textContent = words[status] || status;
  if (status === "forbidden") showError(detail.reason || "forbidden");
}

const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const connection = new DesktopConnection(`${scheme}//${location.host}/ws/wallboard`, {
  onMessage,
  onStatus,
  onUnauthenticated: () => location.assign(`/login?next=${encodeURIComponent("/wallboard")}`),
});

$("agents").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const kind = button.dataset.action;
  const fields = { agent: button.dataset.agent };
  if (kind === "force_not_ready") fields.reason = $("reason").value;
  if (connection.send(kind, fields) === null) showError("未连接 · not connected");
});
$("stop-listening").addEventListener("click", () => connection.send("stop_listening"));
$("chart-queue").addEventListener("change", (event) => {
  state.chartQueue = event.target.value;
  renderChart();
});

connection.start();
window.__wallboard = state; // for tests and the curious: the latest figures

// The agent desktop: state kept from the server's messages (docs/desktop-protocol.md),
// the page drawn from it, the agent's clicks and shortcuts turned into commands.

import { DesktopConnection } from "./desktop-connection.js";
import {
  $, el, setText, show, addError, label, duration, when,
  STATE_LABELS, STAGE_LABELS, REASON_LABELS, RULE_LABELS,
  renderQueues, renderCustomer, renderHistory, renderIvr, renderPopCallbacks, renderCallbacks,
} from "./desktop-render.js";

const DISPOSITION = /^[a-z0-9_.-]{1,40}$/;
const DIAL_NUMBER = /^[0-9 +\-()*#]{2,32}$/;
const SUPERVISOR_ROLES = new Set(["supervisor", "admin"]);

// `/desktop?agent=ID`: a supervisor watching that agent's desktop, read-only (the server
// refuses every command of such a connection; the page hides the agent's controls too).
const watched = new URLSearchParams(location.search).get("agent");
if (watched !== null) document.body.dataset.watching = watched;

const model = {
  me: null,
  connection: "connecting",
  readOnly: Boolean(watched),
  clockOffsetMs: 0, // server time - local time
  agent: null,
  reasonCodes: [],
  features: { call_controls: false, scheduled_callbacks: false },
  offer: null, // the offer body while it rings
  calls: new Map(), // call_id -> {call_id, queue, caller, stage, since, on_hold, pop}
  lastCall: null, // the call that ended, shown until its wrap-up is saved or another comes
  wrapUp: null, // the server's wrap_up body while the agent is in wrap-up
  wrapForm: null, // {call_id, sentId, sent} the form's call, kept until the server acks it
  queues: [],
  callbacks: [],
  profiles: new Map(), // call_id -> {customer, interactions} chosen or created on the page
  pending: new Map(), // command id -> {type, fields}
};

// -- clock ---------------------------------------------------------------------------------

const serverNow = () => Date.now() + model.clockOffsetMs;
const secondsSince = (iso) => (iso ? (serverNow() - Date.parse(iso)) / 1000 : 0);
const secondsUntil = (iso) => (iso ? (Date.parse(iso) - serverNow()) / 1000 : 0);

function noteServerTime(at) {
  const t = Date.parse(at);
  if (!Number.isNaN(t)) model.clockOffsetMs = t - Date.now();
}

// -- connection ----------------------------------------------------------------------------

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/desktop${
  watched ? `?agent=${encodeURIComponent(watched)}` : ""
}`;

const connection = new DesktopConnection(wsUrl, {
  onMessage: receive,
  onStatus: connectionStatus,
  onUnauthenticated: () => {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  },
});

let retryAt = null;

function connectionStatus(status, detail) {
  model.connection = status;
  retryAt = status === "disconnected" ? detail.retryAt : null;
  if (status !== "connected") model.pending.clear(); // answers to those will never come
  if (status === "forbidden") addError(`无法打开桌面 · Desktop refused: ${detail.reason}`, "forbidden");
  drawConnection();
  drawControls();
}

function drawConnection() {
  const box = $("connection");
  box.dataset.status = model.connection;
  let text;
  switch (model.connection) {
    case "connected":
      text = "已连接 · Connected";
      break;
    case "connecting":
      text = "连接中 · Connecting…";
      break;
    case "forbidden":
      text = "已拒绝 · Refused";
      break;
    default: {
      const s = retryAt ? Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) : 0;
      text = `已断开，${s} 秒后重连 · Disconnected, retrying in ${s} s`;
    }
  }
  if (box.lastElementChild.textContent !== text) setText("connection-text", text);
}

/** Send a command the agent asked for; say so when it cannot go out. */
function command(type, fields = {}) {
  if (model.readOnly) {
    addError("只读视图，不能操作 · Read-only view: commands are disabled", "read_only");
    return null;
  }
  const id = connection.send(type, fields);
  if (id === null) {
    addError("未连接，命令未发送 · Not connected: the command was not sent", "offline");
    return null;
  }
  model.pending.set(id, { type, fields });
  return id;
}

// -- messages from the server --------------------------------------------------------------

function receive(msg) {
  if (msg.at) noteServerTime(msg.at);
  const handler = HANDLERS[msg.type];
  if (handler) handler(msg);
  draw();
}

const body = (msg) => {
  const { type, v, at, ...rest } = msg;
  return rest;
};

const HANDLERS = {
  snapshot(msg) {
    model.readOnly = Boolean(msg.read_only);
    model.agent = msg.agent;
    model.reasonCodes = msg.reason_codes || [];
    model.features = msg.features || {};
    model.offer = msg.offer || null;
    model.calls = new Map((msg.calls || []).map((c) => [c.call_id, { ...c }]));
    model.wrapUp = msg.wrap_up || null;
    model.queues = msg.queues || [];
    model.pending.clear();
    if (model.offer || model.calls.size) model.lastCall = null;
    if (model.wrapUp) ensureWrapForm(model.wrapUp.call_id);
    // A wrap-up sent but not acknowledged before the drop goes again (the server keeps the last).
    if (model.wrapForm && model.wrapForm.sent && !model.readOnly) sendWrapUp(model.wrapForm.sent);
    drawReasonCodes();
    connection.send("list_callbacks"); // allowed read-only too
  },
  pong() {},
  agent_state(msg) {
    const agent = model.agent || {};
    model.agent = { ...agent, state: msg.state, since: msg.since, reason: msg.reason, call_id: msg.call_id };
    if (model.offer && msg.state === "on_call" && msg.call_id === model.offer.call_id) {
      // Answered: the offer becomes the call (call_progress "answered" says the same).
      const o = model.offer;
      const live = model.calls.get(o.call_id);
      model.calls.set(o.call_id, {
        call_id: o.call_id, queue: o.queue, caller: o.caller, on_hold: false,
        ...(live || {}), pop: o.pop, offer: o, stage: "answered", since: msg.since,
      });
      model.offer = null;
    } else if (model.offer && msg.state !== "reserved") {
      model.offer = null;
    }
    if (msg.state !== "wrap_up") model.wrapUp = null;
  },
  offer(msg) {
    const offer = body(msg);
    model.offer = offer;
    model.lastCall = null; // the form of a previous call stays: the agent may still save it
    // The same offer again (the pop completed): every view of that call gets the new pop.
    const live = model.calls.get(offer.call_id);
    if (live) {
      live.pop = offer.pop;
      live.offer = offer;
    }
  },
  offer_withdrawn(msg) {
    if (model.offer && model.offer.call_id === msg.call_id) model.offer = null;
    addError(`来电已撤回 · Offer withdrawn: ${msg.reason}`, "offer_withdrawn");
  },
  pop(msg) {
    // The complete screen-pop of a call answered before its look-up ended.
    const call = model.calls.get(msg.call_id);
    if (call) call.pop = msg.pop;
  },
  call_progress(msg) {
    const id = msg.call_id;
    let call = model.calls.get(id);
    if (!call && model.offer && model.offer.call_id === id) {
      const o = model.offer;
      call = { call_id: id, queue: o.queue, caller: o.caller, stage: "ringing", since: o.offered_at, on_hold: false, pop: o.pop, offer: o };
    }
    if (!call) call = { call_id: id, queue: "", caller: msg.detail?.number || "", stage: msg.stage, since: msg.since, on_hold: false, pop: null };
    if (model.offer && model.offer.call_id === id) call.pop = model.offer.pop; // the latest pop
    switch (msg.stage) {
      case "ringing":
        call.stage = "ringing";
        call.since = msg.since;
        model.calls.set(id, call);
        break;
      case "answered":
        call.stage = "answered";
        call.since = msg.since;
        model.calls.set(id, call);
        if (model.offer && model.offer.call_id === id) model.offer = null;
        model.lastCall = null;
        break;
      case "on_hold":
        call.on_hold = true;
        call.stage = "on_hold";
        model.calls.set(id, call);
        break;
      case "resumed":
        call.on_hold = false;
        call.stage = "answered";
        model.calls.set(id, call);
        break;
      case "transferred":
      case "ended":
        model.calls.delete(id);
        if (model.offer && model.offer.call_id === id) model.offer = null;
        model.lastCall = { ...call, stage: msg.stage, ended_at: msg.at, detail: msg.detail || {} };
        if (call.stage !== "ringing" || msg.stage === "transferred") ensureWrapForm(id);
        break;
      default:
        break;
    }
  },
  wrap_up(msg) {
    model.wrapUp = body(msg);
    ensureWrapForm(msg.call_id);
  },
  queue_figures(msg) {
    model.queues = msg.queues || [];
  },
  callbacks(msg) {
    model.callbacks = msg.callbacks || [];
  },
  ack(msg) {
    const sent = model.pending.get(msg.re);
    model.pending.delete(msg.re);
    if (msg.for === "wrap_up" && model.wrapForm && model.wrapForm.sentId === msg.re) {
      const followUp = msg.detail && msg.detail.follow_up;
      model.wrapForm = null;
      resetWrapForm();
      flash(`话后已保存 · Wrap-up saved${followUp ? ` (回呼 follow-up: ${followUp})` : ""}`);
      if (model.lastCall && model.lastCall.call_id === msg.detail?.call_id) model.lastCall = null;
      connection.send("list_callbacks");
    }
    if (sent && sent.type === "dial") flash("正在拨号 · Dialling…");
  },
  error(msg) {
    const sent = msg.re ? model.pending.get(msg.re) : null;
    if (msg.re) model.pending.delete(msg.re);
    const what = msg.for ? `${msg.for}: ` : "";
    addError(`${what}${msg.message}`, msg.code);
    if (model.wrapForm && msg.re && msg.re === model.wrapForm.sentId) {
      model.wrapForm.sent = null; // refused: the agent fixes the form and saves again
      model.wrapForm.sentId = null;
      setText("wrap-status", `未保存 · Not saved: ${msg.message}`);
    }
    if (sent && sent.type === "dial") $("dial-number").focus();
  },
};

function ensureWrapForm(callId) {
  if (model.wrapForm && model.wrapForm.call_id === callId) return;
  if (model.wrapForm && model.wrapForm.sent) return; // one in flight: it is resent until acked
  model.wrapForm = { call_id: callId, sentId: null, sent: null };
  resetWrapForm();
}

function resetWrapForm() {
  $("wrap-form").reset();
  setText("wrap-status", "");
}

let flashTimer = null;

function flash(text) {
  setText("notice", text);
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => setText("notice", ""), 8000);
}

// -- drawing -------------------------------------------------------------------------------

function currentCall() {
  if (model.offer) {
    const o = model.offer;
    const live = model.calls.get(o.call_id);
    // The agent's phone rings for the offer: shown as the offer, with its ring countdown.
    if (live) return { ...live, stage: live.stage === "ringing" ? "offered" : live.stage, pop: o.pop || live.pop, offer: o };
    return { call_id: o.call_id, queue: o.queue, queue_title: o.queue_title, caller: o.caller, stage: "offered", since: o.offered_at, on_hold: false, pop: o.pop, offer: o };
  }
  const calls = [...model.calls.values()];
  if (calls.length) return calls[calls.length - 1];
  return model.lastCall;
}

function draw() {
  drawAgent();
  drawCall();
  drawWrapUp();
  renderQueues(model.queues);
  renderCallbacks(model.callbacks, canDial());
  drawControls();
  drawWho();
}

function drawWho() {
  const me = model.me;
  const who = $("who");
  const parts = [];
  if (me) parts.push(el("span", { text: me.name || me.login }), el("span", { cls: "muted", text: ` (${me.login}, ${me.role})` }));
  if (model.agent && model.agent.id) parts.push(el("span", { cls: "muted", text: ` · 坐席 agent ${model.agent.id}` }));
  if (who.dataset.drawn !== JSON.stringify([me && me.login, model.agent && model.agent.id])) {
    who.replaceChildren(...parts);
    who.dataset.drawn = JSON.stringify([me && me.login, model.agent && model.agent.id]);
  }
  show("read-only-banner", model.readOnly);
  const id = (model.agent && model.agent.id) || watched || "";
  const name = model.agent && model.agent.name ? `${model.agent.name} (${id})` : id;
  setText("watched-agent", name);
  show("watch-title", model.readOnly);
  setText("watch-agent-name", name);
  if (model.readOnly) document.body.dataset.watching = id;
}

function drawAgent() {
  const agent = model.agent;
  const state = agent ? agent.state : "unknown";
  const badge = $("agent-state");
  badge.dataset.state = state;
  badge.textContent = label(STATE_LABELS, state);
  setText("agent-reason", agent && agent.reason ? label(REASON_LABELS, agent.reason) : "");
  setText("agent-name", agent ? `${agent.name || ""} ${agent.queues && agent.queues.length ? `· ${agent.queues.join(", ")}` : ""}` : "");
  const short = label(STATE_LABELS, state).split(" · ")[0];
  document.title = model.readOnly
    ? `查看 ${(agent && agent.name) || watched || ""} · ${short} — 只读 · Watching (read-only)`
    : `${short} — 坐席桌面 · Agent desktop`;
}

function drawReasonCodes() {
  const select = $("reason-code");
  const chosen = select.value;
  select.replaceChildren(...model.reasonCodes.map((code) => el("option", { text: label(REASON_LABELS, code), attrs: { value: code } })));
  if (model.reasonCodes.includes(chosen)) select.value = chosen;
  const queues = $("transfer-queues");
  queues.replaceChildren(...model.queues.map((q) => el("option", { attrs: { value: q.queue }, text: q.title || q.queue })));
}

let drawnPop = null; // [call_id, pop object, profile override] last drawn, to redraw only on change

function drawCall() {
  const call = currentCall();
  show("no-call", !call);
  show("call-panel", Boolean(call));
  if (!call) {
    drawnPop = null;
    return;
  }
  const stage = call.on_hold ? "on_hold" : call.stage;
  const badge = $("call-stage");
  badge.dataset.stage = stage;
  badge.textContent = label(STAGE_LABELS, stage);
  setText("call-caller", call.caller || (call.pop && call.pop.number) || "");
  setText("call-queue", call.queue_title || (call.offer && call.offer.queue_title) || call.queue || "");
  const pop = call.pop;
  setText("call-waited", pop && typeof pop.waited_s === "number" ? `等待 · Waited ${duration(pop.waited_s)}` : "");
  const profile = model.profiles.get(call.call_id) || null;
  if (!drawnPop || drawnPop[0] !== call.call_id || drawnPop[1] !== pop || drawnPop[2] !== profile) {
    drawPop(call, pop, profile);
    drawnPop = [call.call_id, pop, profile];
  }
  tickCall();
}

function drawPop(call, pop, profile) {
  $("pop").dataset.callId = call.call_id;
  $("pop").dataset.complete = pop ? String(Boolean(pop.complete)) : "false";
  show("pop-loading", Boolean(pop && !pop.complete));
  show("pop-problem", Boolean(pop && pop.problem));
  setText("pop-problem", pop && pop.problem ? `客户资料暂不可用 · Customer data unavailable: ${pop.problem}` : "");
  const reason = pop && pop.reason;
  show("reason", Boolean(reason));
  if (reason) {
    setText("reason-text", reason.text);
    setText("reason-rule", label(RULE_LABELS, reason.rule));
    setText("reason-explanation", reason.explanation || "");
  }
  const customer = profile ? profile.customer : pop && pop.customer;
  const interactions = profile ? profile.interactions : (pop && pop.interactions) || [];
  renderCustomer(customer);
  const mayPlay = Boolean(model.me && SUPERVISOR_ROLES.has(model.me.role));
  renderHistory(interactions, mayPlay);
  renderIvr(pop && pop.ivr);
  renderPopCallbacks(pop && pop.callbacks);
  const others = (pop && pop.other_matches) || [];
  show("other-matches", others.length > 0);
  $("other-match-list").replaceChildren(
    ...others.map((m) => el("button", { cls: "quiet small switch-customer", text: m.name, attrs: { type: "button", "data-customer": m.id } })),
  );
  const unknown = pop && pop.complete && !pop.customer && !profile ? pop.unknown_caller : null;
  show("unknown", Boolean(unknown));
  if (unknown) {
    setText("unknown-number", unknown.number);
    $("unknown").dataset.number = unknown.number;
    $("unknown").dataset.callId = call.call_id;
  }
}

function tickCall() {
  const call = currentCall();
  if (!call) return;
  let labelText = "";
  let seconds = 0;
  if (call.stage === "offered" && call.offer) {
    labelText = "振铃剩余 · Rings for";
    seconds = secondsUntil(call.offer.ring_deadline);
  } else if (call.stage === "ended" || call.stage === "transferred") {
    labelText = "通话 · Talked";
    seconds = call.detail && typeof call.detail.talk_s === "number" ? call.detail.talk_s : 0;
  } else {
    labelText = call.stage === "ringing" ? "振铃 · Ringing" : "通话 · Talking";
    seconds = secondsSince(call.since);
  }
  setText("call-timer-label", labelText);
  setText("call-timer", duration(seconds));
}

function drawWrapUp() {
  const form = model.wrapForm;
  show("wrap-up", Boolean(form));
  if (!form) return;
  setText("wrap-call", `· ${form.call_id}`);
  $("wrap-up").dataset.callId = form.call_id;
  tickWrapUp();
}

function tickWrapUp() {
  const wrap = model.wrapUp;
  const box = $("wrap-timer-box");
  if (wrap && model.wrapForm && wrap.call_id === model.wrapForm.call_id) {
    const left = secondsUntil(wrap.deadline);
    box.hidden = false;
    box.dataset.overdue = String(left <= 0);
    setText("wrap-timer", left > 0 ? `剩余 · left ${duration(left)}` : "已超时 · time up");
  } else {
    box.hidden = true;
  }
}

function tick() {
  if (model.agent) setText("agent-time", duration(secondsSince(model.agent.since)));
  tickCall();
  tickWrapUp();
  if (model.connection === "disconnected") drawConnection();
}

const canCommand = () => model.connection === "connected" && !model.readOnly && model.agent !== null;
const canDial = () => canCommand() && model.features.call_controls && !["on_call", "reserved"].includes(model.agent.state);

function activeCall() {
  const calls = [...model.calls.values()].filter((c) => c.stage !== "ringing" || c.offer === undefined);
  return calls.length ? calls[calls.length - 1] : null;
}

function drawControls() {
  const ok = canCommand();
  const state = model.agent ? model.agent.state : "unknown";
  const controls = Boolean(model.features.call_controls);
  const call = activeCall();
  const talking = call && ["answered", "on_hold", "resumed", "ringing"].includes(call.stage);
  const unavailable = controls ? "" : "本服务器暂不支持 · Not available on this server";
  const set = (id, enabled, title = "") => {
    const button = $(id);
    button.disabled = !enabled;
    button.title = enabled ? "" : title;
  };
  set("btn-ready", ok && ["logged_out", "not_ready", "wrap_up"].includes(state));
  set("btn-not-ready", ok && state !== "logged_out" && model.reasonCodes.length > 0);
  $("reason-code").disabled = !ok;
  set("btn-logout", ok && state !== "logged_out");
  set("btn-hold", ok && controls && talking && !call.on_hold && call.stage !== "ringing", unavailable);
  set("btn-unhold", ok && controls && talking && call.on_hold, unavailable);
  set("btn-transfer", ok && controls && talking, unavailable);
  set("btn-hang-up", ok && controls && talking, unavailable);
  set("btn-dial", canDial(), unavailable || "通话中不能外呼 · Not during a call");
  set("btn-wrap", !model.readOnly && model.connection === "connected" && Boolean(model.wrapForm) && !(model.wrapForm && model.wrapForm.sent));
  set("btn-callbacks", model.connection === "connected" && model.agent !== null);
  $("call-controls").hidden = !talking;
}

// -- the agent's actions -------------------------------------------------------------------

function press(id) {
  const button = $(id);
  if (!button.disabled) button.click();
}

function ready() {
  command("ready");
}

function notReady() {
  const reason = $("reason-code").value || model.reasonCodes[0];
  if (reason) command("not_ready", { reason });
}

function callCommand(type, extra = {}) {
  const call = activeCall();
  if (call) command(type, { call_id: call.call_id, ...extra });
}

function sendWrapUp(fields) {
  const id = connection.send("wrap_up", fields);
  if (id === null) return; // sent again once reconnected
  model.pending.set(id, { type: "wrap_up", fields });
  model.wrapForm.sentId = id;
  setText("wrap-status", "保存中… · Saving…");
}

function submitWrapUp(event) {
  event.preventDefault();
  const form = model.wrapForm;
  if (!form || model.readOnly) return;
  const disposition = $("wrap-disposition").value.trim().toLowerCase();
  if (!DISPOSITION.test(disposition)) {
    addError("处理结果只能含 a-z 0-9 _ - . · Disposition: 1-40 of a-z 0-9 _ - .", "bad_value");
    $("wrap-disposition").focus();
    return;
  }
  let followUp = null;
  const local = $("wrap-follow-up").value;
  if (local) {
    const date = new Date(local);
    if (Number.isNaN(date.getTime()) || date.getTime() <= Date.now()) {
      addError("回呼时间须在将来 · The follow-up time must be in the future", "bad_value");
      return;
    }
    followUp = date.toISOString();
  }
  const fields = {
    call_id: form.call_id,
    disposition,
    notes: $("wrap-notes").value,
    resolved: $("wrap-resolved").checked,
    follow_up_at: followUp,
  };
  form.sent = fields;
  if (!connection.connected) {
    setText("wrap-status", "未连接，重连后自动保存 · Offline: saved when reconnected");
    drawControls();
    return;
  }
  sendWrapUp(fields);
  drawControls();
}

function transfer(event) {
  event.preventDefault();
  const kind = $("transfer-kind").value;
  const to = $("transfer-to").value.trim();
  if (!to) {
    $("transfer-to").focus();
    return;
  }
  if (kind === "number" && !validNumber(to)) {
    addError("号码格式不对 · Not a phone number", "bad_value");
    return;
  }
  callCommand("transfer", { target: { kind, to } });
}

const validNumber = (number) => DIAL_NUMBER.test(number) && (number.match(/\d/g) || []).length >= 2;

function dial(number) {
  if (model.readOnly) return;
  const value = number.trim();
  if (!validNumber(value)) {
    addError("号码格式不对 · Not a phone number", "bad_value");
    return;
  }
  if (!canDial()) {
    addError("现在不能外呼 · Cannot dial now", "not_available");
    return;
  }
  command("dial", { number: value });
}

// Shortcuts work anywhere on the page, also while typing notes: Alt+letter by key position.
const SHORTCUTS = {
  KeyR: () => press("btn-ready"),
  KeyN: () => press("btn-not-ready"),
  KeyH: () => press("btn-hang-up"),
  KeyW: () => {
    if (model.wrapForm && !model.readOnly) $("wrap-notes").focus();
  },
};

function onKey(event) {
  if (!event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
  const action = SHORTCUTS[event.code];
  if (!action) return;
  event.preventDefault();
  action();
}

// -- unknown caller: create a customer or link the number (REST API) -----------------------

async function api(method, path, payload) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: payload ? { "Content-Type": "application/json", Accept: "application/json" } : { Accept: "application/json" },
    body: payload ? JSON.stringify(payload) : undefined,
  });
  if (response.status === 401) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new Error("signed out");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new Error((data && data.error) || `HTTP ${response.status}`);
  return data;
}

const popCustomer = (c) => ({
  id: c.id, name: c.name, grade: c.grade, value: c.value, language: c.language,
  preferred_channel: c.preferred_channel, notes: c.notes,
  numbers: (c.phones || []).map((p) => ({ number: p.number, label: p.label })),
  accounts: c.accounts || [],
});

const popInteraction = (i) => ({
  id: i.id, at: i.started_at, channel: i.channel, direction: i.direction, queue: i.queue,
  agent: i.agent_name || i.agent_login, disposition: i.disposition, notes: i.notes, resolved: i.resolved,
  recording: { available: Boolean(i.recording_path), url: null },
});

async function showCustomer(callId, customer) {
  let interactions = [];
  try {
    const history = await api("GET", `/api/customers/${customer.id}/history?limit=10`);
    interactions = history.interactions.map(popInteraction);
  } catch (error) {
    addError(`读取联络记录失败 · Could not read the history: ${error.message}`, "history");
  }
  model.profiles.set(callId, { customer: popCustomer(customer), interactions });
  draw();
}

async function createCustomer(event) {
  event.preventDefault();
  if (model.readOnly) return;
  const box = $("unknown");
  const name = $("new-name").value.trim();
  if (!name) return;
  try {
    const customer = await api("POST", "/api/customers", {
      name, notes: $("new-notes").value.trim(), phones: [{ number: box.dataset.number, label: "" }],
    });
    setText("unknown-message", `已新建客户 · Customer created: ${customer.name}`);
    $("create-customer").reset();
    await showCustomer(box.dataset.callId, customer);
  } catch (error) {
    addError(`新建客户失败 · Could not create the customer: ${error.message}`, "customers");
  }
}

async function searchCustomers(event) {
  event.preventDefault();
  if (model.readOnly) return;
  const query = $("link-query").value.trim();
  if (!query) return;
  const param = /^[0-9 +\-()]+$/.test(query) ? "phone" : "q";
  try {
    const found = await api("GET", `/api/customers?${param}=${encodeURIComponent(query)}&limit=10`);
    const items = found.customers.map((c) =>
      el("li", {}, [
        el("span", { text: c.name }),
        el("span", { cls: "muted", text: (c.phones || []).map((p) => p.number).join(", ") }),
        el("button", { cls: "small link-customer", text: "关联 · Link", attrs: { type: "button", "data-customer": c.id } }),
      ]),
    );
    $("link-results").replaceChildren(...(items.length ? items : [el("li", { cls: "muted", text: "没有找到 · Nothing found" })]));
  } catch (error) {
    addError(`搜索失败 · Search failed: ${error.message}`, "customers");
  }
}

async function linkCustomer(customerId) {
  if (model.readOnly) return;
  const box = $("unknown");
  try {
    const customer = await api("PATCH", `/api/customers/${encodeURIComponent(customerId)}`, {
      add_phones: [{ number: box.dataset.number, label: "" }],
    });
    setText("unknown-message", `号码已关联 · Number linked to ${customer.name}`);
    $("link-results").replaceChildren();
    await showCustomer(box.dataset.callId, customer);
  } catch (error) {
    addError(`关联失败 · Could not link the number: ${error.message}`, "customers");
  }
}

async function switchCustomer(customerId) {
  const call = currentCall();
  if (!call) return;
  try {
    await showCustomer(call.call_id, await api("GET", `/api/customers/${encodeURIComponent(customerId)}`));
  } catch (error) {
    addError(`读取客户失败 · Could not read the customer: ${error.message}`, "customers");
  }
}

async function signOut() {
  connection.stop();
  try {
    await fetch("/logout", { method: "POST", credentials: "same-origin" });
  } finally {
    location.assign("/login");
  }
}

// -- start ---------------------------------------------------------------------------------

function wire() {
  $("btn-ready").addEventListener("click", ready);
  $("btn-not-ready").addEventListener("click", notReady);
  $("btn-logout").addEventListener("click", () => command("logout"));
  $("btn-hold").addEventListener("click", () => callCommand("hold"));
  $("btn-unhold").addEventListener("click", () => callCommand("unhold"));
  $("btn-hang-up").addEventListener("click", () => callCommand("hang_up"));
  $("transfer-form").addEventListener("submit", transfer);
  $("wrap-form").addEventListener("submit", submitWrapUp);
  $("dial-form").addEventListener("submit", (event) => {
    event.preventDefault();
    dial($("dial-number").value);
  });
  $("btn-callbacks").addEventListener("click", () => {
    if (connection.send("list_callbacks") === null) addError("未连接，命令未发送 · Not connected: the command was not sent", "offline");
  });
  $("create-customer").addEventListener("submit", createCustomer);
  $("link-customer").addEventListener("submit", searchCustomers);
  $("sign-out").addEventListener("click", signOut);
  document.addEventListener("click", (event) => {
    const target = event.target.closest("button");
    if (!target) return;
    if (target.classList.contains("dial-number")) dial(target.dataset.number);
    else if (target.classList.contains("link-customer")) linkCustomer(target.dataset.customer);
    else if (target.classList.contains("switch-customer")) switchCustomer(target.dataset.customer);
  });
  document.addEventListener("keydown", onKey);
}

async function whoAmI() {
  try {
    model.me = await api("GET", "/api/me");
    draw();
  } catch {
    // shown again after the next message; the socket decides whether we are signed in
  }
}

wire();
draw();
whoAmI();
connection.start();
setInterval(tick, 250);

// For the browser tests and the curious: the page's model, read-only in spirit.
window.ctiDesktop = { model, connection };

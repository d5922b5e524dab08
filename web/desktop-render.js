// Rendering helpers of the agent desktop. Every text from the server goes into the page
// through textContent (el(..., {text})) or attribute values, never as HTML.

export const $ = (id) => document.getElementById(id);

/** An element with text and attributes; children appended in order (strings become text). */
export function el(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  if (options.cls) node.className = options.cls;
  if (options.text !== undefined && options.text !== null) node.textContent = String(options.text);
  if (options.title) node.title = options.title;
  for (const [name, value] of Object.entries(options.attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

export function setText(id, value) {
  const node = $(id);
  node.textContent = value === null || value === undefined ? "" : String(value);
  return node;
}

export function show(id, visible) {
  $(id).hidden = !visible;
}

export const STATE_LABELS = {
  logged_out: "已签出 · Logged out",
  available: "就绪 · Available",
  reserved: "振铃 · Ringing",
  on_call: "通话中 · On call",
  wrap_up: "话后 · Wrap-up",
  not_ready: "暂停 · Not ready",
  unknown: "— · Unknown",
};

export const STAGE_LABELS = {
  offered: "来电振铃 · Incoming",
  ringing: "振铃 · Ringing",
  answered: "通话中 · Talking",
  on_hold: "保持中 · On hold",
  resumed: "通话中 · Talking",
  transferred: "已转接 · Transferred",
  ended: "已结束 · Ended",
};

export const REASON_LABELS = {
  break: "休息 · Break",
  lunch: "午餐 · Lunch",
  meeting: "会议 · Meeting",
  training: "培训 · Training",
  coaching: "辅导 · Coaching",
  admin: "事务 · Admin",
  personal: "私事 · Personal",
  "no answer": "未接听 · No answer",
  busy: "忙 · Busy",
  unreachable: "无法接通 · Unreachable",
};

export const RULE_LABELS = {
  repeat_today: "今日重复来电 · repeat caller today",
  unresolved_recent: "近期未解决 · unresolved recently",
  ivr_choice: "IVR 选择 · IVR choice",
  queue: "队列 · queue",
};

export const CHANNEL_LABELS = {
  phone: "电话 · Phone",
  email: "邮件 · Email",
  sms: "短信 · SMS",
  chat: "在线 · Chat",
  wechat: "微信 · WeChat",
};

export const CALLBACK_STATUS = {
  waiting: "等待 · Waiting",
  offered: "振铃 · Offered",
  scheduled: "已预约 · Scheduled",
};

export const label = (table, key) => (key in table ? table[key] : key);

/** 75 -> "1:15", 3725 -> "1:02:05"; negative counts as zero. */
export function duration(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

const DATE_FORMAT = new Intl.DateTimeFormat("zh-CN", {
  year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
});

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : DATE_FORMAT.format(date);
}

export function money(value) {
  if (value === null || value === undefined || value === "") return "—";
  const number = Number(value);
  if (!Number.isFinite(number)) return String(value);
  return number.toLocaleString("zh-CN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

// -- sections ------------------------------------------------------------------------------

export function renderQueues(queues) {
  const rows = (queues || []).map((q) =>
    el("tr", { attrs: { "data-queue": q.queue } }, [
      el("td", { text: q.title ? `${q.title} (${q.queue})` : q.queue, title: q.open ? "" : "已关闭 · closed" }),
      el("td", { cls: "num", text: q.waiting, attrs: { "data-field": "waiting" } }),
      el("td", { cls: "num", text: duration(q.longest_wait_s || 0), attrs: { "data-field": "longest" } }),
      el("td", { cls: "num", text: q.estimated_wait_s === null || q.estimated_wait_s === undefined ? "—" : duration(q.estimated_wait_s) }),
    ]),
  );
  $("queue-rows").replaceChildren(...(rows.length ? rows : [emptyRow(4)]));
}

export function emptyRow(columns, text = "—") {
  return el("tr", { cls: "empty" }, [el("td", { text, attrs: { colspan: columns } })]);
}

export function renderCustomer(customer) {
  show("profile-fields", Boolean(customer));
  show("profile-empty", !customer);
  if (!customer) return;
  setText("cust-name", customer.name);
  const grade = $("cust-grade");
  grade.replaceChildren(customer.grade ? el("span", { cls: "grade", text: customer.grade }) : "—");
  setText("cust-value", money(customer.value));
  setText("cust-language", customer.language || "—");
  setText("cust-channel", customer.preferred_channel ? label(CHANNEL_LABELS, customer.preferred_channel) : "—");
  setText("cust-notes", customer.notes || "—");
  $("cust-numbers").replaceChildren(
    ...(customer.numbers || []).map((n) =>
      el("li", {}, [
        el("span", { text: n.number }),
        n.label ? el("span", { cls: "muted", text: ` (${n.label}) ` }) : " ",
        el("button", { cls: "quiet small dial-number", text: "拨打 · Dial", attrs: { type: "button", "data-number": n.number } }),
      ]),
    ),
  );
  $("cust-accounts").replaceChildren(
    ...(customer.accounts || []).map((a) => el("li", { text: a.kind ? `${a.number} (${a.kind})` : a.number })),
  );
}

export function renderHistory(interactions, mayPlay) {
  const rows = (interactions || []).map((item) => {
    const recording = item.recording || {};
    let cell;
    if (mayPlay && recording.url) {
      cell = el("a", { text: "播放 · Play", attrs: { href: recording.url, target: "_blank", rel: "noopener" } });
    } else {
      cell = el("span", { cls: "muted", text: recording.available ? "有 · yes" : "—" });
    }
    return el("tr", { attrs: { "data-interaction": item.id } }, [
      el("td", { text: when(item.at) }),
      el("td", { text: label(CHANNEL_LABELS, item.channel || "") + (item.direction === "outbound" ? " ↗" : "") }),
      el("td", { text: item.queue || "" }),
      el("td", { text: item.agent || "" }),
      el("td", { text: item.disposition || "" }),
      el("td", { cls: "notes", text: item.notes || "" }),
      el("td", { text: item.resolved === true ? "✔ 是 · yes" : item.resolved === false ? "✘ 否 · no" : "—" }),
      el("td", {}, [cell]),
    ]);
  });
  $("history-rows").replaceChildren(...(rows.length ? rows : [emptyRow(8, "没有记录 · No interactions")]));
}

export function renderIvr(ivr) {
  show("ivr", Boolean(ivr));
  if (!ivr) return;
  setText("ivr-flow", [ivr.flow, ivr.version ? `v${ivr.version}` : "", ivr.outcome || ""].filter(Boolean).join(" · "));
  $("ivr-path").replaceChildren(
    ...(ivr.path || []).map((step) => {
      const parts = [el("strong", { text: step.node }), el("span", { cls: "muted", text: ` ${step.type || ""}` })];
      if (step.keys) parts.push(" · 按键 keys ", el("kbd", { text: step.keys }));
      if (step.result !== undefined && step.result !== null) parts.push(` → ${step.result}`);
      return el("li", {}, parts);
    }),
  );
  const variables = Object.entries(ivr.variables || {});
  $("ivr-variables").replaceChildren(
    ...variables.flatMap(([name, value]) => [
      el("dt", { text: name }),
      el("dd", { text: typeof value === "object" ? JSON.stringify(value) : value }),
    ]),
  );
}

export function renderPopCallbacks(callbacks) {
  show("open-callbacks", Boolean(callbacks && callbacks.length));
  $("pop-callbacks").replaceChildren(
    ...(callbacks || []).map((cb) =>
      el("li", { text: `${cb.number} · ${cb.queue} · ${label(CALLBACK_STATUS, cb.status)} · ${when(cb.since)}` }),
    ),
  );
}

export function renderCallbacks(callbacks, canDial) {
  const rows = (callbacks || []).map((cb) =>
    el("tr", { attrs: { "data-callback": cb.call_id } }, [
      el("td", { text: cb.customer || "—" }),
      el("td", { text: cb.number }),
      el("td", { text: cb.queue }),
      el("td", { text: label(CALLBACK_STATUS, cb.status) }),
      el("td", { text: when(cb.due || cb.since) }),
      el("td", {}, [
        el("button", {
          cls: "quiet small dial-number", text: "拨打 · Dial",
          attrs: { type: "button", "data-number": cb.number, ...(canDial ? {} : { disabled: "" }) },
        }),
      ]),
    ]),
  );
  $("callback-rows").replaceChildren(...(rows.length ? rows : [emptyRow(6, "没有回呼 · No callbacks")]));
}

export function addError(text, code) {
  const box = $("errors");
  const item = el("div", { cls: "error-item", attrs: { "data-code": code || "" } }, [
    el("span", { text }),
    code ? el("code", { text: code }) : null,
    el("button", { cls: "quiet small", text: "×", title: "关闭 · Dismiss", attrs: { type: "button", "aria-label": "dismiss" } }),
  ]);
  item.querySelector("button").addEventListener("click", () => item.remove());
  box.prepend(item);
  while (box.children.length > 5) box.lastElementChild.remove();
}

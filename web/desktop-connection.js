// The desktop's websocket (docs/desktop-protocol.md): connect, reconnect with
// backoff, heartbeat, command ids. Knows nothing about the page's layout.

export const PROTOCOL_VERSION = 1;
const PING_EVERY_MS = 30_000;
const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

// Close codes of the protocol.
export const CLOSE = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  UNAUTHENTICATED: 4401,
  FORBIDDEN: 4403,
  IDLE: 4408,
  TOO_SLOW: 4429,
});

/**
 * One desktop connection. `handlers`:
 *   onMessage(msg)                        every server message (parsed JSON)
 *   onStatus(status, detail)              "connecting" | "connected" | "disconnected" | "forbidden";
 *                                         detail: {retryAt, attempt, reason}
 *   onUnauthenticated()                   the session is gone: go to /login
 */
export class DesktopConnection {
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.socket = null;
    this.attempt = 0;
    this.nextId = 1;
    this.stopped = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.opened = false;
    this.onOnline = () => this.reconnectNow();
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    if (this.socket) this.socket.close(CLOSE.NORMAL, "page closed");
  }

  get connected() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  /** Send a command; returns its id, or null when not connected (nothing is sent). */
  send(type, fields = {}) {
    if (!this.connected) return null;
    const id = `c${this.nextId++}`;
    this.socket.send(JSON.stringify({ type, v: PROTOCOL_VERSION, id, ...fields }));
    return id;
  }

  reconnectNow() {
    if (this.stopped || this.connected) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.opened = false;
    this.handlers.onStatus("connecting", { attempt: this.attempt });
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this.scheduleRetry(String(error));
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      this.opened = true;
      this.handlers.onStatus("connected", {});
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => {
        if (this.connected) this.socket.send(JSON.stringify({ type: "ping", v: PROTOCOL_VERSION }));
      }, PING_EVERY_MS);
    });
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return; // not ours to show: the protocol sends JSON only
      }
      if (msg === null || typeof msg !== "object") return;
      // A full snapshot means the connection works end to end: the backoff starts over.
      if (msg.type === "snapshot") this.attempt = 0;
      this.handlers.onMessage(msg);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      clearInterval(this.pingTimer);
      this.closed(event.code, event.reason, this.opened);
    });
  }

  async closed(code, reason, opened) {
    if (this.stopped) return;
    if (code === CLOSE.UNAUTHENTICATED) {
      this.handlers.onUnauthenticated();
      return;
    }
    if (code === CLOSE.FORBIDDEN) {
      this.handlers.onStatus("forbidden", { reason: reason || "forbidden" });
      return;
    }
    // A refused upgrade (the sign-in middleware answers 401) is only a 1006 on a socket that
    // never opened: ask who we are to tell a lost session from a server that is away.
    if (!opened && code === CLOSE.ABNORMAL) {
      try {
        const response = await fetch("/api/me", { credentials: "same-origin", cache: "no-store" });
        if (response.status === 401) {
          this.handlers.onUnauthenticated();
          return;
        }
      } catch {
        // the server is unreachable: retry below
      }
    }
    this.scheduleRetry(reason);
  }

  scheduleRetry(reason) {
    if (this.stopped) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = base + Math.random() * Math.min(1_000, base * 0.25);
    this.attempt += 1;
    const retryAt = Date.now() + delay;
    this.handlers.onStatus("disconnected", { retryAt, attempt: this.attempt, reason: reason || "" });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}

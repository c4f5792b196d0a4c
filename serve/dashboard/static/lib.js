// Shared helpers: the API client (cookie + CSRF header), live sockets, formatting, tiny DOM builder.
const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";

export class ApiError extends Error {
  constructor(status, body) { super(body?.message || `HTTP ${status}`); this.status = status; this.body = body; }
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = CSRF;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`/dashboard/api${path}`, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) { location.reload(); throw new ApiError(401, { message: "logged out" }); }
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// A WebSocket that reconnects from the last sequence seen; onEvent gets each event once, in order.
export function live(path, key, onEvent, after = 0) {
  let cursor = after, socket = null, closed = false, tries = 0;
  const dot = document.getElementById("live");
  const open = () => {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/dashboard/ws/${path}?after=${cursor}`;
    socket = new WebSocket(url);
    socket.onopen = () => { tries = 0; dot?.classList.add("on"); };
    socket.onmessage = (m) => {
      const event = JSON.parse(m.data);
      if (event.error) { toast(event.message, true); closed = true; return; }
      if (event[key] <= cursor) return;
      cursor = event[key];
      onEvent(event);
    };
    socket.onclose = () => {
      dot?.classList.remove("on");
      if (!closed) setTimeout(open, Math.min(5000, 250 * 2 ** tries++));
    };
  };
  open();
  return { close() { closed = true; socket?.close(); }, get cursor() { return cursor; } };
}

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const svg = (tag, attrs = {}) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
};

export function toast(text, bad = false) {
  const el = document.getElementById("toast");
  el.textContent = text; el.className = `show${bad ? " bad" : ""}`;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { el.className = ""; }, 3500);
}

export const pill = (status) => h("span", { class: `pill s-${status}`, "data-status": status }, status);

export function ago(t) {
  if (!t) return "—";
  const s = Date.now() / 1000 - t;
  if (s < 60) return `${Math.max(0, Math.round(s))}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return new Date(t * 1000).toLocaleString();
}
export const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
export function secs(x) {
  if (x === null || x === undefined) return "—";
  if (x < 1) return `${Math.round(x * 1000)} ms`;
  if (x < 120) return `${x.toFixed(1)} s`;
  return `${(x / 60).toFixed(1)} min`;
}
export const pct = (x) => (x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)}%`);

export function progressBar(job, big = false) {
  const fraction = job.status === "succeeded" ? 1 : (job.progress?.fraction ?? 0);
  const cls = `bar${big ? " big" : ""}${job.status === "succeeded" ? " done" : ""}${job.status === "failed" ? " bad" : ""}`;
  return h("div", { class: cls, role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
                    "aria-valuenow": Math.round(fraction * 100), "data-status": job.status },
           h("i", { style: `width:${(fraction * 100).toFixed(1)}%` }));
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

export function navigate(url) {
  history.pushState({}, "", url);
  window.dispatchEvent(new Event("dojo:navigate"));
}

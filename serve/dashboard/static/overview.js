// Queues overview: depth by status, running, last hour's throughput, failure rate, run times, a chart per queue.
import { api, live, h, svg, pill, ago, secs, pct, debounce, toast } from "./lib.js";

const ORDER = ["queued", "scheduled", "running", "retrying", "waiting", "sleeping", "succeeded", "failed", "cancelled", "expired"];

export function chart(series) {
  const n = series.succeeded.length, W = 400, H = 90, top = 6, bottom = 14;
  const max = Math.max(1, ...series.succeeded.map((v, i) => v + series.failed[i]));
  const el = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
                          role: "img", "aria-label": "jobs finished per minute, last hour" });
  const bw = W / n, scale = (H - top - bottom) / max;
  series.succeeded.forEach((ok, i) => {
    const bad = series.failed[i], x = i * bw + 0.5;
    if (ok) el.append(svg("rect", { class: "ok", x, width: Math.max(bw - 1, 1), y: H - bottom - ok * scale, height: ok * scale }));
    if (bad) el.append(svg("rect", { class: "bad", x, width: Math.max(bw - 1, 1), y: H - bottom - (ok + bad) * scale, height: bad * scale }));
  });
  el.append(svg("line", { class: "axis", x1: 0, x2: W, y1: H - bottom + 0.5, y2: H - bottom + 0.5 }));
  const label = (x, text, anchor) => { const t = svg("text", { x, y: H - 2, "text-anchor": anchor }); t.textContent = text; el.append(t); };
  label(2, "-60m", "start"); label(W - 2, "now", "end");
  const peak = svg("text", { x: 2, y: 10 }); peak.textContent = `max ${max}/min`; el.append(peak);
  return el;
}

// Pause, resume and purge (waiting jobs only; the queue's name must be typed to confirm).
function controls(q, rerender) {
  const act = async (action, body) => {
    try {
      const out = await api(`/queues/${encodeURIComponent(q.queue)}/${action}`, { method: "POST", body });
      toast(action === "purge" ? `${q.queue}: purged ${out.purged} waiting jobs` : `${q.queue}: ${action}d`);
      rerender();
    } catch (err) { toast(err.message, true); }
  };
  const purge = () => {
    const typed = prompt(`Purge deletes every waiting job of "${q.queue}" for good. Type the queue's name to confirm.`);
    if (typed !== null) act("purge", { confirm: typed });
  };
  return h("div", { class: "controls" },
    q.paused ? pill("paused") : null,
    (q.paused_types || []).length ? h("span", { class: "pill s-paused" }, `paused: ${q.paused_types.join(", ")}`) : null,
    h("button", { class: "queue-pause", onclick: () => act(q.paused ? "resume" : "pause") }, q.paused ? "Resume" : "Pause"),
    h("button", { class: "queue-purge", onclick: purge }, "Purge"));
}

function card(q, rerender) {
  if (q.error) return h("section", { class: "card" }, h("h2", {}, q.queue), h("p", { class: "muted" }, q.error));
  const w = q.window;
  const stat = (value, label) => h("div", { class: "stat" }, h("b", {}, value), h("span", {}, label));
  const waiting = q.counts.queued + q.counts.scheduled + q.counts.retrying;
  return h("section", { class: "card", "data-queue": q.queue },
    h("h2", {}, h("a", { href: `/dashboard/jobs?queue=${encodeURIComponent(q.queue)}` }, q.queue),
      h("span", { class: "muted" }, `${q.running} running · ${q.runners}/${q.concurrency} runners`)),
    h("div", { class: "depth" }, ORDER.filter((s) => q.counts[s]).map((s) =>
      h("a", { href: `/dashboard/jobs?queue=${encodeURIComponent(q.queue)}&status=${s}` }, pill(`${s} ${q.counts[s]}`)))),
    h("div", { class: "stats" },
      stat(waiting, "waiting"),
      stat(w.throughput_per_hour.toFixed(0), "finished / hour"),
      stat(pct(w.failure_rate), "failure rate"),
      stat(ago(q.oldest_queued_at).replace(" ago", ""), "oldest waiting"),
      stat(w.enqueued, "enqueued (1h)"),
      stat(secs(w.run_p50), "p50 run time"),
      stat(secs(w.run_p95), "p95 run time"),
      stat(w.retried, "retries (1h)")),
    controls(q, rerender),
    chart(q.series));
}

export function overview(main) {
  const sockets = [];
  const grid = h("div", { class: "cards" });
  main.append(h("h1", {}, "Queues"), grid);
  const render = async () => {
    const data = await api("/queues");
    grid.replaceChildren(...data.queues.map((q) => card(q, render)));
    return data;
  };
  const refresh = debounce(render, 1500);
  render().then((data) => {
    for (const q of data.queues) if (!q.error) sockets.push(live(`queues/${encodeURIComponent(q.queue)}`, "gseq", (e) => { if (e.kind === "status") refresh(); }, q.last_gseq));
  });
  return { stop() { sockets.forEach((s) => s.close()); } };
}

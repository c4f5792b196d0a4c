// One job: its state, progress (live), attempts, flow report, outputs, timeline and log lines; actions.
import { api, live, h, pill, when, secs, progressBar, toast, navigate } from "./lib.js";

const FINAL = ["succeeded", "failed", "cancelled", "expired"];
const json = (v) => JSON.stringify(v, null, 2);

function describe(event) {
  const d = event.data || {};
  if (event.kind === "status") return `status → ${d.status}${d.attempt ? ` (attempt ${d.attempt})` : ""}${d.error ? `: ${d.error}` : ""}${d.retried ? " (manual retry)" : ""}`;
  if (event.kind === "progress") return `progress ${d.fraction != null ? Math.round(d.fraction * 100) + "%" : ""} ${d.stage || ""} ${d.message || ""}`;
  return `${event.kind} ${json(d).slice(0, 120)}`;
}

function flowReport(children, jobId) {
  const counts = Object.entries(children.counts || {});
  const errors = Object.entries(children.errors || {}).sort((a, b) => b[1] - a[1]);
  const sums = Object.entries(children.sums || {});
  return h("section", { class: "card", id: "flow" },
    h("h2", {}, "Run report", h("a", { href: `/dashboard/jobs?queue=${jobId.includes(".") ? jobId.split(".")[1] : "default"}&parent=${jobId}` }, "children ⟶")),
    h("p", {}, `${children.final} of ${children.total} children finished`),
    h("div", { class: "depth" }, counts.map(([s, n]) => pill(`${s} ${n}`))),
    sums.length ? h("dl", { class: "kv" }, sums.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])) : null,
    errors.length ? [h("h2", {}, "Errors, grouped"), h("table", {}, h("tbody", {}, errors.map(([m, n]) => h("tr", {}, h("td", {}, String(n)), h("td", {}, m)))))] : null);
}

export function jobPage(main, id) {
  let job = null, socket = null;
  const head = h("div"), bar = h("div", { id: "progress" }), body = h("div", { class: "grid2" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const logs = h("pre", { id: "logs" });
  const editor = h("div");
  main.append(h("p", {}, h("a", { href: `/dashboard/jobs?queue=${id.includes(".") ? id.split(".")[1] : "default"}` }, "⟵ jobs")),
    head, bar, editor, body,
    h("div", { class: "grid2" },
      h("section", { class: "card" }, h("h2", {}, "Events"), timeline),
      h("section", { class: "card" }, h("h2", {}, "Logs"), logs)));

  async function act(action) {
    try {
      const answer = await api(`/jobs/${id}/${action}`, { method: "POST" });
      toast(`${action}: job is ${answer.status}`);
      await refresh();
    } catch (err) { toast(err.message, true); }
  }

  function duplicate() {
    const spec = { type: job.type, payload: job.payload, queue: job.queue, priority: job.priority, max_attempts: job.max_attempts, timeout: job.timeout };
    const area = h("textarea", { id: "spec", spellcheck: "false" }, json(spec));
    editor.replaceChildren(h("div", { class: "dialog" }, h("h2", {}, "Duplicate with edits"), area,
      h("div", { class: "actions" },
        h("button", { class: "primary", id: "submit-copy", onclick: async () => {
          let body;
          try { body = JSON.parse(area.value); } catch (err) { toast(`not valid JSON: ${err.message}`, true); return; }
          try { const copy = await api("/jobs", { method: "POST", body }); navigate(`/dashboard/jobs/${copy.id}`); }
          catch (err) { toast(err.message, true); }
        } }, "Enqueue copy"),
        h("button", { onclick: () => editor.replaceChildren() }, "Close"))));
  }

  function render() {
    const unfinished = !FINAL.includes(job.status);
    head.replaceChildren(
      h("h1", {}, job.type, " ", h("span", { id: "status" }, pill(job.status)), " ", h("small", { class: "muted id" }, job.id)),
      h("div", { class: "actions" },
        h("button", { id: "cancel", class: "danger", disabled: !unfinished, onclick: () => act("cancel") }, "Cancel"),
        h("button", { id: "retry", disabled: !["failed", "cancelled", "expired"].includes(job.status), onclick: () => act("retry") }, "Retry"),
        h("button", { id: "duplicate", onclick: duplicate }, "Duplicate with edits…")));
    renderProgress();
    const outputs = h("div", { id: "outputs" });
    body.replaceChildren(
      h("section", { class: "card" }, h("h2", {}, "Job"),
        h("dl", { class: "kv" },
          [["queue", job.queue], ["attempts", `${job.attempts} of ${job.max_attempts}`], ["priority", job.priority],
           ["created", when(job.created_at)], ["started", when(job.started_at)], ["finished", when(job.finished_at)],
           ["timeout", job.timeout ? secs(job.timeout) : "none"], ["parent", job.parent_id ? h("a", { href: `/dashboard/jobs/${job.parent_id}` }, job.parent_id) : "—"],
           ["running on", job.lease ? `${(job.lease.node || "?").slice(0, 12)} pid ${job.lease.pid ?? "?"}` : "—"],
           ...(job.wake ? [["sleeping", job.wake.channel
             ? `until a message on "${job.wake.channel}" matches ${JSON.stringify(job.wake.match)} (gives up ${when(job.wake.at)})`
             : `until ${when(job.wake.at)}`]] : []),
           ...(job.steps?.length ? [["steps done", job.steps.map((st) => st.name).join(", ")]] : []),
           ...(job.callback ? [["callback", `${job.callback.url} on ${job.callback.events.join(", ")}`]] : [])]
            .map(([k, v]) => [h("dt", {}, k), h("dd", { id: k === "sleeping" ? "wake" : null }, v)])),
        h("h2", {}, "Payload"), h("pre", { class: "light", id: "payload" }, json(job.payload)),
        h("h2", {}, "Result"), h("pre", { class: "light", id: "result" }, json(job.result)), outputs),
      h("section", { class: "card" }, h("h2", {}, "Attempts"),
        job.history?.length ? h("table", { id: "attempts" }, h("thead", {}, h("tr", {}, ["#", "outcome", "node", "duration", "ended"].map((t) => h("th", {}, t)))),
          h("tbody", {}, job.history.map((a) => [
            h("tr", {}, h("td", {}, a.attempt), h("td", {}, pill(a.outcome)), h("td", { class: "id" }, `${(a.node || "—").slice(0, 12)}${a.pid ? ` pid ${a.pid}` : ""}`),
              h("td", {}, secs(a.duration)), h("td", {}, when(a.ended_at))),
            a.error ? h("tr", {}, h("td", { colspan: 5 }, h("details", {}, h("summary", {}, `${a.error.type}: ${a.error.message}`),
              a.error.traceback ? h("pre", {}, a.error.traceback) : null))) : null])))
          : h("p", { class: "muted" }, "No finished attempts yet."),
        job.children ? flowReport(job.children, job.id) : null));
    if (job.callback) {
      api(`/jobs/${id}/deliveries`).then((d) => {
        body.append(h("section", { class: "card", id: "deliveries" }, h("h2", {}, "Callback deliveries"),
          d.deliveries.length ? h("table", {}, h("thead", {}, h("tr", {}, ["event", "state", "tries", "last answer"].map((t) => h("th", {}, t)))),
            h("tbody", {}, d.deliveries.map((x) => {
              const last = x.log[x.log.length - 1] || {};
              return h("tr", {}, h("td", {}, x.event), h("td", {}, pill(x.state)), h("td", {}, x.attempts),
                h("td", {}, last.status ? `HTTP ${last.status}` : (last.error || "—")));
            })))
            : h("p", { class: "muted" }, "None yet.")));
      }).catch(() => {});
    }
    if (job.result && typeof job.result === "object") {
      api(`/jobs/${id}/outputs`).then((o) => {
        outputs.replaceChildren(...(o.urls.video ? player(o.urls, job.result.language) : []),
          ...Object.entries(o.urls).map(([name, url]) => h("p", {},
            h("a", { href: url, target: "_blank", rel: "noopener" }, `${name} ⤓`))));
      }).catch(() => {});
    }
  }

  // A render's video: the thumbnail as poster, the narration as a captions track, and its
  // chapters (one per slide) as buttons that jump to each slide.
  function player(urls, language) {
    const lang = language || "und";
    const video = h("video", { id: "player", src: urls.video, controls: true, preload: "metadata", poster: urls.thumbnail },
      urls.subtitles_vtt ? h("track", { kind: "captions", src: urls.subtitles_vtt, srclang: lang, label: "Narration", default: true }) : null,
      urls.chapters_vtt ? h("track", { kind: "chapters", src: urls.chapters_vtt, srclang: lang, label: "Slides" }) : null);
    const list = h("ol", { id: "chapters", class: "chapters" });
    const chapters = video.querySelector("track[kind=chapters]");
    if (chapters) {
      chapters.track.mode = "hidden";  // load its cues without drawing them
      chapters.addEventListener("load", () => list.replaceChildren(...Array.from(chapters.track.cues).map((cue) =>
        h("li", {}, h("button", { type: "button", class: "link", onclick: () => { video.currentTime = cue.startTime; } },
          `${secs(cue.startTime)} · ${cue.text}`)))));
    }
    return [h("p", {}, video), list];
  }

  function renderProgress() {
    const p = job.progress || {};
    bar.replaceChildren(progressBar(job, true),
      h("p", { class: "muted", id: "progress-text" }, job.status === "succeeded" ? "done" : `${p.fraction != null ? Math.round(p.fraction * 100) + "% · " : ""}${p.stage || ""} ${p.message || ""}`));
  }

  // What the page shows is the job as of shownAt: replayed events up to then are history for the
  // timeline, and must not rebuild the page (a rebuilt player would drop back to its start).
  let shownAt = 0;
  async function refresh() {
    job = await api(`/jobs/${id}`);
    shownAt = job.updated_at || 0;
    render();
  }
  const refreshSoon = (() => { let t = null; return () => { clearTimeout(t); t = setTimeout(refresh, 150); }; })();

  function onEvent(event) {
    const d = event.data || {};
    if (event.kind === "log") {
      logs.append(...(d.lines || []).map((l) => `[${d.attempt ?? ""}] ${l}\n`));
      logs.scrollTop = logs.scrollHeight;
      return;
    }
    timeline.append(h("li", { "data-kind": event.kind }, h("time", {}, new Date(event.at * 1000).toLocaleTimeString()), describe(event)));
    timeline.scrollTop = timeline.scrollHeight;
    if (!job || event.at <= shownAt) return;
    if (event.kind === "progress") { job.progress = d; renderProgress(); }
    else if (event.kind === "status") {
      job.status = d.status;
      head.querySelector("#status")?.replaceChildren(pill(d.status));
      renderProgress();
      refreshSoon();
    }
  }

  refresh().then(() => { socket = live(`jobs/${encodeURIComponent(id)}`, "seq", onEvent, 0); })
    .catch((err) => main.replaceChildren(h("h1", {}, "Job not found"), h("p", { class: "muted" }, err.message)));
  return { stop() { socket?.close(); } };
}

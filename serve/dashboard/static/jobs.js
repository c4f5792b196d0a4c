// The jobs table: server-side filters kept in the URL, cursor pages, live rows, bulk actions.
import { api, live, h, pill, ago, progressBar, toast, debounce, navigate } from "./lib.js";

const STATUSES = ["queued", "scheduled", "running", "retrying", "waiting", "sleeping", "succeeded", "failed", "cancelled", "expired"];
const FIELDS = ["queue", "type", "status", "q", "since", "until", "order", "parent"];

const toLocal = (t) => { if (!t) return ""; const d = new Date(t * 1000); d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); return d.toISOString().slice(0, 16); };
const fromLocal = (v) => (v ? String(Math.floor(new Date(v).getTime() / 1000)) : "");

function row(job, selected) {
  const error = job.error?.message;
  return h("tr", { "data-id": job.id, "data-status": job.status },
    h("td", {}, h("input", { type: "checkbox", class: "pick", value: job.id, "aria-label": `select ${job.id}`, checked: selected.has(job.id),
      onchange: (e) => { e.target.checked ? selected.add(job.id) : selected.delete(job.id); selected.changed(); } })),
    h("td", { class: "id" }, h("a", { href: `/dashboard/jobs/${job.id}` }, job.id)),
    h("td", {}, job.type),
    h("td", { class: "group" }, job.group?.key || ""),
    h("td", { class: "status" }, pill(job.status)),
    h("td", { class: "progress" }, progressBar(job), h("small", { class: "muted msg" }, job.progress?.message || "")),
    h("td", { class: "attempts" }, `${job.attempts}/${job.max_attempts}`),
    h("td", { title: new Date(job.created_at * 1000).toLocaleString() }, ago(job.created_at)),
    h("td", { class: "error muted" }, error ? error.slice(0, 80) : ""));
}

export function jobs(main, params) {
  const filters = Object.fromEntries(FIELDS.map((f) => [f, params.get(f) || ""]));
  filters.queue ||= "default";
  const cursor = params.get("cursor") || "";
  const selected = new Set();
  const rows = new Map();
  let socket = null;

  const input = (name, attrs = {}) => h("input", { name, value: filters[name], ...attrs });
  const statusSelect = h("select", { name: "status" }, h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s, selected: filters.status === s }, s)));
  const orderSelect = h("select", { name: "order" }, h("option", { value: "newest", selected: filters.order !== "oldest" }, "newest first"),
    h("option", { value: "oldest", selected: filters.order === "oldest" }, "oldest first"));
  const form = h("form", { class: "filters", id: "filters", onsubmit: (e) => {
      e.preventDefault();
      const data = new FormData(form), next = new URLSearchParams();
      for (const f of FIELDS) {
        let v = (data.get(f) || "").toString().trim();
        if (f === "since" || f === "until") v = fromLocal(v);
        if (v && !(f === "order" && v === "newest")) next.set(f, v);
      }
      navigate(`/dashboard/jobs?${next}`);
    } },
    h("label", {}, "queue", input("queue", { size: 10 })),
    h("label", {}, "type", input("type", { size: 12, placeholder: "any" })),
    h("label", {}, "status", statusSelect),
    h("label", {}, "text in id / payload / error", input("q", { size: 18, type: "search" })),
    h("label", {}, "created after", h("input", { type: "datetime-local", name: "since", value: toLocal(+filters.since) })),
    h("label", {}, "created before", h("input", { type: "datetime-local", name: "until", value: toLocal(+filters.until) })),
    h("label", {}, "sort", orderSelect),
    filters.parent ? h("input", { type: "hidden", name: "parent", value: filters.parent }) : null,
    h("button", { class: "primary", type: "submit" }, "Filter"),
    h("a", { href: "/dashboard/jobs" }, "clear"));

  const count = h("span", { class: "muted" });
  const bulkButtons = ["cancel", "retry", "delete"].map((action) => h("button", {
    class: action === "delete" ? "danger" : "", "data-bulk": action, disabled: true,
    onclick: async () => {
      const ids = [...selected];
      if (action === "delete" && !confirm(`Delete ${ids.length} finished jobs?`)) return;
      try {
        const answer = await api("/bulk", { method: "POST", body: { action, ids } });
        toast(`${action}: ${answer.ok} done${answer.refused ? `, ${answer.refused} refused (${answer.results.find((r) => !r.ok).error})` : ""}`, answer.refused > 0);
        selected.clear(); selected.changed(); load();
      } catch (err) { toast(err.message, true); }
    } }, `${action[0].toUpperCase()}${action.slice(1)} selected`));
  // Every job of the filter (not just this page), through POST /v1/jobs/{action}; a text search cannot be one.
  const matchingButtons = ["cancel", "retry", "delete"].map((action) => h("button", {
    class: action === "delete" ? "danger" : "", "data-bulk-filter": action, disabled: !!filters.q || !!filters.parent,
    title: filters.q ? "clear the text search to act on every matching job" : "",
    onclick: async () => {
      if (!confirm(`${action[0].toUpperCase()}${action.slice(1)} every ${filters.status || ""} job matching these filters in "${filters.queue}"?`)) return;
      const filter = { queue: filters.queue };
      if (filters.type) filter.type = filters.type.split(",");
      if (filters.status) filter.status = [filters.status];
      if (filters.since) filter.created_after = +filters.since;
      if (filters.until) filter.created_before = +filters.until;
      try {
        const answer = await api("/bulk", { method: "POST", body: { action, filter } });
        toast(`${action}: ${answer.changed} changed${answer.next_cursor ? " (more remain: click again)" : ""}`);
        load();
      } catch (err) { toast(err.message, true); }
    } }, `${action[0].toUpperCase()}${action.slice(1)} all matching`));
  selected.changed = () => {
    count.textContent = selected.size ? `${selected.size} selected` : "";
    bulkButtons.forEach((b) => { b.disabled = selected.size === 0; });
  };
  const all = h("input", { type: "checkbox", "aria-label": "select all", onchange: (e) => {
    document.querySelectorAll("input.pick").forEach((box) => { box.checked = e.target.checked; e.target.checked ? selected.add(box.value) : selected.delete(box.value); });
    selected.changed();
  } });
  const tbody = h("tbody");
  const pager = h("div", { class: "pager" });
  main.append(h("h1", {}, "Jobs ", filters.parent ? h("small", { class: "muted" }, `children of ${filters.parent}`) : null),
    form, h("div", { class: "bulk" }, bulkButtons, count, matchingButtons),
    h("table", { id: "jobs" }, h("thead", {}, h("tr", {}, h("th", {}, all), ["id", "type", "group", "status", "progress", "attempts", "created", "error"].map((t) => h("th", {}, t)))), tbody),
    pager);

  const query = () => {
    const q = new URLSearchParams();
    for (const f of FIELDS) if (filters[f]) q.set(f, filters[f]);
    if (cursor) q.set("cursor", cursor);
    return q;
  };
  async function load() {
    try {
      const page = await api(`/jobs?${query()}`);
      rows.clear();
      tbody.replaceChildren(...page.jobs.map((j) => { const r = row(j, selected); rows.set(j.id, { el: r, job: j }); return r; }));
      if (!page.jobs.length) tbody.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No jobs match these filters.")));
      const links = [];
      if (cursor) { const q = query(); q.delete("cursor"); links.push(h("a", { href: `/dashboard/jobs?${q}` }, "⟵ first page")); }
      if (page.next_cursor) { const q = query(); q.set("cursor", page.next_cursor); links.push(h("a", { href: `/dashboard/jobs?${q}`, rel: "next" }, "next page ⟶")); }
      pager.replaceChildren(...links);
    } catch (err) { toast(err.message, true); }
  }
  const reload = debounce(load, 400);

  function onEvent(event) {
    const data = event.data || {};
    const known = rows.get(data.job_id);
    if (!known) {
      if (event.kind === "status" && event.seq === 1 && !cursor && filters.order !== "oldest") reload();
      return;
    }
    const job = known.job;
    if (event.kind === "status") { job.status = data.status; if (data.attempt !== undefined) job.attempts = data.attempt; if (data.error) job.error = { message: data.error }; }
    else if (event.kind === "progress") job.progress = { ...data };
    else return;
    const fresh = row(job, selected);
    fresh.classList.add("flash");
    known.el.replaceWith(fresh); known.el = fresh;
  }

  // Read the queue's event position first, so nothing that happens while the page loads is missed.
  api(`/queues?window=60&only=${encodeURIComponent(filters.queue)}`).then(async (info) => {
    await load();
    socket = live(`queues/${encodeURIComponent(filters.queue)}`, "gseq", onEvent, info.queues[0]?.last_gseq || 0);
  }).catch((err) => { toast(err.message, true); load(); });
  return { stop() { socket?.close(); } };
}

// Schedules: cron entries of every queue, next fire time, last run and its outcome; pause, resume, run now.
import { api, h, pill, when, toast } from "./lib.js";

export function schedules(main) {
  const box = h("div");
  main.append(h("h1", {}, "Schedules"), box);
  async function render() {
    const data = await api("/schedules");
    if (!data.schedules.length) { box.replaceChildren(h("p", { class: "muted" }, data.supported ? "No schedules yet (POST /v1/schedules adds one)." : "This dojo has no schedules.")); return; }
    const action = (s, name) => h("button", { onclick: async () => {
      try { await api(`/schedules/${s.queue}/${encodeURIComponent(s.name)}/${name}`, { method: "POST" }); toast(`${s.name}: ${name}`); render(); }
      catch (err) { toast(err.message, true); } } }, name === "run" ? "Run now" : name[0].toUpperCase() + name.slice(1));
    box.replaceChildren(h("table", { id: "schedules" },
      h("thead", {}, h("tr", {}, ["name", "queue", "cron", "job", "next run", "last run", "", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, data.schedules.map((s) => h("tr", {},
        h("td", {}, s.name, s.paused ? [" ", pill("paused")] : null), h("td", {}, s.queue),
        h("td", { class: "id" }, `${s.cron} ${s.timezone || ""}`), h("td", {}, s.job?.type || ""),
        h("td", {}, s.paused ? "—" : when(s.next_run)),
        h("td", {}, s.last_job_id ? h("a", { href: `/dashboard/jobs/${s.last_job_id}` }, when(s.last_run)) : "never",
          s.last_error ? h("div", { class: "muted" }, s.last_error) : null),
        h("td", {}, action(s, s.paused ? "resume" : "pause")), h("td", {}, action(s, "run")))))));
  }
  render().catch((err) => toast(err.message, true));
  return {};
}

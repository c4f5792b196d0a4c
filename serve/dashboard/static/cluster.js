// Cluster: Ray's nodes with their resources and the jobs running on each.
import { api, live, h, pill, ago, debounce } from "./lib.js";

export function cluster(main) {
  const box = h("div");
  main.append(h("h1", {}, "Cluster"), box);
  const sockets = [];
  async function render() {
    const data = await api("/cluster");
    box.replaceChildren(h("table", { id: "nodes" },
      h("thead", {}, h("tr", {}, ["node", "type", "state", "CPU", "GPU", "memory", "other", "running jobs"].map((t) => h("th", {}, t)))),
      h("tbody", {}, data.nodes.map((n) => h("tr", { "data-node": n.id },
        h("td", { class: "id" }, `${n.hostname || n.address} `, h("small", { class: "muted" }, n.id.slice(0, 12))),
        h("td", {}, n.type), h("td", {}, pill(n.alive ? n.state : "dead")),
        h("td", {}, n.cpus), h("td", {}, n.gpus), h("td", {}, `${(n.memory / 2 ** 30).toFixed(1)} GiB`),
        h("td", { class: "muted" }, Object.entries(n.custom).map(([k, v]) => `${k}=${v}`).join(", ") || "—"),
        h("td", {}, n.running.length ? n.running.map((j) => h("div", {}, h("a", { href: `/dashboard/jobs/${j.id}` }, j.id), ` ${j.type} · ${ago(j.started_at)}`)) : h("span", { class: "muted" }, "idle")))))));
    return data;
  }
  const refresh = debounce(render, 1000);
  Promise.all([render(), api("/queues?window=60")]).then(([, info]) => {
    for (const q of info.queues) if (!q.error) sockets.push(live(`queues/${encodeURIComponent(q.queue)}`, "gseq", (e) => { if (e.kind === "status") refresh(); }, q.last_gseq));
  });
  return { stop() { sockets.forEach((s) => s.close()); } };
}

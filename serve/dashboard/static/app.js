// The dashboard's entry point: picks the view from the URL and keeps links inside the page.
import { navigate } from "./lib.js";
import { overview } from "./overview.js";
import { jobs } from "./jobs.js";
import { jobPage } from "./job.js";
import { cluster } from "./cluster.js";
import { schedules } from "./schedules.js";

const main = document.getElementById("main");
let current = null;

function route() {
  current?.stop?.();
  main.replaceChildren();
  const path = location.pathname.replace(/\/+$/, "");
  const parts = path.split("/").slice(2);  // after "/dashboard"
  let page = parts[0] || "";
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  if (page === "jobs" && parts[1]) current = jobPage(main, decodeURIComponent(parts[1]));
  else if (page === "jobs") current = jobs(main, new URLSearchParams(location.search));
  else if (page === "cluster") current = cluster(main);
  else if (page === "schedules") current = schedules(main);
  else current = overview(main);
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[href^='/dashboard']");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || a.target) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);
window.addEventListener("dojo:navigate", route);
route();

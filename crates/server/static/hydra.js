// The one script: it only enhances pages that work without it.
"use strict";

const THEME_KEY = "hydra-theme";

function applyTheme(theme) {
  if (theme === "light" || theme === "dark") {
    document.documentElement.dataset.theme = theme;
  } else {
    delete document.documentElement.dataset.theme;
  }
}

function setUpThemeToggle() {
  applyTheme(localStorage.getItem(THEME_KEY));
  const button = document.querySelector(".theme-toggle");
  if (!button) return;
  button.hidden = false;
  button.addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme === "dark" ||
      (!document.documentElement.dataset.theme &&
        window.matchMedia("(prefers-color-scheme: dark)").matches);
    const next = dark ? "light" : "dark";
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
  });
}

// Rows whose one link (`a.row-link`) a click anywhere on the row follows.
function setUpClickableRows() {
  document.querySelectorAll("tr.clickable").forEach((row) => {
    row.addEventListener("click", (event) => {
      if (event.target.closest("a, button, input")) return;
      const link = row.querySelector("a.row-link");
      if (link) window.location = link.href;
    });
  });
}

// Menus: one open at a time; Escape closes it.
function setUpMenus() {
  const menus = document.querySelectorAll("details.menu");
  menus.forEach((menu) => {
    menu.addEventListener("toggle", () => {
      if (menu.open) menus.forEach((other) => { if (other !== menu) other.open = false; });
    });
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") menus.forEach((menu) => { menu.open = false; });
  });
  document.addEventListener("click", (event) => {
    menus.forEach((menu) => { if (!menu.contains(event.target)) menu.open = false; });
  });
}

// `/` focuses the search box, as on other sites.
function setUpSearchKey() {
  const box = document.querySelector(".search input");
  if (!box) return;
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, textarea, select");
    if (event.key === "/" && !typing) {
      event.preventDefault();
      box.focus();
    }
  });
}

// "Show disabled projects/jobsets" and "Show hidden jobsets": those rows
// start hidden; each choice is kept across live updates of the page.
function setUpShowDisabled() {
  const toggles = [
    { box: document.querySelector("#show-disabled"), rows: "tr.disabled-project" },
    { box: document.querySelector("#show-hidden"), rows: "tr.hidden-project" },
  ].filter((t) => t.box);
  if (!toggles.length) return;
  const apply = () => {
    document.querySelectorAll("tr.disabled-project, tr.hidden-project").forEach((row) => {
      row.hidden = toggles.some((t) => !t.box.checked && row.matches(t.rows));
    });
  };
  toggles.forEach((t) => {
    t.box.closest(".toggle").hidden = false;
    t.box.checked = sessionStorage.getItem(t.box.id) === "1";
    t.box.addEventListener("change", () => {
      sessionStorage.setItem(t.box.id, t.box.checked ? "1" : "0");
      apply();
    });
  });
  apply();
}

// Tabs: `nav.tabs` links to `#tabs-…` sections; one section is shown at
// a time (the one in the address, else the first) and the address follows;
// the arrow keys go to the next or previous tab.
function setUpTabs() {
  const nav = document.querySelector("nav.tabs");
  if (!nav) return;
  const links = [...nav.querySelectorAll('a[href^="#tabs-"]')];
  const show = (id) => {
    links.forEach((link) => {
      const target = link.getAttribute("href").slice(1);
      const section = document.getElementById(target);
      const current = target === id;
      if (section) section.hidden = !current;
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    });
  };
  const first = links.length ? links[0].getAttribute("href").slice(1) : null;
  const wanted = () => {
    const id = window.location.hash.slice(1);
    return links.some((l) => l.getAttribute("href") === "#" + id) ? id : first;
  };
  links.forEach((link) => link.addEventListener("click", (event) => {
    event.preventDefault();
    const id = link.getAttribute("href").slice(1);
    history.replaceState(null, "", "#" + id);
    show(id);
  }));
  // Arrow keys move between tabs, as in a tab list.
  links.forEach((link, i) => link.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const next = links[(i + step + links.length) % links.length];
    next.focus();
    next.click();
  }));
  // One handler, also after a live update replaced the tabs.
  window.onhashchange = () => show(wanted());
  if (first) show(wanted());
}

// A click on a short revision copies the full one.
function setUpCopy() {
  document.querySelectorAll("[data-copy]").forEach((el) => {
    el.setAttribute("role", "button");
    el.tabIndex = 0;
    const copy = (event) => {
      event.preventDefault();
      event.stopPropagation();
      if (!navigator.clipboard) return;
      navigator.clipboard.writeText(el.dataset.copy).then(() => {
        el.classList.add("copied");
        setTimeout(() => el.classList.remove("copied"), 1200);
      });
    };
    el.addEventListener("click", copy);
    el.addEventListener("keydown", (event) => { if (event.key === "Enter") copy(event); });
  });
}

// The jobset form: show the fields of the chosen type; add input rows.
function setUpJobsetForm() {
  const form = document.querySelector("form.jobset-form");
  if (!form) return;
  const type = () => form.querySelector("input[name=type]:checked");
  const showType = () => {
    const flake = type() && type().value === "1";
    form.classList.toggle("flake", flake);
    form.classList.toggle("legacy", !flake);
  };
  form.querySelectorAll("input[name=type]").forEach((r) => r.addEventListener("change", showType));
  showType();
  const add = form.querySelector("button.add-input");
  const body = form.querySelector(".inputs-form tbody");
  if (!add || !body) return;
  add.hidden = false;
  add.addEventListener("click", () => {
    const rows = body.querySelectorAll("tr.input-row");
    const last = rows[rows.length - 1];
    const copy = last.cloneNode(true);
    const n = rows.length;
    copy.querySelectorAll("[name]").forEach((el) => {
      el.name = el.name.replace(/^input-\d+-/, "input-" + n + "-");
      if (el.type === "checkbox") el.checked = false;
      else if (el.tagName !== "SELECT") el.value = "";
    });
    body.appendChild(copy);
    copy.querySelector("input").focus();
  });
}

// The log viewer: find in the lines shown, load every line in pieces,
// follow a running step.
function logLine(n, html) {
  const li = document.createElement("li");
  li.id = "L" + n;
  const a = document.createElement("a");
  a.className = "ln";
  a.href = "?line=" + n + "#L" + n;
  a.textContent = String(n);
  const span = document.createElement("span");
  span.className = "lt";
  span.innerHTML = html; // rendered and escaped by the server
  li.append(a, span);
  return li;
}

function setUpLogFind(log) {
  const box = document.querySelector(".log-find");
  if (!box) return;
  box.hidden = false;
  const input = box.querySelector(".find-text");
  const count = box.querySelector(".find-count");
  let found = [];
  let at = -1;
  const show = (i) => {
    found.forEach((li) => li.classList.remove("found-current"));
    if (!found.length) return;
    at = (i + found.length) % found.length;
    found[at].classList.add("found-current");
    found[at].scrollIntoView({ block: "center" });
    count.textContent = (at + 1) + " of " + found.length;
  };
  const search = () => {
    const text = input.value.toLowerCase();
    found.forEach((li) => li.classList.remove("found", "found-current"));
    found = [];
    if (text) {
      log.querySelectorAll("li").forEach((li) => {
        if (li.querySelector(".lt").textContent.toLowerCase().includes(text)) {
          li.classList.add("found");
          found.push(li);
        }
      });
    }
    count.textContent = text ? (found.length ? "" : "no match") : "";
    if (found.length) show(0);
  };
  input.addEventListener("input", search);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); show(at + (e.shiftKey ? -1 : 1)); }
  });
  box.querySelector(".find-next").addEventListener("click", () => show(at + 1));
  box.querySelector(".find-prev").addEventListener("click", () => show(at - 1));
}

function setUpLoadAll(log) {
  const button = document.querySelector("button.load-all");
  if (!button) return;
  const total = Number(button.dataset.total);
  if (total > 100000) return; // the raw log is the way for huge ones
  button.hidden = false;
  button.addEventListener("click", async () => {
    button.disabled = true;
    const first = Number(log.querySelector("li").id.slice(1));
    const piece = 5000;
    const before = log.firstChild;
    for (let from = 1; from < first; from += piece) {
      const to = Math.min(from + piece - 1, first - 1);
      button.textContent = "Loading lines " + from + "–" + to + "…";
      const response = await fetch("?from=" + from + "&to=" + to, { headers: { Accept: "text/html" } });
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fragment = document.createDocumentFragment();
      doc.querySelectorAll("ol.log > li").forEach((li) => fragment.append(document.importNode(li, true)));
      log.insertBefore(fragment, before);
      await new Promise((r) => setTimeout(r, 0)); // let the page breathe
    }
    button.remove();
    const where = document.querySelector(".log-where");
    if (where) where.textContent = "All " + log.children.length + " lines.";
  });
}

function setUpLogFollow(log) {
  const url = log.dataset.live;
  if (!url || !window.EventSource) return;
  const state = document.querySelector(".live-state");
  const atBottom = () => window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  const source = new EventSource(url);
  window.addEventListener("pagehide", () => source.close());
  source.onmessage = (e) => {
    const follow = atBottom();
    log.append(logLine(Number(e.lastEventId), e.data));
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  };
  source.addEventListener("end", () => {
    source.close();
    if (state) state.textContent = "The step finished.";
  });
  source.onerror = () => { if (state) state.textContent = "Reconnecting…"; };
  source.onopen = () => { if (state) state.textContent = "Following the running step…"; };
}

function setUpLog() {
  const log = document.querySelector("ol.log");
  if (!log) return;
  // The end of a log is what a reader wants first.
  if (log.dataset.tail && !window.location.hash) window.scrollTo(0, document.body.scrollHeight);
  setUpLogFind(log);
  setUpLoadAll(log);
  setUpLogFollow(log);
}

// Live pages: one event stream per page; when something the page shows
// changes, the page's content is read again and put in place (at most
// every few seconds, and only while the page is visible).
function concerns(scope, change) {
  if (scope === "*" || change.kind === "reset") return true;
  const [kind, ...rest] = scope.split(":");
  const name = rest.join(":");
  if (!change.builds.length && !change.jobsets.length) return true; // unscoped (e.g. a restart)
  if (kind === "build") return change.builds.includes(Number(name));
  if (kind === "jobset") return change.jobsets.includes(name);
  if (kind === "project") return change.projects.includes(name);
  return false;
}

function setUpLive() {
  const main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource || !window.fetch) return;
  const scope = main.dataset.live;
  let pending = false;
  let last = 0;
  let timer = null;
  const refresh = async () => {
    timer = null;
    if (document.hidden) { pending = true; return; }
    pending = false;
    last = Date.now();
    try {
      const response = await fetch(window.location.href, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.querySelector("main#content");
      if (!fresh) return;
      // Keep what the reader opened.
      const open = [...main.querySelectorAll("details[open]")].map((d) => d.id).filter(Boolean);
      main.replaceChildren(...[...fresh.childNodes].map((n) => document.importNode(n, true)));
      open.forEach((id) => { const d = document.getElementById(id); if (d) d.open = true; });
      setUpContent();
    } catch (e) { /* the next change tries again */ }
  };
  const schedule = () => {
    if (timer) return;
    const wait = Math.max(1000, 4000 - (Date.now() - last));
    timer = setTimeout(refresh, wait);
  };
  let source = null;
  // The first connection asks for what changed since the page was made.
  let since = document.body.dataset.eventsSince || "";
  const open = () => {
    source = new EventSource(since ? "/events?since=" + encodeURIComponent(since) : "/events");
    since = "";
    source.onmessage = (e) => {
      try { if (concerns(scope, JSON.parse(e.data))) schedule(); } catch (err) { schedule(); }
    };
    source.addEventListener("reset", schedule);
  };
  open();
  // A page left behind gives its connection back at once (browsers allow
  // few per server); one that comes back from the history reopens and
  // reads itself afresh.
  window.addEventListener("pagehide", () => { if (source) source.close(); source = null; });
  window.addEventListener("pageshow", (e) => { if (e.persisted) { open(); schedule(); } });
  document.addEventListener("visibilitychange", () => { if (!document.hidden && pending) schedule(); });
}

// Lazy parts (the jobs matrix): read when they come into view, and put
// in place of the link that leads to them without script.
function setUpLazy() {
  if (!window.IntersectionObserver) return;
  const load = async (el) => {
    try {
      const response = await fetch(el.dataset.src, { headers: { Accept: "text/html" } });
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const main = doc.querySelector("main#content");
      if (!response.ok || !main) return;
      main.querySelector("h1")?.remove();
      const part = document.createElement("div");
      part.className = "lazy-loaded";
      part.append(...[...main.childNodes].map((n) => document.importNode(n, true)));
      // Its filter stays on this page.
      part.querySelectorAll("form").forEach((f) => f.setAttribute("action", el.dataset.src));
      el.replaceWith(part);
    } catch (e) { /* the link still works */ }
  };
  const seen = new IntersectionObserver((entries) => entries.forEach((e) => {
    if (e.isIntersecting) { seen.unobserve(e.target); load(e.target); }
  }));
  document.querySelectorAll(".lazy[data-src]").forEach((el) => seen.observe(el));
}

// Forms that ask first (`data-confirm`): deleting an account, resetting
// a password.
function setUpConfirm() {
  document.addEventListener("submit", (event) => {
    const question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
}


// The dependency graph: drag to move, scroll or the buttons to zoom; the
// view is kept across live updates of the page (and reloads of the tab).
function setUpGraph() {
  const svg = document.querySelector("svg.dep-graph");
  if (!svg || !svg.viewBox || !window.DOMPoint) return;
  const base = svg.viewBox.baseVal;
  const fit = [base.x, base.y, base.width, base.height];
  const key = "graph-view:" + window.location.pathname;
  let view = null;
  try {
    const saved = JSON.parse(sessionStorage.getItem(key) || "null");
    if (Array.isArray(saved) && saved.length === 4 && saved.every(Number.isFinite)) view = saved;
  } catch (e) { /* a fresh view */ }
  if (!view) {
    view = fit.slice();
    // Too wide to read when fitted (a phone): start at a readable scale,
    // on the build's end (the right), and let the reader move.
    const width = svg.parentElement ? svg.parentElement.clientWidth : 0;
    if (width > 0 && width / fit[2] < 0.75) {
      const w = width;
      view = [fit[0] + fit[2] - w, fit[1], w, fit[3]];
    }
  }
  const apply = () => {
    svg.setAttribute("viewBox", view.map((v) => v.toFixed(1)).join(" "));
    try { sessionStorage.setItem(key, JSON.stringify(view)); } catch (e) { /* not kept */ }
  };
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  apply();
  const toGraph = (x, y, inverse) => new DOMPoint(x, y).matrixTransform(inverse || svg.getScreenCTM().inverse());
  const zoom = (factor, at) => {
    const [x, y, w, h] = view;
    const c = at || { x: x + w / 2, y: y + h / 2 };
    const nw = Math.min(Math.max(w * factor, 50), fit[2] * 20);
    const f = nw / w;
    view = [c.x - (c.x - x) * f, c.y - (c.y - y) * f, w * f, h * f];
    apply();
  };
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    zoom(e.deltaY > 0 ? 1.15 : 1 / 1.15, toGraph(e.clientX, e.clientY));
  }, { passive: false });
  let drag = null;
  let dragged = false;
  svg.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    const inverse = svg.getScreenCTM().inverse();
    drag = { inverse, start: toGraph(e.clientX, e.clientY, inverse), view: view.slice(), x: e.clientX, y: e.clientY, id: e.pointerId };
    dragged = false;
  });
  svg.addEventListener("pointermove", (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    if (!dragged && Math.hypot(e.clientX - drag.x, e.clientY - drag.y) < 4) return;
    if (!dragged) { dragged = true; svg.setPointerCapture(e.pointerId); svg.classList.add("dragging"); }
    const p = toGraph(e.clientX, e.clientY, drag.inverse);
    view = [drag.view[0] - (p.x - drag.start.x), drag.view[1] - (p.y - drag.start.y), drag.view[2], drag.view[3]];
    apply();
  });
  const end = () => { drag = null; svg.classList.remove("dragging"); };
  svg.addEventListener("pointerup", end);
  svg.addEventListener("pointercancel", end);
  // A drag is not a click on the node it ended on.
  svg.addEventListener("click", (e) => { if (dragged) { e.preventDefault(); dragged = false; } }, true);
  document.querySelectorAll(".graph-tools [data-zoom]").forEach((b) => b.addEventListener("click", () => {
    if (b.dataset.zoom === "in") zoom(1 / 1.25);
    else if (b.dataset.zoom === "out") zoom(1.25);
    else { view = fit.slice(); apply(); }
  }));
}

// What a page's content needs, again after a live update.
function setUpContent() {
  setUpGraph();
  setUpLazy();
  setUpTabs();
  setUpClickableRows();
  setUpCopy();
  setUpShowDisabled();
}

document.addEventListener("DOMContentLoaded", () => {
  setUpLive();
  setUpLog();
  setUpJobsetForm();
  setUpContent();
  setUpThemeToggle();
  setUpMenus();
  setUpSearchKey();
  setUpConfirm();
});

// Google's sign-in button hands its ID token to this function (named by
// the page's `data-callback`); the server checks it and starts a session.
window.hydraGoogleSignIn = async (answer) => {
  const failed = document.querySelector(".google-error");
  const response = await fetch("/google-login", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: "id_token=" + encodeURIComponent(answer.credential),
  });
  if (response.ok) {
    const next = document.querySelector("input[name=next]");
    window.location = next && next.value ? next.value : "/";
  } else if (failed) {
    failed.textContent = "Google sign-in was refused (" + response.status + ").";
    failed.hidden = false;
  }
};

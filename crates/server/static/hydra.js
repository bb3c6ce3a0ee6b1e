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

// "Show disabled projects": disabled rows start hidden.
function setUpShowDisabled() {
  const toggle = document.querySelector("#show-disabled");
  if (!toggle) return;
  const rows = document.querySelectorAll("tr.disabled-project");
  const apply = () => rows.forEach((row) => { row.hidden = !toggle.checked; });
  toggle.closest(".toggle").hidden = false;
  toggle.addEventListener("change", apply);
  apply();
}

// Tabs: `nav.tabs` links to `#tabs-…` sections; one section is shown at
// a time (the one in the address, else the first) and the address follows.
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
  window.addEventListener("hashchange", () => show(wanted()));
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

document.addEventListener("DOMContentLoaded", () => {
  setUpJobsetForm();
  setUpCopy();
  setUpTabs();
  setUpThemeToggle();
  setUpClickableRows();
  setUpMenus();
  setUpSearchKey();
  setUpShowDisabled();
});

// The console's shell: sign-in, navigation, the hash router and the `ctx` every area page gets.
//
// No build step: plain ES modules served by the console itself. An area is one module,
// /ui/areas/<name>.js, exporting `render(root, ctx, path)`; the shell loads it when its route
// (#/<name>/<path>) is opened. The key the person types stays in this tab's sessionStorage and
// goes to the console's API as `Authorization: Bearer`; the console forwards it to the services.

import { badge, badgeKind, chart, fmtNumber, fmtTime, h, query, table } from "./kit.js";

const KEY_STORAGE = "cairn-console-key";
const NOTICE_MS = 8000;
const STREAM_RETRY_MS = 2000;

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  me: null,
  areas: [],
  modules: new Map(),
  leaving: [], // callbacks to run when the route changes (streams, timers)
  route: 0, // increments per navigation; a slow render of an old route is ignored
};

const $ = (id) => document.getElementById(id);

// --- API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const { method = "GET", body, signal } = options;
  const url = "/api/" + String(path).replace(/^\/?(api\/)?/, "");
  const headers = { Authorization: `Bearer ${state.key}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let answer;
  try {
    answer = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "The console cannot be reached.", null);
  }
  const text = await answer.text();
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  if (!answer.ok) {
    const reason =
      (parsed && typeof parsed === "object" && (parsed.error || parsed.detail)) ||
      (typeof parsed === "string" && parsed) ||
      answer.statusText;
    const message = typeof reason === "string" ? reason : JSON.stringify(reason);
    // Only the console's own 401 means the key is gone; a service's 401 is shown like any error.
    if (answer.status === 401 && !url.startsWith("/api/proxy/") && state.me) {
      signOut("Your key was refused; sign in again.");
    }
    throw new ApiError(answer.status, message, parsed);
  }
  return parsed;
}

function proxy(service, path, options) {
  return api(`proxy/${encodeURIComponent(service)}/${String(path).replace(/^\//, "")}`, options);
}

// Server-sent events through fetch(), so the key travels in the Authorization header (an
// EventSource cannot send one, and a key in the URL would land in logs).
function stream(filters, onEvent) {
  const controller = new AbortController();
  let closed = false;
  const run = async () => {
    while (!closed) {
      try {
        const answer = await fetch(`/api/events/stream${query(filters)}`, {
          headers: { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" },
          signal: controller.signal,
        });
        if (!answer.ok) throw new ApiError(answer.status, "event stream refused", null);
        const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = block
              .split("\n")
              .filter((line) => line.startsWith("data: "))
              .map((line) => line.slice(6))
              .join("\n");
            if (data) onEvent(JSON.parse(data));
          }
        }
      } catch (error) {
        if (closed || error.name === "AbortError") return;
        if (error.status === 401 || error.status === 403) return;
      }
      if (!closed) await new Promise((resolve) => setTimeout(resolve, STREAM_RETRY_MS));
    }
  };
  run();
  const close = () => {
    closed = true;
    controller.abort();
  };
  state.leaving.push(close);
  return { close };
}

// --- notices ------------------------------------------------------------------------------------

function notice(text, kind = "ok") {
  const item = h("div", { class: `notice ${kind}`, testid: "notice", role: kind === "error" ? "alert" : null }, text);
  $("notices").append(item);
  setTimeout(() => item.remove(), NOTICE_MS);
  return item;
}

// --- the ctx an area gets --------------------------------------------------------------------

function can(scope) {
  const me = state.me;
  return Boolean(me && (me.admin || me.scopes.includes(scope)));
}

function go(hash) {
  const target = String(hash).replace(/^#?\/?/, "#/");
  if (location.hash === target) renderRoute();
  else location.hash = target;
}

function every(ms, fn) {
  const timer = setInterval(fn, ms);
  state.leaving.push(() => clearInterval(timer));
  return () => clearInterval(timer);
}

const ctx = {
  api,
  proxy,
  query,
  stream,
  chart,
  table,
  h,
  can,
  go,
  notice,
  fmtTime,
  fmtNumber,
  badge,
  badgeKind,
  every,
  onLeave: (fn) => state.leaving.push(fn),
  link: (hash, text, attrs = {}) => h("a", { href: String(hash).replace(/^#?\/?/, "#/"), ...attrs }, text),
  // An action button only a key with `scope` sees (null otherwise: a read-only key sees none).
  button: (text, scope, onclick, attrs = {}) =>
    scope && !can(scope) ? null : h("button", { type: "button", class: "action", onclick, ...attrs }, text),
  get me() {
    return state.me;
  },
  get areas() {
    return state.areas;
  },
};

// --- router ---------------------------------------------------------------------------------------

function parseRoute() {
  const match = location.hash.match(/^#\/([^/?]+)\/?(.*)$/);
  if (!match) return { name: state.areas[0]?.name || "overview", rest: "" };
  return { name: decodeURIComponent(match[1]), rest: match[2] };
}

function leaveRoute() {
  for (const fn of state.leaving.splice(0)) {
    try {
      fn();
    } catch (error) {
      console.error(error);
    }
  }
}

function markNav(name) {
  for (const link of $("nav").querySelectorAll("a")) {
    if (link.dataset.area === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function renderRoute() {
  if (!state.me) return;
  leaveRoute();
  const route = ++state.route;
  const { name, rest } = parseRoute();
  const old = $("area");
  const root = h("main", { id: "area", tabindex: "-1", testid: `area-${name}`, "aria-busy": "true" });
  old.replaceWith(root);
  markNav(name);
  const area = state.areas.find((a) => a.name === name);
  if (!area) {
    root.append(h("h1", {}, "Not found"), h("p", {}, `There is no area called "${name}".`));
    root.removeAttribute("aria-busy");
    return;
  }
  document.title = `${area.title} · Cairn console`;
  if (!area.available) {
    root.append(
      h("h1", {}, area.title),
      h("p", { class: "muted", testid: "area-unavailable" },
        `This area needs ${area.services.join(", ")}, which this platform does not run.`),
    );
    root.removeAttribute("aria-busy");
    return;
  }
  try {
    let module = state.modules.get(area.script);
    if (!module) {
      module = await import(area.script);
      state.modules.set(area.script, module);
    }
    if (route !== state.route) return;
    // The rest's path part is decoded (names); a `?query` stays as typed, for URLSearchParams.
    const cut = rest.indexOf("?");
    const path = cut < 0 ? decodeURIComponent(rest) : decodeURIComponent(rest.slice(0, cut)) + rest.slice(cut);
    const fromNav = document.activeElement && document.activeElement.closest("nav");
    await module.render(root, ctx, path);
    // A page opened from the navigation takes the focus, so a screen reader starts reading it.
    if (fromNav && route === state.route) root.focus({ preventScroll: true });
  } catch (error) {
    if (route !== state.route) return;
    console.error(error);
    root.append(h("p", { class: "error", role: "alert", testid: "area-error" }, `This page failed: ${error.message}`));
  } finally {
    root.removeAttribute("aria-busy");
  }
}

// --- sign-in / sign-out ---------------------------------------------------------------------------

function buildNav() {
  const list = $("nav");
  list.replaceChildren(
    ...state.areas.map((area) =>
      h(
        "li",
        {},
        h(
          "a",
          {
            href: `#/${area.name}`,
            "data-area": area.name,
            testid: `nav-${area.name}`,
            class: area.available ? null : "unavailable",
            title: area.available ? null : `needs ${area.services.join(", ")}`,
          },
          area.title,
        ),
      ),
    ),
  );
}

async function enter() {
  state.me = await api("me");
  state.areas = await api("areas");
  buildNav();
  $("signed-in-as").textContent =
    `${state.me.principal} · ${state.me.admin ? "admin" : state.me.scopes.join(", ")}`;
  $("who").hidden = false;
  $("sign-in").hidden = true;
  $("app").hidden = false;
  await renderRoute();
}

function signOut(message) {
  leaveRoute();
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = "";
  state.me = null;
  $("who").hidden = true;
  $("app").hidden = true;
  $("sign-in").hidden = false;
  $("area").replaceChildren();
  $("key").value = "";
  $("sign-in-error").textContent = message || "";
  $("key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) {
    $("sign-in-error").textContent = "Type a key first.";
    $("key").focus();
    return;
  }
  $("sign-in-error").textContent = "";
  $("sign-in-button").disabled = true;
  state.key = key;
  try {
    await enter();
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key").value = "";
    $("area").focus({ preventScroll: true });
  } catch (error) {
    state.key = "";
    state.me = null;
    $("sign-in-error").textContent = `Sign-in failed: ${error.message}`;
    $("key").select();
  } finally {
    $("sign-in-button").disabled = false;
  }
}

function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut("Signed out."));
  $("skip-link").addEventListener("click", (event) => {
    event.preventDefault(); // the hash belongs to the router
    $("area").focus();
  });
  window.addEventListener("hashchange", renderRoute);
  if (state.key) {
    enter().catch((error) => signOut(`Sign-in failed: ${error.message}`));
  } else {
    $("key").focus();
  }
}

start();

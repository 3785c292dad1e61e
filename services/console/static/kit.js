// The shell's small kit, shared with the area pages through `ctx`: DOM building, accessible
// tables, charts (plotly.js, loaded on first use) and formatting. No state of the shell here.

const PLOTLY_URL = "/ui/vendor/plotly.min.js";

// --- DOM helpers ---------------------------------------------------------------------------

export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name === "testid") element.dataset.testid = value;
    else if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "value" && "value" in element) element.value = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function table(columns, rows, options = {}) {
  const { onRowClick, caption, testid, empty = "Nothing here yet." } = options;
  const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label))));
  const body = h("tbody");
  for (const row of rows) {
    const cells = columns.map((c) => {
      const raw = row[c.key];
      const shown = c.format ? c.format(raw, row) : raw;
      return h("td", { "data-label": c.label }, shown === undefined || shown === null ? "" : shown);
    });
    const tr = h("tr", {}, cells);
    if (onRowClick) {
      tr.classList.add("clickable");
      tr.tabIndex = 0;
      tr.addEventListener("click", (event) => {
        if (!event.target.closest("a, button, input, select")) onRowClick(row, event);
      });
      tr.addEventListener("keydown", (event) => {
        if (event.target === tr && (event.key === "Enter" || event.key === " ")) {
          event.preventDefault();
          onRowClick(row, event);
        }
      });
    }
    body.append(tr);
  }
  if (!rows.length) {
    body.append(h("tr", { class: "empty" }, h("td", { colspan: columns.length }, empty)));
  }
  return h(
    "div",
    { class: "table-wrap" },
    h("table", { testid }, caption ? h("caption", {}, caption) : null, head, body),
  );
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}


// --- charts (plotly.js, loaded on first use) --------------------------------------------------

let plotlyLoading = null;

function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoading) {
    plotlyLoading = new Promise((resolve, reject) => {
      const script = h("script", { src: PLOTLY_URL });
      script.addEventListener("load", () => resolve(window.Plotly));
      script.addEventListener("error", () => {
        plotlyLoading = null;
        reject(new Error("the chart library could not be loaded"));
      });
      document.head.append(script);
    });
  }
  return plotlyLoading;
}

export async function chart(element, traces, layout = {}) {
  const Plotly = await loadPlotly();
  const base = {
    margin: { t: 36, r: 16, b: 48, l: 56 },
    font: { family: "system-ui, sans-serif", size: 13, color: "#1b2430" },
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    hovermode: "closest",
  };
  element.classList.add("chart");
  if (!element.getAttribute("role")) element.setAttribute("role", "img");
  if (!element.getAttribute("aria-label") && layout.title) {
    element.setAttribute("aria-label", typeof layout.title === "string" ? layout.title : layout.title.text);
  }
  return Plotly.react(element, traces, { ...base, ...layout }, {
    displaylogo: false,
    responsive: true,
  });
}

// --- formatting ---------------------------------------------------------------------------------

export function fmtTime(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())} ` +
    `${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}`
  );
}

const numberFormat = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 });

export function fmtNumber(x) {
  if (x === null || x === undefined || x === "") return "";
  const n = Number(x);
  return Number.isFinite(n) ? numberFormat.format(n) : String(x);
}

// A status as a badge: green when done well, red when it failed or stopped, amber in between.
export function badgeKind(status) {
  if (/^(Completed|Succeeded|Healthy|InService)$/.test(status)) return "ok";
  if (/^(Failed|Stopped|RolledBack|Unhealthy)$/.test(status)) return "bad";
  return "warn";
}

export function badge(status, attrs = {}) {
  return h("span", { class: `badge ${badgeKind(status)}`, ...attrs, text: status });
}

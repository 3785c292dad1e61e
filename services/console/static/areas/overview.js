// Overview: every service's health, the worker pools, live events (filterable), recent failures
// and dead-lettered messages. An example area: it reads the console's own routes and one service
// (the autoscaler) through ctx.proxy, and follows the bus with ctx.stream.

const LIVE_ROWS = 100;
const SIDE_ROWS = 20;
const HEALTH_REFRESH_MS = 10000;

export async function render(root, ctx, path) {
  const { h } = ctx;
  const params = new URLSearchParams(path.startsWith("?") ? path.slice(1) : "");
  const filters = { type: params.get("type") || "", correlation_id: params.get("correlation_id") || "" };

  const servicesBox = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Asking every service…"));
  const poolsBox = h("div", {}, h("p", { class: "muted" }, "Loading worker pools…"));
  const liveBox = h("div");
  const failuresBox = h("div");
  const deadBox = h("div");
  const typeInput = h("input", { id: "filter-type", name: "type", value: filters.type, placeholder: "e.g. TrainingJobCompleted or *Failed", testid: "filter-type" });
  const correlationInput = h("input", { id: "filter-correlation", name: "correlation_id", value: filters.correlation_id, testid: "filter-correlation" });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter events" },
    h("div", { class: "field" }, h("label", { for: "filter-type" }, "Event type"), typeInput),
    h("div", { class: "field" }, h("label", { for: "filter-correlation" }, "Correlation id"), correlationInput),
    h("button", { type: "submit" }, "Filter"),
    h("button", { type: "button", onclick: () => ctx.go("overview") }, "Clear"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.go(`overview/${ctx.query({ type: typeInput.value.trim(), correlation_id: correlationInput.value.trim() })}`);
  });

  root.append(
    h("h1", {}, "Overview"),
    h("section", { "aria-labelledby": "services-title" }, h("h2", { id: "services-title" }, "Services"), servicesBox),
    h("section", { "aria-labelledby": "pools-title" }, h("h2", { id: "pools-title" }, "Worker pools"), poolsBox),
    h("section", { "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Live events"), form, liveBox),
    h(
      "div",
      { class: "cards" },
      h("section", { "aria-labelledby": "failures-title" }, h("h2", { id: "failures-title" }, "Recent failures"), failuresBox),
      h("section", { "aria-labelledby": "dead-title" }, h("h2", { id: "dead-title" }, "Dead-lettered messages"), deadBox),
    ),
  );

  const badge = (ok, yes, no) => h("span", { class: `badge ${ok ? "ok" : "bad"}` }, ok ? yes : no);
  const correlationLink = (id) =>
    id ? ctx.link(`overview/${ctx.query({ correlation_id: id })}`, id.length > 14 ? `${id.slice(0, 14)}…` : id, { title: id }) : "";

  async function loadServices() {
    try {
      const services = await ctx.api("overview/services");
      servicesBox.replaceChildren(
        ctx.table(
          [
            { key: "name", label: "Service" },
            { key: "healthy", label: "Health", format: (ok) => badge(ok, "healthy", "down") },
            { key: "ready", label: "Ready", format: (ok, row) => (row.healthy ? badge(ok, "ready", "not ready") : "") },
            { key: "url", label: "URL", format: (url) => h("code", {}, url) },
            { key: "error", label: "Problem" },
          ],
          services,
          { testid: "services-table", empty: "No service runs here." },
        ),
      );
    } catch (error) {
      servicesBox.replaceChildren(h("p", { class: "error" }, `Services: ${error.message}`));
    }
  }

  async function loadPools() {
    try {
      const answer = await ctx.proxy("autoscaler", "pools");
      poolsBox.replaceChildren(
        ctx.table(
          [
            { key: "pool", label: "Pool" },
            { key: "service", label: "Service" },
            { key: "current", label: "Replicas", format: (n, row) => `${n} (wanted ${row.desired}, ${row.min_replicas}–${row.max_replicas})` },
            { key: "lag", label: "Lag", format: (n) => ctx.fmtNumber(n) },
            { key: "last_decision", label: "Last decision", format: (d) => (d ? d.reason : "") },
            { key: "error", label: "Problem" },
          ],
          answer.pools || [],
          { testid: "pools-table", empty: "No worker pool is declared." },
        ),
      );
    } catch (error) {
      const missing = error.status === 404;
      poolsBox.replaceChildren(
        h("p", { class: missing ? "muted" : "error" }, missing ? "The autoscaler does not run on this platform." : `Worker pools: ${error.message}`),
      );
    }
  }

  const eventColumns = [
    { key: "time", label: "Time", format: (t) => ctx.fmtTime(t) },
    { key: "type", label: "Type", format: (t) => ctx.link(`overview/${ctx.query({ type: t })}`, t) },
    { key: "source", label: "Source" },
    { key: "correlation_id", label: "Correlation", format: correlationLink },
    { key: "data", label: "Data", format: (d) => h("code", { class: "data" }, summary(d)) },
  ];
  const deadColumns = [
    { key: "time", label: "Time", format: (t) => ctx.fmtTime(t) },
    { key: "type", label: "Type" },
    { key: "topic", label: "Topic", format: (t) => h("code", {}, t) },
    { key: "reason", label: "Reason" },
    { key: "correlation_id", label: "Correlation", format: correlationLink },
  ];

  const matches = (event) =>
    (!filters.type ||
      (filters.type.startsWith("*") ? event.type.endsWith(filters.type.slice(1)) : event.type === filters.type)) &&
    (!filters.correlation_id || event.correlation_id === filters.correlation_id);

  let live = [];
  let failures = [];
  let dead = [];
  const draw = () => {
    liveBox.replaceChildren(ctx.table(eventColumns, live, { testid: "events-table", empty: "No event yet: events appear here as they happen." }));
    failuresBox.replaceChildren(ctx.table(eventColumns.slice(0, 4), failures, { testid: "failures-table", empty: "No failure seen." }));
    deadBox.replaceChildren(ctx.table(deadColumns, dead, { testid: "dead-letters-table", empty: "No dead-lettered message seen." }));
  };

  // Probing every service takes as long as the slowest one: the page does not wait for it.
  loadServices();
  loadPools();
  const [recent, recentFailures, recentDead] = await Promise.all([
    ctx.api(`events/recent${ctx.query({ ...filters, limit: LIVE_ROWS })}`),
    ctx.api(`events/recent${ctx.query({ type: "*Failed", dead_letter: "false", limit: SIDE_ROWS })}`),
    ctx.api(`events/recent${ctx.query({ dead_letter: "true", limit: SIDE_ROWS })}`),
  ]);
  live = recent;
  failures = recentFailures;
  dead = recentDead;
  draw();
  ctx.stream({}, (event) => {
    if (event.dead_letter) dead = [event, ...dead].slice(0, SIDE_ROWS);
    else if (event.type.endsWith("Failed")) failures = [event, ...failures].slice(0, SIDE_ROWS);
    if (matches(event)) live = [event, ...live].slice(0, LIVE_ROWS);
    draw();
  });
  ctx.every(HEALTH_REFRESH_MS, loadServices);
}

function summary(data) {
  const text = JSON.stringify(data || {});
  return text.length > 160 ? `${text.slice(0, 160)}…` : text;
}

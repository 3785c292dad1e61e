// Monitor: every monitoring schedule, then one endpoint's runs with model quality over time, and
// one run's drift per feature with the reference (baseline) vs current distributions that the
// monitor binned into its report. Reads the monitor through the console's proxy.

export async function render(root, ctx, path) {
  const [endpoint, runId] = (path || "").split("/").map(decodeURIComponent);
  if (endpoint) await renderEndpoint(root, ctx, endpoint, runId);
  else await renderList(root, ctx);
}

const endpointLink = (endpoint) => `#/monitor/${encodeURIComponent(endpoint)}`;
const runLink = (endpoint, runId) => `${endpointLink(endpoint)}/${encodeURIComponent(runId)}`;

async function renderList(root, ctx) {
  const { h } = ctx;
  root.append(h("h1", { text: "Monitor" }));
  const schedules = await ctx.proxy("monitor", "schedules");
  const columns = [
    { key: "endpoint_name", label: "Endpoint", format: (value) => ctx.link(endpointLink(value), value) },
    { key: "interval_s", label: "Every (s)", format: (value) => ctx.fmtNumber(value) },
    { key: "drift_p_value", label: "p-value", format: (value, row) => `${value} (${row.correction})` },
    { key: "min_rows", label: "Min rows" },
    { key: "runs_completed", label: "Runs" },
    { key: "last_run_id", label: "Last run", format: (value, row) => (value ? ctx.link(runLink(row.endpoint_name, value), value) : "") },
    { key: "next_run_at", label: "Next run", format: (value) => ctx.fmtTime(value) },
  ];
  root.append(ctx.table(columns, schedules, {
    testid: "monitor-schedules", empty: "No monitoring schedules: cairn monitor schedule <endpoint>",
    onRowClick: (row) => ctx.go(endpointLink(row.endpoint_name)),
  }));
}

async function renderEndpoint(root, ctx, endpoint, runId) {
  const { h } = ctx;
  const runs = await ctx.proxy("monitor", `schedules/${encodeURIComponent(endpoint)}/runs`);
  runs.sort((a, b) => String(a.window_end).localeCompare(String(b.window_end)));
  root.append(h("p", {}, ctx.link("#/monitor", "All schedules"), " / ", ctx.link(`#/endpoints/${encodeURIComponent(endpoint)}`, `endpoint ${endpoint}`)),
    h("h1", { text: `Monitoring: ${endpoint}` }));
  if (!runs.length) {
    root.append(h("p", { testid: "monitor-runs", text: "No completed runs yet." }));
    return;
  }
  const quality = h("div", { testid: "monitor-quality-chart" });
  root.append(h("h2", { text: "Model quality over time" }), quality);
  const metrics = [...new Set(runs.flatMap((run) => Object.keys(run.quality_metrics || {})))].filter((m) => m !== "labelled_rows");
  const x = runs.map((run) => run.window_end);
  const traces = metrics.map((metric) => ({
    type: "scatter", mode: "lines+markers", name: metric, x, y: runs.map((run) => run.quality_metrics?.[metric] ?? null),
  }));
  traces.push({ type: "bar", name: "drifted features", x, y: runs.map((run) => run.drifted_features.length), yaxis: "y2", opacity: 0.35, marker: { color: "#c0392b" } });
  await ctx.chart(quality, traces, {
    title: { text: "Quality metrics (lines) and drifted features (bars) per run", x: 0.02, xanchor: "left" }, height: 320,
    yaxis: { title: { text: "metric" } }, yaxis2: { title: { text: "drifted features" }, overlaying: "y", side: "right", rangemode: "tozero", dtick: 1 },
    legend: { orientation: "h" },
  });

  const newestFirst = [...runs].reverse();
  const chosen = runId || (newestFirst.find((run) => run.drifted_features.length) || newestFirst[0]).run_id;
  root.append(h("h2", { text: "Runs" }), ctx.table([
    { key: "run_id", label: "Run", format: (value) => ctx.link(runLink(endpoint, value), value, value === chosen ? { "aria-current": "true" } : {}) },
    { key: "window_end", label: "Window end", format: (value) => ctx.fmtTime(value) },
    { key: "model_version", label: "Model", format: (value, row) => ctx.link(`#/models/${encodeURIComponent(row.model_package_group)}/${value}`, `${row.model_package_group} v${value}`) },
    { key: "rows_checked", label: "Rows", format: (value) => ctx.fmtNumber(value) },
    { key: "drifted_features", label: "Drifted features", format: (value) => value.join(", ") || "none" },
    { key: "violations", label: "Violations", format: (value) => value.length },
  ], newestFirst, { testid: "monitor-runs", onRowClick: (row) => ctx.go(runLink(endpoint, row.run_id)) }));

  const section = h("section", { "aria-labelledby": "drift-title" }, h("h2", { id: "drift-title", text: `Drift in run ${chosen}` }));
  root.append(section);
  let report;
  try {
    report = await ctx.proxy("monitor", `schedules/${encodeURIComponent(endpoint)}/runs/${encodeURIComponent(chosen)}`);
  } catch (error) {
    section.append(h("p", { class: "error", testid: "drift-missing", text: `No report for run ${chosen}: ${error.message}` }));
    return;
  }
  renderDrift(section, ctx, report);
}

function renderDrift(section, ctx, report) {
  const { h } = ctx;
  const features = [...report.features].sort((a, b) => Number(b.drifted) - Number(a.drifted) || a.p_value - b.p_value);
  const distributions = report.distributions || {};
  const select = h("select", { id: "drift-feature", testid: "drift-feature" },
    features.map((f) => h("option", { value: f.feature, text: `${f.feature}${f.drifted ? " (drifted)" : ""}` })));
  const chart = h("div", { testid: "drift-chart" });
  const draw = () => drawDistribution(ctx, chart, select.value, distributions[select.value], features.find((f) => f.feature === select.value));
  select.addEventListener("change", draw);
  section.append(
    h("p", { class: "muted", text: `${report.summary.rows_checked} rows against the baseline of ${report.summary.model_package_group} v${report.summary.model_version}; p-value ${report.drift.p_value} with ${report.drift.correction} correction.` }),
    h("div", { class: "field" }, h("label", { for: "drift-feature", text: "Feature" }), select),
    chart,
    ctx.table([
      { key: "feature", label: "Feature" },
      { key: "test", label: "Test" },
      { key: "statistic", label: "Statistic", format: (value) => ctx.fmtNumber(value) },
      { key: "p_value", label: "p-value", format: (value) => Number(value).toExponential(2) },
      { key: "threshold", label: "Threshold", format: (value) => Number(value).toExponential(2) },
      { key: "drifted", label: "Drift", format: (value) => h("span", { class: `badge ${value ? "bad" : "ok"}`, text: value ? "drifted" : "no" }) },
    ], features, { testid: "drift-features", onRowClick: (row) => { select.value = row.feature; draw(); chart.scrollIntoView({ block: "nearest" }); } }),
  );
  if (features.length) draw();
}

async function drawDistribution(ctx, element, feature, distribution, result) {
  if (!distribution) {
    element.replaceChildren(ctx.h("p", { text: "This run's report keeps no distributions (it predates them)." }));
    return;
  }
  let x;
  let width;
  if (distribution.kind === "categorical") x = distribution.categories;
  else {
    const edges = distribution.edges;
    x = edges.slice(0, -1).map((low, i) => (low + edges[i + 1]) / 2);
    width = edges.slice(0, -1).map((low, i) => (edges[i + 1] - low) * 0.45);
  }
  const offset = width ? width.map((w) => -w) : undefined;
  const traces = [
    { type: "bar", name: "reference (baseline)", x, y: distribution.reference, marker: { color: "#2f6db5" }, width, offset },
    { type: "bar", name: "current", x, y: distribution.current, marker: { color: "#d9822b" }, width, offset: width ? width.map(() => 0) : undefined },
  ];
  const verdict = result ? `${result.test} ${ctx.fmtNumber(result.statistic)}, p=${Number(result.p_value).toExponential(2)}${result.drifted ? ", drifted" : ""}` : "";
  element.setAttribute("aria-label", `${feature}: reference vs current share per bin. ${verdict}`);
  await ctx.chart(element, traces, {
    title: { text: `${feature}: reference vs current (${verdict})`, x: 0.02, xanchor: "left" }, height: 340, barmode: "group",
    yaxis: { title: { text: "share of rows" } }, legend: { orientation: "h" },
  });
}

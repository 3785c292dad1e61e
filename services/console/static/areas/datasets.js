// Datasets: every dataset, then one dataset's versions, schema, profile (a histogram per column)
// and the model versions trained on it. Reads ingest through the console's proxy; the lineage
// comes from this area's route, which gathers the registry's versions in one answer.

// A numeric column's profile keeps quantiles, not counts: the histogram puts each quantile
// step's share of the rows evenly over its range (bar area = share), an honest approximation.
const QUANTILE_STEPS = [
  ["min", "p1", 0.01], ["p1", "p5", 0.04], ["p5", "p25", 0.2], ["p25", "p50", 0.25],
  ["p50", "p75", 0.25], ["p75", "p95", 0.2], ["p95", "p99", 0.04], ["p99", "max", 0.01],
];

export async function render(root, ctx, path) {
  const [name, version] = (path || "").split("/").map(decodeURIComponent);
  if (name) await renderDataset(root, ctx, name, version || "latest");
  else await renderList(root, ctx);
}

const link = (name, version) =>
  `#/datasets/${encodeURIComponent(name)}${version ? `/${version}` : ""}`;

async function renderList(root, ctx) {
  const { h } = ctx;
  root.append(h("h1", { text: "Datasets" }));
  const datasets = await ctx.proxy("ingest", "datasets");
  const columns = [
    { key: "name", label: "Dataset", format: (value) => ctx.link(link(value), value) },
    { key: "versions", label: "Versions" },
    { key: "latest_version", label: "Latest version" },
    { key: "latest_row_count", label: "Rows", format: (value) => ctx.fmtNumber(value) },
    { key: "latest_sha256", label: "sha256", format: (value) => h("code", { text: String(value).slice(0, 12) }) },
  ];
  root.append(ctx.table(columns, datasets, {
    testid: "datasets-table", caption: "Every dataset with its newest version",
    empty: "No datasets yet: cairn datasets upload ...",
    onRowClick: (row) => ctx.go(link(row.name)),
  }));
}

async function renderDataset(root, ctx, name, version) {
  const { h } = ctx;
  const [index, shown] = await Promise.all([
    ctx.proxy("ingest", `datasets/${encodeURIComponent(name)}`),
    ctx.proxy("ingest", `datasets/${encodeURIComponent(name)}/${version}`),
  ]);
  root.append(
    h("p", {}, ctx.link("#/datasets", "All datasets")),
    h("h1", { text: `${name} v${shown.version}` }),
    h("p", { class: "muted" },
      `${ctx.fmtNumber(shown.row_count)} rows, ${shown.columns.length} columns, created `,
      ctx.fmtTime(shown.created_at), ", sha256 ", h("code", { text: shown.sha256.slice(0, 16) })),
  );
  const versionColumns = [
    { key: "version", label: "Version", format: (value) => ctx.link(link(name, value), `v${value}`) },
    { key: "row_count", label: "Rows", format: (value) => ctx.fmtNumber(value) },
    { key: "created_at", label: "Created", format: (value) => ctx.fmtTime(value) },
    { key: "sha256", label: "sha256", format: (value) => h("code", { text: value.slice(0, 12) }) },
  ];
  const versions = [...index.versions].sort((a, b) => b.version - a.version);
  root.append(h("h2", { text: "Versions" }), ctx.table(versionColumns, versions, {
    testid: "dataset-versions", onRowClick: (row) => ctx.go(link(name, row.version)),
  }));

  const profiles = new Map(shown.profile.map((column) => [column.name, column]));
  const schemaColumns = [
    { key: "name", label: "Column" },
    { key: "dtype", label: "Type" },
    { key: "nullable", label: "Nullable", format: (value) => (value ? "yes" : "no") },
    { key: "missing_share", label: "Missing", format: (value) => `${ctx.fmtNumber(100 * (value || 0))} %` },
    { key: "distinct", label: "Distinct", format: (value) => ctx.fmtNumber(value) },
    { key: "min", label: "Min", format: (value) => ctx.fmtNumber(value) },
    { key: "mean", label: "Mean", format: (value) => ctx.fmtNumber(value) },
    { key: "max", label: "Max", format: (value) => ctx.fmtNumber(value) },
  ];
  const schemaRows = shown.columns.map((column) => ({ ...profiles.get(column.name), ...column }));
  root.append(h("h2", { text: "Schema" }), ctx.table(schemaColumns, schemaRows, { testid: "dataset-schema" }));

  const lineage = h("section", { "aria-labelledby": "dataset-models-title" },
    h("h2", { id: "dataset-models-title", text: "Models trained on it" }));
  root.append(lineage);
  const profileSection = h("section", { "aria-labelledby": "dataset-profile-title" },
    h("h2", { id: "dataset-profile-title", text: "Profile" }),
    h("p", { class: "muted", text: "Categories by count; numeric columns from the profile's quantiles (each quantile step's share spread over its range)." }));
  const grid = h("div", { class: "cards", testid: "dataset-profile", style: "display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px" });
  profileSection.append(grid);
  root.append(profileSection);

  renderModels(lineage, ctx, name).catch((error) => lineage.append(h("p", { class: "error", text: error.message })));
  for (const column of shown.profile) {
    const element = h("div", { class: "chart", testid: `profile-${column.name}` });
    grid.append(element);
    const chart = histogram(column);
    if (chart) await ctx.chart(element, chart.traces, { title: { text: column.name, x: 0.02, xanchor: "left" }, height: 240, ...chart.layout });
    else element.append(h("p", { text: `${column.name}: no values to plot` }));
  }
}

function histogram(column) {
  if (column.top_values && column.top_values.length) {
    return {
      traces: [{ type: "bar", x: column.top_values.map((v) => String(v.value)), y: column.top_values.map((v) => v.count), marker: { color: "#2f6db5" } }],
      layout: { yaxis: { title: { text: "rows" } } },
    };
  }
  const q = { ...(column.quantiles || {}), min: column.min, max: column.max };
  if (q.min === null || q.min === undefined || q.p50 === undefined) return null;
  const x = [], y = [], width = [];
  for (const [low, high, share] of QUANTILE_STEPS) {
    const span = q[high] - q[low];
    if (!(span > 0)) continue;
    x.push((q[low] + q[high]) / 2);
    width.push(span);
    y.push(share / span);
  }
  return {
    traces: [{ type: "bar", x, y, width, marker: { color: "#2f6db5", line: { color: "#ffffff", width: 1 } } }],
    layout: { bargap: 0, yaxis: { title: { text: "density" }, showticklabels: false } },
  };
}

async function renderModels(section, ctx, name) {
  const { h } = ctx;
  const rows = await ctx.api(`datasets/${encodeURIComponent(name)}/models`);
  const columns = [
    { key: "model_package_group", label: "Model", format: (value, row) => ctx.link(`#/models/${encodeURIComponent(value)}/${row.version}`, `${value} v${row.version}`) },
    { key: "dataset_version", label: "Dataset version", format: (value) => `v${value}` },
    { key: "channel", label: "Channel" },
    { key: "training_job", label: "Training job", format: (value) => (value ? ctx.link(`#/training/${encodeURIComponent(value)}`, value) : "") },
    { key: "approval_status", label: "Approval" },
  ];
  section.append(ctx.table(columns, rows, { testid: "dataset-models", empty: "No registered model was trained on this dataset." }));
}

// Experiments: the runs of an experiment, and runs compared side by side: the parameters' diff
// (with "only show differences"), each metric's min / max / last, and the metric curves overlaid
// (with a log-scale toggle). Reads the experiments service through the console's proxy.

export async function render(root, ctx, path) {
  const [head, rest] = (path || "").split(/\/(.*)/s);
  if (head === "compare" && rest) {
    await renderCompare(root, ctx, rest.split(",").filter(Boolean));
  } else {
    await renderRuns(root, ctx, head || "");
  }
}

const compareLink = (ids) => `#/experiments/compare/${ids.map(encodeURIComponent).join(",")}`;

function mainMetric(metrics) {
  const keys = Object.keys(metrics || {}).sort();
  const key = keys.find((k) => k.startsWith("validation:")) || keys[0];
  return key ? `${key} ${Number(metrics[key]).toFixed(4)}` : "";
}

async function renderRuns(root, ctx, experiment) {
  const { h } = ctx;
  root.append(h("h1", { text: "Experiments" }));
  const { experiments } = await ctx.proxy("experiments", "experiments");
  if (!experiments.length) {
    root.append(h("p", { "data-testid": "experiment-runs", text: "No runs recorded yet." }));
    return;
  }
  const chosen = experiment || experiments[0].experiment;
  const picker = h("select", { id: "experiment-name", "data-testid": "experiment-name" });
  for (const item of experiments) {
    const option = h("option", { value: item.experiment, text: `${item.experiment} (${item.runs} runs)` });
    option.selected = item.experiment === chosen;
    picker.append(option);
  }
  picker.addEventListener("change", () => ctx.go(`#/experiments/${encodeURIComponent(picker.value)}`));
  const { runs } = await ctx.proxy("experiments", `runs?experiment=${encodeURIComponent(chosen)}&limit=200`);
  const selected = new Set();
  const compare = h("button", { type: "button", "data-testid": "compare-runs", text: "Compare selected runs" });
  compare.disabled = true;
  compare.addEventListener("click", () => ctx.go(compareLink([...selected])));
  const checkbox = (run) => {
    const box = h("input", { type: "checkbox", "aria-label": `select ${run.name}`, "data-testid": "select-run", "data-run": run.run_id });
    box.addEventListener("click", (event) => event.stopPropagation());
    box.addEventListener("change", () => {
      if (box.checked) selected.add(run.run_id); else selected.delete(run.run_id);
      compare.disabled = selected.size < 1;
      compare.textContent = `Compare ${selected.size} selected run${selected.size === 1 ? "" : "s"}`;
    });
    return box;
  };
  root.append(
    h("p", {}, h("label", { for: "experiment-name", text: "Experiment " }), picker, " ", compare),
    h("div", { "data-testid": "experiment-runs" }, ctx.table([
      { key: "run_id", label: "Select", format: (_, run) => checkbox(run) },
      { key: "name", label: "Run" },
      { key: "kind", label: "Kind" },
      { key: "status", label: "Status", format: (v) => ctx.badge(v) },
      { key: "metrics", label: "Metric", format: (v) => mainMetric(v) },
      { key: "created_at", label: "Created", format: (v) => ctx.fmtTime(v) },
    ], runs)),
  );
}

function summarise(run, metric) {
  const points = (run.history || {})[metric] || [];
  const values = points.map((p) => p.value).filter((v) => Number.isFinite(v));
  const last = (run.metrics || {})[metric] ?? (values.length ? values[values.length - 1] : undefined);
  if (!values.length && last === undefined) return null;
  const all = values.length ? values : [last];
  return { min: Math.min(...all), max: Math.max(...all), last };
}

async function renderCompare(root, ctx, ids) {
  const { h } = ctx;
  const query = ids.map((id) => `runs=${encodeURIComponent(id)}`).join("&");
  const { runs } = await ctx.proxy("experiments", `compare?${query}`);
  root.append(
    h("p", {}, h("a", { href: "#/experiments", text: "← Experiments" })),
    h("h1", { text: `Comparing ${runs.length} runs` }),
  );
  const names = runs.map((run) => run.name || run.run_id);

  // Parameters, side by side; the rows whose values differ are marked.
  const keys = [...new Set(runs.flatMap((run) => Object.keys(run.parameters || {})))].sort();
  const rows = keys.map((key) => {
    const values = runs.map((run) => {
      const value = (run.parameters || {})[key];
      return value === undefined ? "—" : typeof value === "string" ? value : JSON.stringify(value);
    });
    return { key, values, differs: new Set(values).size > 1 };
  });
  const onlyDiff = h("input", { type: "checkbox", id: "only-differences", "data-testid": "only-differences" });
  const params = h("div", { "data-testid": "parameter-diff" });
  const drawParams = () => {
    const shown = rows.filter((row) => !onlyDiff.checked || row.differs);
    const table = ctx.table(
      [{ key: "key", label: "Parameter" }, ...names.map((name, i) => ({ key: `r${i}`, label: name }))],
      shown.map((row) => ({
        key: row.differs ? h("strong", { text: `${row.key} ≠` }) : row.key,
        ...Object.fromEntries(row.values.map((v, i) => [`r${i}`, v])),
      })),
    );
    shown.forEach((row, i) => {
      const tr = table.querySelectorAll("tbody tr")[i];
      if (tr && row.differs) { tr.classList.add("differs"); tr.setAttribute("data-differs", "true"); }
    });
    params.replaceChildren(shown.length ? table : h("p", { text: "No parameter differs." }));
  };
  onlyDiff.addEventListener("change", drawParams);
  root.append(h("h2", { text: "Parameters" }),
    h("p", {}, onlyDiff, h("label", { for: "only-differences", text: " Only show differences" })), params);
  drawParams();

  // Metrics: min, max and last of each run, not only the last value.
  const metrics = [...new Set(runs.flatMap((run) => [...Object.keys(run.metrics || {}), ...Object.keys(run.history || {})]))].sort();
  const summaryRows = metrics.map((metric) => ({
    metric,
    ...Object.fromEntries(runs.map((run, i) => {
      const s = summarise(run, metric);
      return [`r${i}`, s ? `last ${ctx.fmtNumber(s.last)} · min ${ctx.fmtNumber(s.min)} · max ${ctx.fmtNumber(s.max)}` : "—"];
    })),
  }));
  root.append(h("h2", { text: "Metrics" }), h("div", { "data-testid": "metric-summary" }, ctx.table(
    [{ key: "metric", label: "Metric" }, ...names.map((name, i) => ({ key: `r${i}`, label: name }))], summaryRows)));

  // Curves of one metric, one line per run.
  const curved = metrics.filter((metric) => runs.some((run) => ((run.history || {})[metric] || []).length));
  if (!curved.length) return;
  const picker = h("select", { id: "compare-metric", "data-testid": "compare-metric" });
  for (const metric of curved) picker.append(h("option", { value: metric, text: metric }));
  const logScale = h("input", { type: "checkbox", id: "log-scale", "data-testid": "log-scale" });
  const chart = h("div", { class: "chart", "data-testid": "compare-curves" });
  const draw = () => {
    const metric = picker.value;
    ctx.chart(chart, runs.map((run, i) => {
      const points = (run.history || {})[metric] || [];
      return { type: "scatter", mode: "lines+markers", name: names[i], x: points.map((p) => p.step), y: points.map((p) => p.value) };
    }), {
      xaxis: { title: { text: "step" } },
      yaxis: { title: { text: metric }, type: logScale.checked ? "log" : "linear" },
      legend: { orientation: "h" }, margin: { t: 20 },
    });
    chart.setAttribute("data-scale", logScale.checked ? "log" : "linear");
  };
  picker.addEventListener("change", draw);
  logScale.addEventListener("change", draw);
  root.append(h("h2", { text: "Curves" }),
    h("p", {}, h("label", { for: "compare-metric", text: "Metric " }), picker, " ",
      logScale, h("label", { for: "log-scale", text: " Log scale" })), chart);
  draw();
}

// Tuning jobs: the list, and one job's leaderboard, objective over trials and the parallel
// coordinates of its parameters. Reads the tuner through the console's proxy.

const RUNNING = new Set(["InProgress", "Stopping"]);

export async function render(root, ctx, path) {
  const name = (path || "").split("/")[0];
  if (name) {
    await renderJob(root, ctx, name);
  } else {
    await renderList(root, ctx);
  }
}

const link = (name) => `#/tuning/${encodeURIComponent(name)}`;

function counts(job) {
  const c = job.trial_counts || {};
  const done = (c.Completed || 0) + (c.Failed || 0) + (c.Stopped || 0);
  return `${done} / ${job.max_number_of_training_jobs}`;
}

async function renderList(root, ctx) {
  const { h } = ctx;
  root.append(h("h1", { text: "Tuning jobs" }));
  const { tuning_jobs: jobs } = await ctx.proxy("tuner", "tuning-jobs");
  if (!jobs.length) {
    root.append(h("p", { "data-testid": "tuning-jobs", text: "No tuning jobs yet (cairn tune create)." }));
    return;
  }
  root.append(h("div", { "data-testid": "tuning-jobs" }, ctx.table([
    { key: "tuning_job_name", label: "Tuning job", format: (v) => h("a", { href: link(v), text: v }) },
    { key: "status", label: "Status", format: (v) => ctx.badge(v) },
    { key: "strategy", label: "Strategy" },
    { key: "objective", label: "Objective", format: (v) => `${v.type} ${v.metric_name}` },
    { key: "trial_counts", label: "Trials ended", format: (v, job) => counts(job || { trial_counts: v }) },
    { key: "best_training_job", label: "Best", format: (v) => (v && v.objective_value != null ? ctx.fmtNumber(v.objective_value) : "") },
    { key: "created_at", label: "Created", format: (v) => ctx.fmtTime(v) },
  ], jobs, { onRowClick: (job) => ctx.go(link(job.tuning_job_name)) })));
}

function dimension(trials, key) {
  const values = trials.map((trial) => trial.parameters[key]);
  if (values.every((value) => typeof value === "number")) {
    return { label: key, values };
  }
  const levels = [...new Set(values.map(String))].sort();
  return {
    label: key, values: values.map((value) => levels.indexOf(String(value))),
    tickvals: levels.map((_, i) => i), ticktext: levels,
  };
}

async function renderJob(root, ctx, name) {
  const { h } = ctx;
  const job = await ctx.proxy("tuner", `tuning-jobs/${encodeURIComponent(name)}`);
  const objective = job.objective || {};
  const maximize = objective.type !== "Minimize";
  const trials = job.trials || [];
  const scored = trials.filter((trial) => typeof trial.objective_value === "number");
  const ranked = [...scored].sort((a, b) => (maximize ? b.objective_value - a.objective_value : a.objective_value - b.objective_value));
  const actions = h("span", { class: "actions" });
  if (RUNNING.has(job.status) && job.status !== "Stopping" && ctx.can("train")) {
    const button = h("button", { type: "button", class: "danger", "data-testid": "stop-tuning-job", text: "Stop tuning job" });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await ctx.proxy("tuner", `tuning-jobs/${encodeURIComponent(name)}/stop`, { method: "POST", body: { reason: "stopped from the console" } });
        ctx.notice(`Stop requested for ${name}.`, "ok");
      } catch (error) {
        button.disabled = false;
        ctx.notice(`Could not stop ${name}: ${error.message}`, "error");
      }
    });
    actions.append(button);
  }
  root.append(
    h("p", {}, h("a", { href: "#/tuning", text: "← Tuning jobs" })),
    h("h1", { text: name }),
    h("p", {}, "Status: ", ctx.badge(job.status, { "data-testid": "tuning-status" }),
      ` · ${job.strategy} · ${objective.type} ${objective.metric_name} · trials ended ${counts(job)} `, actions),
  );
  if (job.reason) root.append(h("p", { class: "muted", text: job.reason }));

  const paramKeys = [...new Set(trials.flatMap((trial) => Object.keys(trial.parameters || {})))].sort();
  root.append(h("h2", { text: "Leaderboard" }), h("div", { "data-testid": "tuning-leaderboard" }, ctx.table([
    { key: "rank", label: "Rank" },
    { key: "training_job_name", label: "Training job", format: (v) => h("a", { href: `#/training/${encodeURIComponent(v)}`, text: v }) },
    { key: "objective_value", label: objective.metric_name || "objective", format: (v) => ctx.fmtNumber(v) },
    { key: "status", label: "Status" },
    ...paramKeys.map((key) => ({ key: `p:${key}`, label: key })),
  ], ranked.map((trial, i) => ({
    ...trial, rank: i + 1,
    ...Object.fromEntries(paramKeys.map((key) => [`p:${key}`, shown(ctx, trial.parameters[key])])),
  })))));
  const unscored = trials.filter((trial) => typeof trial.objective_value !== "number");
  if (unscored.length) {
    root.append(h("p", { class: "muted", text: `${unscored.length} trial(s) without an objective yet: ${unscored.map((t) => `${t.number} ${t.status}`).join(", ")}` }));
  }

  const overTime = h("div", { class: "chart", "data-testid": "tuning-objective" });
  const parallel = h("div", { class: "chart", "data-testid": "tuning-parcoords" });
  root.append(h("h2", { text: "Objective over trials" }), overTime, h("h2", { text: "Parameters" }), parallel);
  if (!scored.length) {
    overTime.append(h("p", { text: "No trial has reported its objective yet." }));
    return;
  }
  const byNumber = [...scored].sort((a, b) => a.number - b.number);
  let best = null;
  const bestSoFar = byNumber.map((trial) => {
    best = best === null ? trial.objective_value
      : (maximize ? Math.max(best, trial.objective_value) : Math.min(best, trial.objective_value));
    return best;
  });
  ctx.chart(overTime, [
    { type: "scatter", mode: "markers", name: "trial", x: byNumber.map((t) => t.number), y: byNumber.map((t) => t.objective_value), text: byNumber.map((t) => t.training_job_name) },
    { type: "scatter", mode: "lines", name: "best so far", line: { shape: "hv" }, x: byNumber.map((t) => t.number), y: bestSoFar },
  ], { xaxis: { title: { text: "trial" } }, yaxis: { title: { text: objective.metric_name } }, margin: { t: 20 } });
  const dimensions = [...paramKeys.map((key) => dimension(scored, key)),
    { label: objective.metric_name || "objective", values: scored.map((t) => t.objective_value) }];
  drawParallelLines(ctx, parallel, dimensions, scored.map((t) => t.training_job_name));
}

function shown(ctx, value) {
  return typeof value === "number" ? ctx.fmtNumber(value) : String(value ?? "");
}

// Parallel coordinates as plain SVG lines (each axis scaled to its own range, one line per trial,
// coloured by the objective): plotly's `parcoords` trace needs WebGL through regl, which
// generates code at run time, and the console's Content-Security-Policy forbids `unsafe-eval`.
function drawParallelLines(ctx, element, dimensions, names) {
  const scaled = dimensions.map((d) => {
    const low = Math.min(...d.values);
    const high = Math.max(...d.values);
    return d.values.map((v) => (high > low ? (v - low) / (high - low) : 0.5));
  });
  const objective = dimensions[dimensions.length - 1].values;
  const low = Math.min(...objective);
  const high = Math.max(...objective);
  const traces = names.map((name, i) => ({
    type: "scatter", mode: "lines+markers", name, showlegend: false, hoverinfo: "text",
    x: dimensions.map((_, j) => j), y: scaled.map((column) => column[i]),
    text: dimensions.map((d) => `${name}: ${d.label} = ${d.ticktext ? d.ticktext[d.values[i]] : ctx.fmtNumber(d.values[i])}`),
    line: { color: `hsl(${Math.round(240 - 200 * (high > low ? (objective[i] - low) / (high - low) : 1))}, 70%, 45%)` },
  }));
  const ends = dimensions.flatMap((d, j) => {
    const label = (v) => (d.ticktext ? d.ticktext[v] : ctx.fmtNumber(v));
    return [
      { x: j, y: 1.06, text: label(Math.max(...d.values)), showarrow: false },
      { x: j, y: -0.06, text: label(Math.min(...d.values)), showarrow: false },
    ];
  });
  ctx.chart(element, traces, {
    xaxis: { tickvals: dimensions.map((_, j) => j), ticktext: dimensions.map((d) => d.label), showgrid: true, zeroline: false },
    yaxis: { visible: false, range: [-0.12, 1.12] },
    annotations: ends, margin: { t: 20, l: 40, r: 40 },
  });
}

// Training jobs: the list with filters, and one job's page with live metric curves, logs,
// hyperparameters, device and attempts. Reads the trainer through the console's proxy; the
// curves so far come from the events the console saw (and experiments' history when it runs),
// then grow from the live event stream while the job trains.

const STATUSES = ["Pending", "InProgress", "Stopping", "Completed", "Failed", "Stopped"];
const RUNNING = new Set(["Pending", "InProgress", "Stopping"]);
const ENDED = new Set(["TrainingJobCompleted", "TrainingJobFailed", "TrainingJobStopped"]);

export async function render(root, ctx, path) {
  const name = (path || "").split("/")[0];
  if (name) {
    await renderJob(root, ctx, name);
  } else {
    await renderList(root, ctx);
  }
}

function jobLink(ctx, name) {
  return `#/training/${encodeURIComponent(name)}`;
}

function mainMetric(metrics) {
  const keys = Object.keys(metrics || {});
  const key = keys.find((k) => k.startsWith("validation:")) || keys[0];
  return key ? `${key} ${Number(metrics[key]).toFixed(4)}` : "";
}

function select(ctx, id, label, options) {
  const field = ctx.h("select", { id, "data-testid": id });
  field.append(ctx.h("option", { value: "", text: "any" }));
  for (const option of options) field.append(ctx.h("option", { value: option, text: option }));
  return [ctx.h("label", { for: id, text: label }), field];
}

async function renderList(root, ctx) {
  const { h } = ctx;
  root.append(h("h1", { text: "Training jobs" }));
  const { training_jobs: jobs } = await ctx.proxy("trainer", "training-jobs");
  jobs.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  const algorithms = [...new Set(jobs.map((job) => job.algorithm))].sort();
  const [statusLabel, status] = select(ctx, "training-filter-status", "Status", STATUSES);
  const [algorithmLabel, algorithm] = select(ctx, "training-filter-algorithm", "Algorithm", algorithms);
  const nameField = h("input", {
    id: "training-filter-name", type: "search", "data-testid": "training-filter-name",
    placeholder: "part of a job name",
  });
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter training jobs" },
    h("div", { class: "field" }, statusLabel, status),
    h("div", { class: "field" }, algorithmLabel, algorithm),
    h("div", { class: "field" }, h("label", { for: "training-filter-name", text: "Name" }), nameField));
  filters.addEventListener("submit", (event) => event.preventDefault());
  const results = h("div", { "data-testid": "training-jobs" });
  root.append(filters, results);
  const columns = [
    { key: "job_name", label: "Job", format: (value) => h("a", { href: jobLink(ctx, value), text: value }) },
    { key: "status", label: "Status", format: (value) => ctx.badge(value) },
    { key: "algorithm", label: "Algorithm" },
    { key: "device", label: "Device", format: (value) => value || "" },
    { key: "metrics", label: "Metric", format: (value) => mainMetric(value) },
    { key: "created_at", label: "Created", format: (value) => ctx.fmtTime(value) },
  ];
  const draw = () => {
    const part = nameField.value.trim().toLowerCase();
    const shown = jobs.filter((job) =>
      (!status.value || job.status === status.value)
      && (!algorithm.value || job.algorithm === algorithm.value)
      && (!part || job.job_name.toLowerCase().includes(part)));
    results.replaceChildren(shown.length
      ? ctx.table(columns, shown, { onRowClick: (job) => ctx.go(jobLink(ctx, job.job_name)) })
      : h("p", { text: jobs.length ? "No job matches these filters." : "No training jobs yet." }));
  };
  for (const field of [status, algorithm]) field.addEventListener("change", draw);
  nameField.addEventListener("input", draw);
  draw();
}

// The curve: metric name -> Map(iteration -> value); every source adds to the same maps.
function addPoints(curves, iteration, metrics) {
  for (const [metric, value] of Object.entries(metrics || {})) {
    if (typeof value !== "number" || !Number.isFinite(value)) continue;
    if (!curves.has(metric)) curves.set(metric, new Map());
    curves.get(metric).set(iteration, value);
  }
}

function pointCount(curves) {
  let count = 0;
  for (const points of curves.values()) count += points.size;
  return count;
}

async function curveSoFar(ctx, job, curves) {
  try {
    const run = await ctx.proxy("experiments", `runs/${encodeURIComponent(job.job_name)}`);
    for (const [metric, points] of Object.entries(run.history || {})) {
      for (const point of points) addPoints(curves, point.step, { [metric]: point.value });
    }
  } catch (error) {
    // Experiments may not run on this platform: the console's own recent events remain.
  }
  const query = new URLSearchParams({
    type: "TrainingJobProgressed", correlation_id: job.correlation_id || "", limit: "500",
  });
  const events = await ctx.api(`/events/recent?${query}`).catch(() => []);
  for (const event of events) {
    if (event.data && event.data.job_name === job.job_name) {
      addPoints(curves, event.data.iteration, event.data.metrics);
    }
  }
}

function drawCurves(ctx, element, curves, counter) {
  const traces = [...curves.entries()].sort().map(([metric, points]) => {
    const steps = [...points.keys()].sort((a, b) => a - b);
    return {
      type: "scatter", mode: "lines+markers", name: metric, x: steps,
      y: steps.map((step) => points.get(step)),
      yaxis: metric.includes("loss") || metric.includes("error") ? "y2" : "y",
    };
  });
  counter.textContent = `${pointCount(curves)} points`;
  counter.setAttribute("data-count", String(pointCount(curves)));
  if (!traces.length) {
    element.replaceChildren(ctx.h("p", { text: "No metrics reported yet." }));
    return;
  }
  if (element.querySelector("p")) element.replaceChildren();
  ctx.chart(element, traces, {
    xaxis: { title: { text: "iteration" } },
    yaxis: { title: { text: "score" } },
    yaxis2: { title: { text: "loss / error" }, overlaying: "y", side: "right" },
    legend: { orientation: "h", y: 1.12 },
    margin: { t: 48, r: 64 },
  });
}

function keyValues(ctx, testid, entries) {
  const rows = entries.map(([key, value]) => ({
    key, value: value !== null && typeof value === "object" ? JSON.stringify(value) : String(value ?? ""),
  }));
  const wrap = ctx.table([{ key: "key", label: "Field" }, { key: "value", label: "Value" }], rows);
  wrap.setAttribute("data-testid", testid);
  return wrap;
}

async function renderJob(root, ctx, name) {
  const { h } = ctx;
  let job = await ctx.proxy("trainer", `training-jobs/${encodeURIComponent(name)}`);
  const curves = new Map();
  let liveEvents = 0;
  const status = ctx.badge(job.status, { "data-testid": "job-status" });
  const actions = h("span", { class: "actions" });
  const chart = h("div", { class: "chart", "data-testid": "metric-curve" });
  const counter = h("span", { class: "muted", "data-testid": "curve-points", "data-count": "0" });
  const live = h("span", { class: "muted", "data-testid": "live-events", "data-count": "0", text: "" });
  const details = h("section", { "aria-label": "Job details" });
  const logs = h("pre", { class: "json", "data-testid": "job-logs", tabindex: "0", text: "loading logs..." });
  root.append(
    h("p", {}, h("a", { href: "#/training", text: "← Training jobs" })),
    h("h1", { text: name }),
    h("p", {}, "Status: ", status, " ", actions),
    h("section", { "aria-label": "Metric curves" }, h("h2", { text: "Metrics" }), chart, h("p", {}, counter, " ", live)),
    details,
    h("section", { "aria-label": "Logs" }, h("h2", { text: "Logs" }), logs),
  );

  const drawActions = () => {
    actions.replaceChildren();
    if (RUNNING.has(job.status) && job.status !== "Stopping" && ctx.can("train")) {
      const button = h("button", { type: "button", class: "danger", "data-testid": "stop-job", text: "Stop job" });
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          job = await ctx.proxy("trainer", `training-jobs/${encodeURIComponent(name)}/stop`, {
            method: "POST", body: { reason: "stopped from the console" },
          });
          ctx.notice(`Stop requested for ${name}.`, "ok");
          await refresh();
        } catch (error) {
          button.disabled = false;
          ctx.notice(`Could not stop ${name}: ${error.message}`, "error");
        }
      });
      actions.append(button);
    }
  };
  const drawDetails = () => {
    const request = job.request || {};
    details.replaceChildren(h("div", { class: "cards" },
      h("div", { class: "card" }, h("h2", { text: "Job" }), keyValues(ctx, "job-summary", [
        ["Algorithm", request.algorithm], ["Device", job.device || (request.resources || {}).device || ""],
        ["Created", ctx.fmtTime(job.created_at)], ["Started", job.started_at ? ctx.fmtTime(job.started_at) : ""],
        ["Ended", job.ended_at ? ctx.fmtTime(job.ended_at) : ""],
        ["Iteration", job.iteration ?? ""], ["Artifact", job.artifact_uri || ""],
        ["Failure", job.failure_reason || ""], ["Stop reason", job.stop_reason || ""],
        ...Object.entries(job.metrics || {}).map(([k, v]) => [k, ctx.fmtNumber(v)]),
      ].filter(([, value]) => value !== "" && value !== null && value !== undefined))),
      h("div", { class: "card" }, h("h2", { text: "Hyperparameters" }),
        keyValues(ctx, "hyperparameters", Object.entries(request.hyperparameters || {}))),
    ), h("h2", { text: "Attempts" }), ctx.table([
      { key: "attempt", label: "Attempt" }, { key: "worker_id", label: "Worker" },
      { key: "started_at", label: "Started", format: (v) => (v ? ctx.fmtTime(v) : "") },
      { key: "ended_at", label: "Ended", format: (v) => (v ? ctx.fmtTime(v) : "") },
      { key: "resumed_from_round", label: "Resumed from round" }, { key: "last_round", label: "Last round" },
    ], job.attempts || []));
  };
  const loadLogs = async () => {
    try {
      const text = await ctx.proxy("trainer", `training-jobs/${encodeURIComponent(name)}/logs`);
      logs.textContent = (typeof text === "string" ? text : JSON.stringify(text)) || "(no log lines yet)";
    } catch (error) {
      logs.textContent = `(no logs: ${error.message})`;
    }
  };
  const refresh = async () => {
    job = await ctx.proxy("trainer", `training-jobs/${encodeURIComponent(name)}`);
    status.textContent = job.status;
    status.className = `badge ${ctx.badgeKind(job.status)}`;
    drawActions();
    drawDetails();
    await loadLogs();
  };

  // Redraw at most a few times a second however fast the job reports.
  let drawPending = false;
  const scheduleDraw = () => {
    if (drawPending) return;
    drawPending = true;
    setTimeout(() => {
      drawPending = false;
      drawCurves(ctx, chart, curves, counter);
    }, 250);
  };
  drawActions();
  drawDetails();
  // Subscribe first, so nothing published between the snapshot and the stream is lost.
  ctx.stream({ correlation_id: job.correlation_id }, (event) => {
    if (!event.data || event.data.job_name !== name) return;
    if (event.type === "TrainingJobProgressed") {
      liveEvents += 1;
      live.textContent = `${liveEvents} live updates`;
      live.setAttribute("data-count", String(liveEvents));
      addPoints(curves, event.data.iteration, event.data.metrics);
      scheduleDraw();
      if (job.status === "Pending") {
        job.status = "InProgress";
        refresh();
      }
    } else if (ENDED.has(event.type) || event.type === "TrainingJobStarted") {
      refresh();
    }
  });
  await curveSoFar(ctx, job, curves);
  if (!curves.size && job.metrics && job.iteration != null) addPoints(curves, job.iteration, job.metrics);
  drawCurves(ctx, chart, curves, counter);
  await loadLogs();
}

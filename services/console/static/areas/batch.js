// Batch transform jobs: status, shard progress, records and throughput, and where the output
// went. Reads the batch service through the console's proxy; stopping needs the deploy scope.

const RUNNING = new Set(["Pending", "InProgress"]);

export async function render(root, ctx, path) {
  const name = (path || "").split("/")[0];
  if (name) {
    await renderJob(root, ctx, name);
  } else {
    await renderList(root, ctx);
  }
}

const link = (name) => `#/batch/${encodeURIComponent(name)}`;

function progress(ctx, job) {
  const bar = ctx.h("progress", {
    max: String(job.shards_total || 1), value: String(job.shards_done || 0),
    "aria-label": `${job.job_name}: ${job.shards_done} of ${job.shards_total} shards`,
  });
  return ctx.h("span", {}, bar, ` ${job.shards_done} / ${job.shards_total}`);
}

async function renderList(root, ctx) {
  const { h } = ctx;
  root.append(h("h1", { text: "Batch transform jobs" }));
  const { transform_jobs: jobs } = await ctx.proxy("batch", "transform-jobs");
  if (!jobs.length) {
    root.append(h("p", { "data-testid": "transform-jobs", text: "No transform jobs yet (cairn batch create)." }));
    return;
  }
  root.append(h("div", { "data-testid": "transform-jobs" }, ctx.table([
    { key: "job_name", label: "Job", format: (v) => h("a", { href: link(v), text: v }) },
    { key: "status", label: "Status", format: (v) => ctx.badge(v) },
    { key: "shards_done", label: "Shards", format: (_, job) => progress(ctx, job) },
    { key: "records_out", label: "Records out", format: (v) => ctx.fmtNumber(v) },
    { key: "records_failed", label: "Failed", format: (v) => ctx.fmtNumber(v) },
    { key: "records_per_s", label: "Records/s", format: (v) => ctx.fmtNumber(v) },
    { key: "output_path", label: "Output" },
    { key: "created_at", label: "Created", format: (v) => ctx.fmtTime(v) },
  ], jobs, { onRowClick: (job) => ctx.go(link(job.job_name)) })));
}

async function renderJob(root, ctx, name) {
  const { h } = ctx;
  const job = await ctx.proxy("batch", `transform-jobs/${encodeURIComponent(name)}`);
  const actions = h("span", { class: "actions" });
  if (RUNNING.has(job.status) && ctx.can("deploy")) {
    const button = h("button", { type: "button", class: "danger", "data-testid": "stop-transform-job", text: "Stop job" });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await ctx.proxy("batch", `transform-jobs/${encodeURIComponent(name)}/stop`, { method: "POST" });
        ctx.notice(`Stop requested for ${name}.`, "ok");
        ctx.go(link(name));
      } catch (error) {
        button.disabled = false;
        ctx.notice(`Could not stop ${name}: ${error.message}`, "error");
      }
    });
    actions.append(button);
  }
  const fields = [
    ["Attempt", job.attempt], ["Model", job.model_uri || job.endpoint_name || ""],
    ["Records in", ctx.fmtNumber(job.records_in)], ["Records out", ctx.fmtNumber(job.records_out)],
    ["Records failed", ctx.fmtNumber(job.records_failed)], ["Records/s", ctx.fmtNumber(job.records_per_s)],
    ["Elapsed (s)", ctx.fmtNumber(job.elapsed_s)], ["Output", job.output_path || ""],
    ["Manifest", job.manifest_key || ""], ["Failure", job.failure_reason || ""],
    ["Created", ctx.fmtTime(job.created_at)],
  ];
  const facts = ctx.table([{ key: "key", label: "Field" }, { key: "value", label: "Value" }],
    fields.filter(([, value]) => value !== "" && value != null).map(([key, value]) => ({ key, value: String(value) })),
    { testid: "transform-job" });
  root.append(
    h("p", {}, h("a", { href: "#/batch", text: "← Batch transform jobs" })),
    h("h1", { text: name }),
    h("p", {}, "Status: ", ctx.badge(job.status, { "data-testid": "transform-status" }), " · shards: ", progress(ctx, job), " ", actions),
    facts,
    h("h2", { text: "Request" }),
    h("pre", { class: "json", tabindex: "0", text: JSON.stringify(job.request, null, 2) }),
  );
}

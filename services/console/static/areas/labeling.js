// Labeling jobs (progress, agreement, per-annotator quality) and the human review queue.
// Reads the labeling service through the console's proxy; annotators and reviewers answer on
// the labeling service's own page, which this page links to. The review queue needs `label`.

const RUNNING = new Set(["Pending", "InProgress"]);

export async function render(root, ctx, path) {
  const name = (path || "").split("/")[0];
  if (name) {
    await renderJob(root, ctx, name);
  } else {
    await renderOverview(root, ctx);
  }
}

const link = (name) => `#/labeling/${encodeURIComponent(name)}`;
const pct = (x) => (x == null ? "—" : `${(100 * x).toFixed(1)}%`);

function progress(ctx, job) {
  const total = job.item_count || 0;
  return ctx.h("span", {},
    ctx.h("progress", { max: String(total || 1), value: String(job.items_done || 0), "aria-label": `${job.job_name} progress` }),
    ` ${job.items_done || 0} / ${total}`);
}

async function pageLinks(ctx) {
  const page = await ctx.api("/labeling/page").catch(() => ({}));
  if (!page.url) return "";
  return ctx.h("p", {},
    ctx.h("a", { href: page.url, target: "_blank", rel: "noopener", "data-testid": "labeling-page-link", text: "Open the annotators' page" }),
    " · ",
    ctx.h("a", { href: page.admin_url, target: "_blank", rel: "noopener", text: "the labeling service's admin page" }));
}

async function renderOverview(root, ctx) {
  const { h } = ctx;
  root.append(h("h1", { text: "Labeling" }), await pageLinks(ctx));
  const { labeling_jobs: jobs } = await ctx.proxy("labeling", "labeling-jobs");
  jobs.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  root.append(h("h2", { text: "Labeling jobs" }), h("div", { "data-testid": "labeling-jobs" }, jobs.length ? ctx.table([
    { key: "job_name", label: "Job", format: (v) => h("a", { href: link(v), text: v }) },
    { key: "status", label: "Status", format: (v) => ctx.badge(v) },
    { key: "task_type", label: "Task" },
    { key: "items_done", label: "Progress", format: (_, job) => progress(ctx, job) },
    { key: "annotations", label: "Answers", format: (v) => ctx.fmtNumber(v) },
    { key: "workforce_name", label: "Workforce" },
    { key: "created_at", label: "Created", format: (v) => ctx.fmtTime(v) },
  ], jobs, { onRowClick: (job) => ctx.go(link(job.job_name)) }) : h("p", { text: "No labeling jobs yet." })));

  const queue = h("div", { "data-testid": "review-queue" });
  const statusField = h("select", { id: "review-status", "data-testid": "review-status" },
    ...["Pending", "Completed", ""].map((s) => h("option", { value: s, text: s || "any" })));
  const drawQueue = async () => {
    const query = statusField.value ? `?status=${statusField.value}` : "";
    try {
      const reviews = await ctx.proxy("labeling", `reviews${query}`);
      queue.replaceChildren(reviews.length ? ctx.table([
        { key: "review_id", label: "Review" },
        { key: "endpoint_name", label: "Endpoint" },
        { key: "variant_name", label: "Variant" },
        { key: "reasons", label: "Why", format: (v) => (v || []).join("; ") },
        { key: "status", label: "Status", format: (v) => ctx.badge(v) },
        { key: "claimed_by", label: "Claimed by", format: (v) => v || "" },
        { key: "reviewer", label: "Reviewer", format: (v) => v || "" },
        { key: "answer", label: "Answer", format: (v) => (v ? JSON.stringify(v) : "") },
        { key: "requested_at", label: "Requested", format: (v) => ctx.fmtTime(v) },
      ], reviews) : h("p", { text: "The review queue is empty." }));
    } catch (error) {
      queue.replaceChildren(h("p", { class: "muted", text: error.status === 403
        ? "The review queue needs a key with the label scope." : `Review queue: ${error.message}` }));
    }
  };
  statusField.addEventListener("change", drawQueue);
  root.append(h("h2", { text: "Human review queue" }),
    h("p", {}, h("label", { for: "review-status", text: "Status " }), statusField), queue);
  await drawQueue();
}

async function renderJob(root, ctx, name) {
  const { h } = ctx;
  const job = await ctx.proxy("labeling", `labeling-jobs/${encodeURIComponent(name)}/quality`);
  const agreement = job.agreement || {};
  const actions = h("span", { class: "actions" });
  if (ctx.can("label")) {
    const button = (verb, label, show) => {
      if (!show) return;
      const b = h("button", { type: "button", "data-testid": `labeling-${verb}`, text: label });
      b.addEventListener("click", async () => {
        b.disabled = true;
        try {
          await ctx.proxy("labeling", `labeling-jobs/${encodeURIComponent(name)}/${verb}`, { method: "POST" });
          ctx.notice(`${label}: ${name}`, "ok");
        } catch (error) {
          b.disabled = false;
          ctx.notice(`${label} failed: ${error.message}`, "error");
        }
      });
      actions.append(b, " ");
    };
    button("export", "Export labels so far", job.status === "InProgress");
    button("stop", "Stop job", RUNNING.has(job.status));
  }
  const annotators = Object.entries(agreement.annotators || {}).map(([who, q]) => ({ who, ...q }));
  root.append(
    h("p", {}, h("a", { href: "#/labeling", text: "← Labeling" })),
    h("h1", { text: name }),
    h("p", {}, "Status: ", ctx.badge(job.status, { "data-testid": "labeling-status" }), " ", actions),
    await pageLinks(ctx),
    h("p", {}, "Progress: ", progress(ctx, job), ` · ${job.annotations} answers · ${job.workers_per_item} per item`),
    h("h2", { text: "Agreement" }),
    ctx.table([{ key: "key", label: "Measure" }, { key: "value", label: "Value" }], [
      { key: "Krippendorff's alpha", value: agreement.krippendorff_alpha == null ? "—" : ctx.fmtNumber(agreement.krippendorff_alpha) },
      { key: "Pairwise agreement", value: pct(agreement.pairwise) },
    ], { testid: "labeling-agreement" }),
    h("h2", { text: "Annotators" }),
    h("div", { "data-testid": "labeling-annotators" }, annotators.length ? ctx.table([
      { key: "who", label: "Annotator" },
      { key: "answers", label: "Answers" },
      { key: "agreement_with_consensus", label: "Agrees with consensus", format: pct },
      { key: "pairwise_agreement", label: "Agrees with others", format: pct },
    ], annotators) : h("p", { text: "No answers yet." })),
    h("h2", { text: "Labels" }),
    h("p", { text: `${(job.labels || []).join(", ")} · output ${job.output_dataset_uri || "(not exported yet)"}` }),
  );
}

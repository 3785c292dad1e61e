// Models: model package groups, a group's versions, and one version's metrics, approval (with a
// reason; the registry checks the `approve` scope and audits it under the caller) and lineage:
// dataset -> training job -> model version -> endpoints -> monitor runs, drawn as an SVG graph
// whose nodes are links to the other areas' pages.

const SVG = "http://www.w3.org/2000/svg";
const STATUS_CLASS = { Approved: "ok", Rejected: "bad", PendingManualApproval: "warn" };

export async function render(root, ctx, path) {
  const [group, version] = (path || "").split("/").map(decodeURIComponent);
  if (group && version) await renderVersion(root, ctx, group, version);
  else if (group) await renderGroup(root, ctx, group);
  else await renderGroups(root, ctx);
}

const groupLink = (group) => `#/models/${encodeURIComponent(group)}`;
const versionLink = (group, version) => `${groupLink(group)}/${version}`;
const status = (ctx, value) => ctx.h("span", { class: `badge ${STATUS_CLASS[value] || "warn"}`, text: value });

function mainMetric(metrics) {
  const keys = Object.keys(metrics || {});
  const key = keys.find((k) => k.endsWith(":auc")) || keys.find((k) => k.startsWith("validation:")) || keys[0];
  return key ? `${key} ${Number(metrics[key]).toFixed(4)}` : "";
}

async function renderGroups(root, ctx) {
  const { h } = ctx;
  root.append(h("h1", { text: "Models" }));
  const groups = await ctx.proxy("registry", "model-package-groups");
  const columns = [
    { key: "name", label: "Model package group", format: (value) => ctx.link(groupLink(value), value) },
    { key: "latest_version", label: "Latest version" },
    { key: "aliases", label: "Aliases", format: (value) => Object.entries(value || {}).map(([a, v]) => `${a} -> v${v}`).join(", ") },
    { key: "updated_at", label: "Updated", format: (value) => ctx.fmtTime(value) },
  ];
  root.append(ctx.table(columns, groups, {
    testid: "models-groups", empty: "No models registered yet.", onRowClick: (row) => ctx.go(groupLink(row.name)),
  }));
}

async function renderGroup(root, ctx, group) {
  const { h } = ctx;
  const versions = await ctx.proxy("registry", `model-package-groups/${encodeURIComponent(group)}/versions`);
  versions.sort((a, b) => b.version - a.version);
  root.append(h("p", {}, ctx.link("#/models", "All models")), h("h1", { text: group }));
  const columns = [
    { key: "version", label: "Version", format: (value) => ctx.link(versionLink(group, value), `v${value}`) },
    { key: "approval_status", label: "Approval", format: (value) => status(ctx, value) },
    { key: "metrics", label: "Metric", format: (value) => mainMetric(value) },
    { key: "endpoints", label: "Endpoints", format: (value) => Object.keys(value || {}).join(", ") },
    { key: "created_at", label: "Registered", format: (value) => ctx.fmtTime(value) },
  ];
  root.append(ctx.table(columns, versions, {
    testid: "models-versions", onRowClick: (row) => ctx.go(versionLink(group, row.version)),
  }));
  const names = Object.keys(versions[0]?.metrics || {});
  if (names.length && versions.length) {
    const element = h("div", { testid: "models-metrics-chart" });
    root.append(h("h2", { text: "Metrics by version" }), element);
    const ordered = [...versions].reverse();
    await ctx.chart(element, names.map((metric) => ({
      type: "scatter", mode: "lines+markers", name: metric,
      x: ordered.map((v) => `v${v.version}`), y: ordered.map((v) => v.metrics[metric]),
    })), { title: { text: `${group}: metrics by version`, x: 0.02, xanchor: "left" }, height: 320 });
  }
}

async function renderVersion(root, ctx, group, ref) {
  const { h } = ctx;
  const base = `model-package-groups/${encodeURIComponent(group)}/versions/${encodeURIComponent(ref)}`;
  const [version, lineage] = await Promise.all([ctx.proxy("registry", base), ctx.proxy("registry", `${base}/lineage`)]);
  root.append(
    h("p", {}, ctx.link("#/models", "All models"), " / ", ctx.link(groupLink(group), group)),
    h("h1", { text: `${group} v${version.version}` }),
    h("p", {}, "Approval: ", h("span", { testid: "model-approval-status" }, status(ctx, version.approval_status)),
      version.approved_by ? ` by ${version.approved_by}` : "",
      `; ${version.framework || ""} ${version.framework_version || ""}, ${version.task || ""}`),
  );
  const metrics = Object.entries(version.metrics || {}).map(([name, value]) => ({ name, value }));
  root.append(h("h2", { text: "Metrics" }), ctx.table(
    [{ key: "name", label: "Metric" }, { key: "value", label: "Value", format: (value) => ctx.fmtNumber(value) }],
    metrics, { testid: "model-metrics", empty: "No metrics recorded." },
  ));
  if (ctx.can("approve")) root.append(approvalForm(ctx, group, version));
  const history = [...(version.approval_history || [])].reverse();
  root.append(h("h2", { text: "Approval history" }), ctx.table([
    { key: "changed_at", label: "When", format: (value) => ctx.fmtTime(value) },
    { key: "status", label: "Status", format: (value) => status(ctx, value) },
    { key: "changed_by", label: "By" },
    { key: "reason", label: "Reason" },
  ], history, { testid: "model-approval-history" }));

  const graph = h("section", { "aria-labelledby": "model-lineage-title" },
    h("h2", { id: "model-lineage-title", text: "Lineage" }));
  root.append(graph);
  const runs = await monitorRuns(ctx, lineage.endpoints || [], group, version.version);
  graph.append(lineageGraph(ctx, group, version, lineage, runs));
}

function approvalForm(ctx, group, version) {
  const { h } = ctx;
  const reason = h("input", { id: "approval-reason", type: "text", testid: "approval-reason", maxlength: 500, placeholder: "why (kept in the audit trail)" });
  const decide = async (decision, button) => {
    button.disabled = true;
    try {
      await ctx.proxy("registry", `model-package-groups/${encodeURIComponent(group)}/versions/${version.version}/approval`, {
        method: "POST", body: { status: decision, reason: reason.value.trim() },
      });
      ctx.notice(`${group} v${version.version}: ${decision}`, "ok");
      ctx.go(versionLink(group, version.version));
    } catch (error) {
      ctx.notice(`Not ${decision.toLowerCase()}: ${error.message}`, "error");
      button.disabled = false;
    }
  };
  const approve = ctx.button("Approve", "approve", () => decide("Approved", approve), { testid: "approve-version" });
  const reject = ctx.button("Reject", "approve", () => decide("Rejected", reject), { testid: "reject-version", class: "action danger" });
  const form = h("form", { class: "card", testid: "approval-form", "aria-labelledby": "approval-title" },
    h("h2", { id: "approval-title", text: "Decide" }),
    h("div", { class: "field" }, h("label", { for: "approval-reason", text: "Reason" }), reason),
    h("div", { class: "toolbar" }, approve, reject));
  form.addEventListener("submit", (event) => event.preventDefault());
  return form;
}

async function monitorRuns(ctx, endpoints, group, number) {
  const found = {};
  await Promise.all(endpoints.map(async (endpoint) => {
    try {
      const runs = await ctx.proxy("monitor", `schedules/${encodeURIComponent(endpoint.endpoint_name)}/runs`);
      found[endpoint.endpoint_name] = runs.filter((run) => run.model_package_group === group && run.model_version === number);
    } catch {
      found[endpoint.endpoint_name] = null; // no schedule, or no monitor on this platform
    }
  }));
  return found;
}

function lineageGraph(ctx, group, version, lineage, runs) {
  const job = lineage.training_job?.job_name;
  const columns = [
    (lineage.datasets || []).map((d) => {
      const [name, number] = String(d.uri).replace("dataset://", "").split("@");
      return { label: `${d.channel}: ${name} v${number || "?"}`, href: `#/datasets/${encodeURIComponent(name)}${number ? `/${number}` : ""}` };
    }),
    job ? [{ label: `job ${job}`, href: `#/training/${encodeURIComponent(job)}` }] : [],
    [{ label: `${group} v${version.version} (${version.approval_status})`, href: versionLink(group, version.version) }],
    (lineage.endpoints || []).map((e) => ({ label: `endpoint ${e.endpoint_name} [${e.variant_names.join(", ")}]`, href: `#/endpoints/${encodeURIComponent(e.endpoint_name)}` })),
    (lineage.endpoints || []).flatMap((e) => {
      const list = runs[e.endpoint_name];
      if (!list) return [];
      const drifted = list.filter((run) => run.drifted_features.length).length;
      return [{ label: `${list.length} monitor runs, ${drifted} with drift`, href: `#/monitor/${encodeURIComponent(e.endpoint_name)}` }];
    }),
  ];
  const titles = ["Datasets", "Training job", "Model version", "Endpoints", "Monitor runs"];
  const nodeW = 210, nodeH = 44, gapX = 40, gapY = 14, top = 28;
  const rows = Math.max(1, ...columns.map((c) => c.length));
  const width = columns.length * (nodeW + gapX), height = top + rows * (nodeH + gapY);
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "group", "aria-label": "Lineage graph", "data-testid": "model-lineage" });
  const place = (ci, ri) => ({ x: ci * (nodeW + gapX), y: top + ri * (nodeH + gapY) + ((rows - columns[ci].length) * (nodeH + gapY)) / 2 });
  columns.forEach((column, ci) => {
    svg.append(el("text", { x: ci * (nodeW + gapX), y: 14, class: "lineage-title", "font-weight": "bold", "font-size": 13 }, titles[ci]));
    if (ci === 0) return;
    column.forEach((_, ri) => {
      const to = place(ci, ri);
      const sources = ci === 4 ? [ri] : columns[ci - 1].map((__, i) => i);
      for (const si of sources) {
        if (!columns[ci - 1][si]) continue;
        const from = place(ci - 1, si);
        svg.append(el("path", {
          d: `M${from.x + nodeW},${from.y + nodeH / 2} C${from.x + nodeW + gapX / 2},${from.y + nodeH / 2} ${to.x - gapX / 2},${to.y + nodeH / 2} ${to.x},${to.y + nodeH / 2}`,
          fill: "none", stroke: "#7a8594", "stroke-width": 1.5,
        }));
      }
    });
  });
  columns.forEach((column, ci) => column.forEach((node, ri) => {
    const { x, y } = place(ci, ri);
    const anchor = el("a", { href: node.href, "aria-label": node.label });
    anchor.append(
      el("rect", { x, y, width: nodeW, height: nodeH, rx: 6, fill: ci === 2 ? "#dce8f7" : "#f3f5f8", stroke: "#2f6db5" }),
      el("text", { x: x + 8, y: y + nodeH / 2 + 4, "font-size": 12, fill: "#1b2430" }, shorten(node.label, 32)),
      el("title", {}, node.label),
    );
    svg.append(anchor);
  }));
  return svg;
}

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const shorten = (text, size) => (text.length > size ? `${text.slice(0, size - 1)}…` : text);

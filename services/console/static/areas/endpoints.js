// Endpoints: every endpoint, then one endpoint's variants and weights, its rollout with the
// alarms that would roll it back, live traffic per variant (from the gateway's metrics through
// this area's route), and for a key with `deploy`: change the weights, roll the rollout back.
// The deployer checks the scope and audits each change under the caller.

const POLL_MS = 3000;
const HISTORY = 60; // points kept on the live chart (3 minutes)

export async function render(root, ctx, path) {
  const name = decodeURIComponent((path || "").split("/")[0]);
  if (name) await renderEndpoint(root, ctx, name);
  else await renderList(root, ctx);
}

const endpointLink = (name) => `#/endpoints/${encodeURIComponent(name)}`;
const badge = (status) => ({ InService: "ok", Failed: "bad", Deleted: "bad" }[status] || "warn");
const percent = (ctx, share) => `${ctx.fmtNumber(100 * share)} %`;

function shares(variants) {
  const total = variants.reduce((sum, v) => sum + v.weight, 0);
  return new Map(variants.map((v) => [v.variant_name, total > 0 ? v.weight / total : 0]));
}

async function renderList(root, ctx) {
  const { h } = ctx;
  root.append(h("h1", { text: "Endpoints" }));
  const endpoints = (await ctx.proxy("deployer", "endpoints")).filter((e) => e.status !== "Deleted");
  const columns = [
    { key: "endpoint_name", label: "Endpoint", format: (value) => ctx.link(endpointLink(value), value) },
    { key: "status", label: "Status", format: (value) => h("span", { class: `badge ${badge(value)}`, text: value }) },
    { key: "revision", label: "Revision" },
    { key: "production_variants", label: "Variants", format: (variants) => {
      const share = shares(variants);
      return variants.map((v) => `${v.variant_name}: ${v.model_package_group} v${v.model_version} (${percent(ctx, share.get(v.variant_name))})`).join("; ");
    } },
    { key: "rollout", label: "Rollout", format: (value) => (value ? `${value.policy.mode} at ${ctx.fmtNumber(value.traffic_percent)} %` : "") },
    { key: "updated_at", label: "Updated", format: (value) => ctx.fmtTime(value) },
  ];
  root.append(ctx.table(columns, endpoints, {
    testid: "endpoints-table", empty: "No endpoints yet.", onRowClick: (row) => ctx.go(endpointLink(row.endpoint_name)),
  }));
}

async function renderEndpoint(root, ctx, name) {
  const { h } = ctx;
  const endpoint = await ctx.proxy("deployer", `endpoints/${encodeURIComponent(name)}`);
  root.append(
    h("p", {}, ctx.link("#/endpoints", "All endpoints")),
    h("h1", { text: name }),
    h("p", {}, "Status: ", h("span", { class: `badge ${badge(endpoint.status)}`, testid: "endpoint-status", text: endpoint.status }),
      ` - revision ${endpoint.revision}, updated `, ctx.fmtTime(endpoint.updated_at)),
  );
  const share = shares(endpoint.production_variants);
  const variantColumns = [
    { key: "variant_name", label: "Variant" },
    { key: "model_package_group", label: "Model", format: (value, row) => ctx.link(`#/models/${encodeURIComponent(value)}/${row.model_version}`, `${value} v${row.model_version}`) },
    { key: "weight", label: "Weight", format: (value) => ctx.fmtNumber(value) },
    { key: "variant_name", label: "Traffic share", format: (value) => percent(ctx, share.get(value) || 0) },
    { key: "instance_count", label: "Instances" },
  ];
  const variants = [...endpoint.production_variants];
  if (endpoint.shadow_variant) variants.push({ ...endpoint.shadow_variant, variant_name: `${endpoint.shadow_variant.variant_name} (shadow)`, weight: 0 });
  root.append(h("h2", { text: "Variants" }), ctx.table(variantColumns, variants, { testid: "endpoint-variants" }));
  if (ctx.can("deploy")) root.append(weightsForm(ctx, endpoint));
  root.append(rolloutPanel(ctx, endpoint));
  root.append(trafficPanel(ctx, name));
}

function weightsForm(ctx, endpoint) {
  const { h } = ctx;
  const fields = endpoint.production_variants.map((v) => {
    const id = `weight-${v.variant_name}`;
    return [v.variant_name, h("input", { id, type: "number", min: 0, step: "any", value: String(v.weight), testid: id, required: true }), id];
  });
  const submit = h("button", { type: "submit", class: "action", testid: "weights-submit", text: "Change weights" });
  const form = h("form", { class: "card", testid: "weights-form", "aria-labelledby": "weights-title" },
    h("h2", { id: "weights-title", text: "Change weights" }),
    fields.map(([variant, input, id]) => h("div", { class: "field" }, h("label", { for: id, text: `Weight of ${variant}` }), input)),
    h("div", { class: "toolbar" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const variants = fields.map(([variant_name, input]) => ({ variant_name, weight: Number(input.value) }));
    if (variants.some((v) => !Number.isFinite(v.weight) || v.weight < 0)) {
      ctx.notice("Weights must be numbers of 0 or more.", "error");
      return;
    }
    submit.disabled = true;
    try {
      const updated = await ctx.proxy("deployer", `endpoints/${encodeURIComponent(endpoint.endpoint_name)}/weights`, { method: "POST", body: { variants } });
      ctx.notice(`${endpoint.endpoint_name}: weights changed (revision ${updated.revision})`, "ok");
      ctx.go(endpointLink(endpoint.endpoint_name));
    } catch (error) {
      ctx.notice(`Weights not changed: ${error.message}`, "error");
      submit.disabled = false;
    }
  });
  return form;
}

function rolloutPanel(ctx, endpoint) {
  const { h } = ctx;
  const section = h("section", { class: "card", testid: "endpoint-rollout", "aria-labelledby": "rollout-title" },
    h("h2", { id: "rollout-title", text: "Rollout" }));
  const rollout = endpoint.rollout;
  const policy = rollout?.policy || endpoint.config?.rollout;
  if (!rollout) section.append(h("p", { text: `No rollout in progress (next change: ${policy?.mode || "all_at_once"}).` }));
  else {
    const errorRate = rollout.observed_requests ? rollout.observed_errors / rollout.observed_requests : 0;
    section.append(
      h("p", {}, `${policy.mode}, step ${rollout.step}: `, h("strong", { text: `${ctx.fmtNumber(rollout.traffic_percent)} %` }),
        ` of traffic to ${rollout.watched_variants.join(", ")}, since `, ctx.fmtTime(rollout.phase_started_at),
        ` (bake ${ctx.fmtNumber(policy.bake_time_s)} s)`),
      h("progress", { max: 100, value: rollout.traffic_percent, "aria-label": "Share of traffic on the new variant", testid: "rollout-progress" }),
    );
    const alarms = [
      { alarm: "Error rate", limit: percent(ctx, policy.max_error_rate), observed: `${percent(ctx, errorRate)} of ${ctx.fmtNumber(rollout.observed_requests)} requests`, tripped: errorRate > policy.max_error_rate },
      { alarm: "p99 latency", limit: policy.max_p99_latency_ms ? `${ctx.fmtNumber(policy.max_p99_latency_ms)} ms` : "none", observed: `${ctx.fmtNumber(rollout.worst_p99_latency_ms)} ms (worst)`, tripped: Boolean(policy.max_p99_latency_ms && rollout.worst_p99_latency_ms > policy.max_p99_latency_ms) },
    ];
    section.append(ctx.table([
      { key: "alarm", label: "Alarm" }, { key: "limit", label: "Rolls back above" }, { key: "observed", label: "Observed" },
      { key: "tripped", label: "State", format: (value) => h("span", { class: `badge ${value ? "bad" : "ok"}`, text: value ? "tripped" : "ok" }) },
    ], alarms, { testid: "rollout-alarms" }));
    if (ctx.can("deploy")) section.append(rollbackForm(ctx, endpoint));
  }
  const last = endpoint.last_rollback;
  if (last) {
    section.append(h("p", { testid: "last-rollback" }, "Last rollback: ", ctx.fmtTime(last.at),
      ` - ${last.rolled_back_variant} undone, revision ${last.restored_revision} restored: ${last.reason}`));
  }
  return section;
}

function rollbackForm(ctx, endpoint) {
  const { h } = ctx;
  const reason = h("input", { id: "rollback-reason", type: "text", testid: "rollback-reason", maxlength: 500, placeholder: "why" });
  const button = h("button", { type: "submit", class: "action danger", testid: "rollback-submit", text: "Roll back" });
  const form = h("form", { class: "inline" }, h("label", { for: "rollback-reason", text: "Reason" }), reason, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      await ctx.proxy("deployer", `endpoints/${encodeURIComponent(endpoint.endpoint_name)}/rollback`, {
        method: "POST", body: { reason: reason.value.trim() || "rolled back from the console" },
      });
      ctx.notice(`${endpoint.endpoint_name}: rolled back`, "ok");
      ctx.go(endpointLink(endpoint.endpoint_name));
    } catch (error) {
      ctx.notice(`Not rolled back: ${error.message}`, "error");
      button.disabled = false;
    }
  });
  return form;
}

// Prometheus' histogram_quantile: linear interpolation inside the bucket holding the rank.
function quantileMs(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let lowerLe = 0, lowerCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return lowerLe * 1000;
      return 1000 * (lowerLe + (le - lowerLe) * ((rank - lowerCount) / Math.max(count - lowerCount, 1e-12)));
    }
    lowerLe = le;
    lowerCount = count;
  }
  return lowerLe * 1000;
}

function trafficPanel(ctx, name) {
  const { h } = ctx;
  const summary = h("div", { testid: "endpoint-traffic" }, h("p", { text: "Reading the gateway's metrics..." }));
  const chart = h("div", { testid: "endpoint-traffic-chart" });
  const section = h("section", { class: "card", "aria-labelledby": "traffic-title" },
    h("h2", { id: "traffic-title", text: "Live traffic" }),
    h("p", { class: "muted", text: `Every ${POLL_MS / 1000} s from the gateway; rates and percentiles over the last interval (since the gateway started on the first reading).` }),
    summary, chart);
  let previous = null;
  const series = new Map(); // variant -> {x: [], y: []}
  const poll = async () => {
    if (!section.isConnected && previous) return;
    let now;
    try {
      now = await ctx.api(`endpoints/${encodeURIComponent(name)}/traffic`);
    } catch (error) {
      summary.replaceChildren(h("p", { class: "error", text: `No traffic figures: ${error.message}` }));
      return;
    }
    const before = new Map((previous?.variants || []).map((v) => [v.variant, v]));
    const seconds = previous ? (Date.parse(now.scraped_at) - Date.parse(previous.scraped_at)) / 1000 : null;
    const rows = now.variants.map((v) => {
      const old = before.get(v.variant);
      const window = old ? v.buckets.map(([le, count], i) => [le, count - (old.buckets[i]?.[1] || 0)]) : v.buckets;
      const requests = old ? v.requests - old.requests : v.requests;
      return {
        variant: v.variant,
        rate: seconds && old ? requests / seconds : null,
        errors: old ? v.errors - old.errors : v.errors,
        client_errors: old ? v.client_errors - old.client_errors : v.client_errors,
        p50: quantileMs(window, 0.5), p99: quantileMs(window, 0.99), total: v.requests,
      };
    });
    previous = now;
    summary.replaceChildren(ctx.table([
      { key: "variant", label: "Variant" },
      { key: "rate", label: "Requests/s", format: (value) => (value === null ? "..." : ctx.fmtNumber(value)) },
      { key: "p50", label: "p50 ms", format: (value) => (value === null ? "-" : ctx.fmtNumber(value)) },
      { key: "p99", label: "p99 ms", format: (value) => (value === null ? "-" : ctx.fmtNumber(value)) },
      { key: "errors", label: "Errors (5xx)" },
      { key: "client_errors", label: "Refused (4xx)" },
      { key: "total", label: "Requests in all", format: (value) => ctx.fmtNumber(value) },
    ], rows, { testid: "traffic-table", empty: "No traffic recorded for this endpoint yet." }));
    if (seconds === null) return;
    for (const row of rows) {
      const points = series.get(row.variant) || { x: [], y: [] };
      points.x.push(new Date(now.scraped_at));
      points.y.push(row.rate);
      if (points.x.length > HISTORY) { points.x.shift(); points.y.shift(); }
      series.set(row.variant, points);
    }
    await ctx.chart(chart, [...series.entries()].map(([variant, p]) => ({ type: "scatter", mode: "lines+markers", name: variant, x: p.x, y: p.y })),
      { title: { text: "Requests/s per variant", x: 0.02, xanchor: "left" }, height: 280, yaxis: { rangemode: "tozero" } });
  };
  poll();
  ctx.every(POLL_MS, poll);
  return section;
}

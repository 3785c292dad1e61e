// Pipelines: definitions and their executions, and one execution's DAG drawn as SVG with each
// step's status. The edges come from the definition as the pipelines service derives them: step
// references in arguments and conditions, `depends_on`, and a condition's branches. Stopping and
// retrying an execution need the train scope.

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 150;
const NODE_H = 46;
const GAP_X = 60;
const GAP_Y = 22;
const COLOURS = {
  Pending: "#d0d4da", Executing: "#8ab4f8", Retrying: "#f6c26b", Succeeded: "#7fd18b",
  Failed: "#f28b82", Skipped: "#eceff1", Stopped: "#c5a3e0",
};

export async function render(root, ctx, path) {
  const [kind, name] = (path || "").split("/");
  if (kind === "execution" && name) {
    await renderExecution(root, ctx, name);
  } else if (kind === "pipeline" && name) {
    await renderPipeline(root, ctx, name);
  } else {
    await renderOverview(root, ctx);
  }
}

const pipelineLink = (name) => `#/pipelines/pipeline/${encodeURIComponent(name)}`;
const executionLink = (id) => `#/pipelines/execution/${encodeURIComponent(id)}`;
const statusCell = (ctx) => (v) => ctx.badge(v);

function executionsTable(ctx, executions) {
  const { h } = ctx;
  if (!executions.length) return h("p", { text: "No executions yet." });
  return ctx.table([
    { key: "execution_id", label: "Execution", format: (v) => h("a", { href: executionLink(v), text: v.slice(0, 12) }) },
    { key: "pipeline_name", label: "Pipeline" },
    { key: "pipeline_version", label: "Version" },
    { key: "status", label: "Status", format: statusCell(ctx) },
    { key: "steps", label: "Steps", format: (steps) => steps.map((s) => `${s.name}: ${s.status}`).join(", ") },
    { key: "created_at", label: "Started", format: (v) => ctx.fmtTime(v) },
  ], executions, { onRowClick: (run) => ctx.go(executionLink(run.execution_id)) });
}

async function renderOverview(root, ctx) {
  const { h } = ctx;
  root.append(h("h1", { text: "Pipelines" }));
  const [{ pipelines }, { executions }] = await Promise.all([
    ctx.proxy("pipelines", "pipelines"), ctx.proxy("pipelines", "pipeline-executions"),
  ]);
  executions.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  root.append(
    h("h2", { text: "Definitions" }),
    h("div", { "data-testid": "pipeline-list" }, pipelines.length ? ctx.table([
      { key: "name", label: "Pipeline", format: (v) => h("a", { href: pipelineLink(v), text: v }) },
      { key: "latest_version", label: "Version" },
      { key: "steps", label: "Steps" },
      { key: "description", label: "Description" },
      { key: "updated_at", label: "Updated", format: (v) => ctx.fmtTime(v) },
    ], pipelines, { onRowClick: (p) => ctx.go(pipelineLink(p.name)) }) : h("p", { text: "No pipelines yet (cairn pipelines create)." })),
    h("h2", { text: "Recent executions" }),
    h("div", { "data-testid": "pipeline-executions" }, executionsTable(ctx, executions.slice(0, 50))),
  );
}

async function renderPipeline(root, ctx, name) {
  const { h } = ctx;
  const [pipeline, { executions }] = await Promise.all([
    ctx.proxy("pipelines", `pipelines/${encodeURIComponent(name)}`),
    ctx.proxy("pipelines", `pipelines/${encodeURIComponent(name)}/executions`),
  ]);
  executions.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  const dag = h("div", { class: "dag", "data-testid": "pipeline-dag" });
  drawDag(ctx, dag, pipeline.definition, {});
  root.append(
    h("p", {}, h("a", { href: "#/pipelines", text: "← Pipelines" })),
    h("h1", { text: `${name} (version ${pipeline.version})` }),
    h("p", { text: pipeline.definition.description || "" }),
    h("h2", { text: "Steps" }), dag,
    h("h2", { text: "Parameters" }),
    h("pre", { class: "json", tabindex: "0", text: JSON.stringify(pipeline.definition.parameters, null, 2) }),
    h("h2", { text: "Executions" }),
    h("div", { "data-testid": "pipeline-executions" }, executionsTable(ctx, executions)),
  );
}

async function renderExecution(root, ctx, id) {
  const { h } = ctx;
  const run = await ctx.proxy("pipelines", `pipeline-executions/${encodeURIComponent(id)}`);
  const pipeline = await ctx.proxy("pipelines",
    `pipelines/${encodeURIComponent(run.pipeline_name)}?version=${run.pipeline_version}`);
  const states = Object.fromEntries(run.steps.map((step) => [step.name, step]));
  const actions = h("span", { class: "actions" });
  const act = (verb, label) => {
    const button = h("button", { type: "button", "data-testid": `execution-${verb}`, text: label });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await ctx.proxy("pipelines", `pipeline-executions/${encodeURIComponent(id)}/${verb}`, { method: "POST" });
        ctx.notice(`${label}: ${id}`, "ok");
        root.replaceChildren();
        await renderExecution(root, ctx, id);
      } catch (error) {
        button.disabled = false;
        ctx.notice(`${label} failed: ${error.message}`, "error");
      }
    });
    actions.append(button, " ");
  };
  if (ctx.can("train")) {
    if (run.status === "Executing") act("stop", "Stop execution");
    if (run.status === "Failed" || run.status === "Stopped") act("retry", "Retry");
  }
  const dag = h("div", { class: "dag", "data-testid": "pipeline-dag" });
  drawDag(ctx, dag, pipeline.definition, states);
  root.append(
    h("p", {}, h("a", { href: pipelineLink(run.pipeline_name), text: `← ${run.pipeline_name}` })),
    h("h1", { text: `Execution ${id.slice(0, 12)}` }),
    h("p", {}, "Status: ", ctx.badge(run.status, { "data-testid": "execution-status" }),
      ` · ${run.pipeline_name} version ${run.pipeline_version} · started by ${run.started_by} `, actions),
    run.failure_reason ? h("p", { class: "error", text: `${run.failed_step}: ${run.failure_reason}` }) : "",
    dag,
    h("h2", { text: "Steps" }),
    ctx.table([
      { key: "name", label: "Step" }, { key: "type", label: "Type" },
      { key: "status", label: "Status", format: statusCell(ctx) },
      { key: "attempt", label: "Attempt" },
      { key: "cache_hit", label: "Cached", format: (v) => (v ? "yes" : "") },
      { key: "properties", label: "Properties", format: (v) => summariseProperties(v) },
      { key: "failure_reason", label: "Failure", format: (v) => v || "" },
    ], run.steps),
    h("h2", { text: "Parameters" }),
    h("pre", { class: "json", tabindex: "0", text: JSON.stringify(run.parameters, null, 2) }),
  );
}

function summariseProperties(props) {
  const parts = [];
  for (const [key, value] of Object.entries(props || {})) {
    if (value && typeof value === "object") {
      for (const [k, v] of Object.entries(value)) parts.push(`${key}.${k}=${typeof v === "number" ? v.toFixed(4) : v}`);
    } else {
      parts.push(`${key}=${value}`);
    }
  }
  return parts.join(" ");
}

// The DAG ---------------------------------------------------------------------------------

function refsIn(value, found) {
  if (Array.isArray(value)) {
    value.forEach((item) => refsIn(item, found));
  } else if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "get" && typeof value.get === "string") {
      const parts = value.get.split(".");
      if (parts[0] === "steps" && parts[1]) found.add(parts[1]);
    } else {
      keys.forEach((key) => refsIn(value[key], found));
    }
  }
  return found;
}

function edgesOf(definition) {
  const edges = [];
  for (const step of definition.steps) {
    const from = refsIn([step.arguments, step.condition, step.error_message], new Set(step.depends_on || []));
    for (const source of from) edges.push({ from: source, to: step.name, kind: "data" });
    for (const branch of step.if_steps || []) edges.push({ from: step.name, to: branch, kind: "if" });
    for (const branch of step.else_steps || []) edges.push({ from: step.name, to: branch, kind: "else" });
  }
  return edges;
}

function layers(definition, edges) {
  const depth = Object.fromEntries(definition.steps.map((step) => [step.name, 0]));
  for (let round = 0; round < definition.steps.length; round += 1) {
    let moved = false;
    for (const edge of edges) {
      if (edge.from in depth && depth[edge.to] < depth[edge.from] + 1) {
        depth[edge.to] = depth[edge.from] + 1;
        moved = true;
      }
    }
    if (!moved) break;
  }
  return depth;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawDag(ctx, container, definition, states) {
  const edges = edgesOf(definition);
  const depth = layers(definition, edges);
  const columns = [];
  for (const step of definition.steps) (columns[depth[step.name]] ||= []).push(step);
  const rows = Math.max(...columns.map((column) => column.length));
  const width = columns.length * (NODE_W + GAP_X) - GAP_X + 20;
  const height = rows * (NODE_H + GAP_Y) - GAP_Y + 20;
  const at = {};
  columns.forEach((column, x) => column.forEach((step, y) => {
    const offset = ((rows - column.length) * (NODE_H + GAP_Y)) / 2;
    at[step.name] = { x: 10 + x * (NODE_W + GAP_X), y: 10 + offset + y * (NODE_H + GAP_Y) };
  }));
  const picture = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": `Pipeline DAG: ${definition.steps.map((s) => `${s.name} ${(states[s.name] || {}).status || ""}`).join(", ")}`,
  });
  const defs = svg("defs", {});
  const marker = svg("marker", { id: "dag-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#555" }));
  defs.append(marker);
  picture.append(defs);
  for (const edge of edges) {
    const a = at[edge.from];
    const b = at[edge.to];
    if (!a || !b) continue;
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    picture.append(svg("path", {
      d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, fill: "none", stroke: "#555",
      "stroke-dasharray": edge.kind === "data" ? "" : "5,3", "marker-end": "url(#dag-arrow)",
    }));
    if (edge.kind !== "data") {
      picture.append(svg("text", { x: mid, y: (y1 + y2) / 2 - 4, "font-size": 11, "text-anchor": "middle", fill: "#333" }, edge.kind));
    }
  }
  for (const step of definition.steps) {
    const { x, y } = at[step.name];
    const status = (states[step.name] || {}).status || "";
    const group = svg("g", { "data-testid": "dag-step", "data-step": step.name, "data-status": status });
    group.append(
      svg("rect", { x, y, width: NODE_W, height: NODE_H, rx: 8, fill: COLOURS[status] || "#ffffff", stroke: "#333" }),
      svg("text", { x: x + NODE_W / 2, y: y + 19, "text-anchor": "middle", "font-size": 13, "font-weight": "bold", fill: "#111" }, step.name),
      svg("text", { x: x + NODE_W / 2, y: y + 36, "text-anchor": "middle", "font-size": 11, fill: "#222" },
        status ? `${step.type} · ${status}` : step.type),
    );
    picture.append(group);
  }
  container.replaceChildren(picture);
}

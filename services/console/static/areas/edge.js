// Edge fleets: each fleet's devices (the package and revision they run, health, latency),
// the packages built for the edge, and rollout plans with their stages. Reads the edge service
// through the console's proxy; pausing, resuming and rolling back a plan need the deploy scope.

export async function render(root, ctx, path) {
  const [kind, name] = (path || "").split("/");
  if (kind === "fleet" && name) {
    await renderFleet(root, ctx, name);
  } else if (kind === "plan" && name) {
    await renderPlan(root, ctx, name);
  } else {
    await renderOverview(root, ctx);
  }
}

const statusCell = (ctx) => (v) => ctx.badge(v);

async function renderOverview(root, ctx) {
  const { h } = ctx;
  root.append(h("h1", { text: "Edge fleets" }));
  const [{ fleets }, { packages }, { deployments }] = await Promise.all([
    ctx.proxy("edge", "fleets"), ctx.proxy("edge", "packages"), ctx.proxy("edge", "deployments"),
  ]);
  const section = (title, testid, rows, table) => h("section", { "aria-label": title },
    h("h2", { text: title }),
    h("div", { "data-testid": testid }, rows.length ? table() : h("p", { text: `No ${title.toLowerCase()} yet.` })));
  root.append(
    section("Fleets", "edge-fleets", fleets, () => ctx.table([
      { key: "fleet_name", label: "Fleet", format: (v) => h("a", { href: `#/edge/fleet/${encodeURIComponent(v)}`, text: v }) },
      { key: "description", label: "Description" },
      { key: "created_at", label: "Created", format: (v) => ctx.fmtTime(v) },
    ], fleets, { onRowClick: (f) => ctx.go(`#/edge/fleet/${encodeURIComponent(f.fleet_name)}`) })),
    section("Rollouts", "edge-plans", deployments, () => ctx.table([
      { key: "plan_name", label: "Plan", format: (v) => h("a", { href: `#/edge/plan/${encodeURIComponent(v)}`, text: v }) },
      { key: "fleet_name", label: "Fleet" },
      { key: "package_name", label: "Package" },
      { key: "status", label: "Status", format: statusCell(ctx) },
      { key: "created_at", label: "Created", format: (v) => ctx.fmtTime(v) },
    ], deployments, { onRowClick: (p) => ctx.go(`#/edge/plan/${encodeURIComponent(p.plan_name)}`) })),
    section("Packages", "edge-packages", packages, () => ctx.table([
      { key: "package_name", label: "Package" },
      { key: "model_package_group", label: "Model group" },
      { key: "model_version", label: "Version" },
      { key: "status", label: "Status", format: (v) => (v ? statusCell(ctx)(v) : "") },
    ], packages)),
  );
}

async function renderFleet(root, ctx, name) {
  const { h } = ctx;
  const fleet = await ctx.proxy("edge", `fleets/${encodeURIComponent(name)}`);
  const devices = fleet.devices || [];
  const versions = {};
  for (const device of devices) {
    const key = device.package_name || "(none)";
    versions[key] = (versions[key] || 0) + 1;
  }
  root.append(
    h("p", {}, h("a", { href: "#/edge", text: "← Edge fleets" })),
    h("h1", { text: name }),
    h("p", { text: fleet.description || "" }),
    h("h2", { text: "Versions running" }),
    h("ul", { "data-testid": "fleet-versions" }, ...Object.entries(versions).map(([pkg, n]) => h("li", { text: `${pkg}: ${n} device(s)` }))),
    h("h2", { text: "Devices" }),
    h("div", { "data-testid": "fleet-devices" }, devices.length ? ctx.table([
      { key: "device_name", label: "Device" },
      { key: "package_name", label: "Running", format: (v) => v || "" },
      { key: "desired", label: "Desired", format: (v) => (v && v.package_name) || "" },
      { key: "revision", label: "Revision" },
      { key: "health", label: "Health", format: statusCell(ctx) },
      { key: "p99_ms", label: "p99 ms", format: (v) => (v == null ? "" : ctx.fmtNumber(v)) },
      { key: "last_heartbeat", label: "Last heartbeat", format: (v) => (v ? ctx.fmtTime(v) : "never") },
    ], devices) : h("p", { text: "No devices registered." })),
  );
}

async function renderPlan(root, ctx, name) {
  const { h } = ctx;
  const plan = await ctx.proxy("edge", `deployments/${encodeURIComponent(name)}`);
  const actions = h("span", { class: "actions" });
  const act = (verb, label) => {
    const button = h("button", { type: "button", "data-testid": `plan-${verb}`, text: label });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await ctx.proxy("edge", `deployments/${encodeURIComponent(name)}/${verb}`, { method: "POST" });
        ctx.notice(`${label}: ${name}`, "ok");
        root.replaceChildren();
        await renderPlan(root, ctx, name);
      } catch (error) {
        button.disabled = false;
        ctx.notice(`${label} failed: ${error.message}`, "error");
      }
    });
    actions.append(button, " ");
  };
  if (ctx.can("deploy")) {
    if (plan.status === "InProgress") act("pause", "Pause");
    if (plan.status === "Paused") act("resume", "Resume");
    if (plan.status === "InProgress" || plan.status === "Paused") act("rollback", "Roll back");
  }
  root.append(
    h("p", {}, h("a", { href: "#/edge", text: "← Edge fleets" })),
    h("h1", { text: name }),
    h("p", {}, "Status: ", statusCell(ctx)(plan.status), ` · fleet ${plan.fleet_name} · package ${plan.package_name} `, actions),
    plan.reason ? h("p", { class: "muted", text: plan.reason }) : "",
    h("h2", { text: "Stages" }),
    h("ol", { class: "stages", "data-testid": "plan-stages" }, ...(plan.stages || []).map((stage) => h("li", {},
      h("strong", { text: stage.name }), " ", statusCell(ctx)(stage.status),
      ` · ${stage.devices ? stage.devices.join(", ") : `${stage.percent}%`} · assigned ${stage.assigned.length}`,
      stage.reason ? ` · ${stage.reason}` : ""))),
  );
}

// Audit log: who changed what, from the kernel's /admin/audit (an admin key's view). A small
// example area: a filter form whose values live in the route (#/audit/?principal=...), one
// proxied read, one table.

const SERVICE = "gateway"; // every service serves the same platform-wide trail; ask the gateway
const LIMIT = 200;

export async function render(root, ctx, path) {
  const { h } = ctx;
  const params = new URLSearchParams(path.startsWith("?") ? path.slice(1) : "");
  const wanted = {
    principal: params.get("principal") || "",
    action: params.get("action") || "",
    resource: params.get("resource") || "",
  };
  const inputs = {};
  const field = (name, label) => {
    inputs[name] = h("input", { id: `audit-${name}`, name, value: wanted[name], testid: `audit-filter-${name}` });
    return h("div", { class: "field" }, h("label", { for: `audit-${name}` }, label), inputs[name]);
  };
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter the audit log" },
    field("principal", "Principal"),
    field("action", "Action"),
    field("resource", "Resource"),
    h("button", { type: "submit" }, "Filter"),
    h("button", { type: "button", onclick: () => ctx.go("audit") }, "Clear"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, input.value.trim()]));
    ctx.go(`audit/${ctx.query(chosen)}`);
  });
  const box = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Loading the audit log…"));
  root.append(
    h("h1", {}, "Audit log"),
    h("p", { class: "muted" }, "Every change made through any service: who, what, when and how it ended."),
    form,
    box,
  );

  if (!ctx.can("admin")) {
    box.replaceChildren(h("p", { class: "muted", testid: "audit-needs-admin" }, "The audit log needs an admin key."));
    return;
  }
  let answer;
  try {
    answer = await ctx.proxy(SERVICE, `admin/audit${ctx.query({ ...wanted, limit: LIMIT })}`);
  } catch (error) {
    box.replaceChildren(h("p", { class: "error", role: "alert" }, `The audit log could not be read: ${error.message}`));
    return;
  }
  const pick = (name, value) => {
    const link = ctx.link(`audit/${ctx.query({ ...wanted, [name]: value })}`, value, { title: `only ${name} ${value}` });
    return value ? link : "";
  };
  box.replaceChildren(
    ctx.table(
      [
        { key: "at", label: "Time", format: (t) => ctx.fmtTime(t) },
        { key: "principal", label: "Principal", format: (v) => pick("principal", v) },
        { key: "action", label: "Action", format: (v) => pick("action", v) },
        { key: "resource", label: "Resource", format: (v) => pick("resource", v) },
        {
          key: "outcome",
          label: "Outcome",
          format: (v, row) => h("span", { class: `badge ${v === "success" ? "ok" : "bad"}` }, `${v}${row.status_code ? ` (${row.status_code})` : ""}`),
        },
        { key: "service", label: "Service" },
        { key: "correlation_id", label: "Correlation", format: (id) => (id ? ctx.link(`overview/${ctx.query({ correlation_id: id })}`, id.slice(0, 14), { title: id }) : "") },
      ],
      answer.records || [],
      { testid: "audit-table", empty: "No record matches." },
    ),
  );
}

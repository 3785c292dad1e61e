// The review queue: live predictions an endpoint's human loop sent for a person to check.
// Uses app.js's signed-in API (window.cairnLabeling); built with DOM calls, never innerHTML.
"use strict";

(() => {
  const page = window.cairnLabeling;
  if (!page) return;
  const section = page.section();
  const review = { task: null, answers: [] };

  function el(tag, text, attributes) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  function rowsOf(payload) {
    const text = payload.encoding === "base64" ? "(binary)" : payload.data;
    if (payload.content_type === "text/csv" || payload.content_type === "application/jsonlines") {
      return text.split("\n").filter((line) => line.trim());
    }
    return [text];
  }

  async function list() {
    const pending = await (await page.api("GET", "/reviews?status=Pending&limit=200")).json();
    section.replaceChildren(el("h2", "Review queue"));
    const next = el("button", "Review the next answer", { type: "button", id: "review-next" });
    next.addEventListener("click", () => claim().catch((error) => page.showError(error.message)));
    section.append(el("p", `${pending.length} answer(s) waiting for review.`,
      { id: "review-count" }), next);
    const table = el("table", undefined, { id: "review-list" });
    table.append(row(["endpoint", "inference id", "why", "claimed by"], "th"));
    for (const item of pending) {
      table.append(row([item.endpoint_name, item.inference_id || "", item.reasons.join(", "),
        item.claimed_by || ""], "td"));
    }
    section.append(table);
  }

  function row(cells, tag) {
    const tr = el("tr");
    for (const cell of cells) tr.append(el(tag, cell));
    return tr;
  }

  async function claim() {
    const found = await (await page.api("POST", "/reviews/claim", {})).json();
    if (!found) {
      page.showError("");
      await list();
      section.append(el("p", "Nothing is waiting for you.", { id: "review-none" }));
      return;
    }
    show(found);
  }

  function show(task) {
    page.showError("");
    review.task = task;
    const request = task.request;
    const inputs = rowsOf(request.input);
    const outputs = rowsOf(request.output);
    review.answers = inputs.map(() => null);
    section.replaceChildren(el("h2", `Review of ${request.endpoint_name}`));
    section.append(el("p", "Sent for review because: " + request.reasons.join(", ")));
    if (request.instructions) section.append(el("pre", request.instructions));
    const table = el("table", undefined, { id: "review-rows" });
    table.append(row(["#", "input", "model's answer", "your label"], "th"));
    inputs.forEach((input, index) => {
      const tr = row([String(index + 1), input, outputs[index] || outputs.join(" ")], "td");
      const choices = el("td");
      request.labels.forEach((label, choice) => {
        const button = el("button", `${choice + 1}. ${label}`, {
          type: "button", class: "review-choice", "data-row": index, "data-label": label });
        button.addEventListener("click", () => choose(index, label));
        choices.append(button);
      });
      tr.append(choices);
      table.append(tr);
    });
    const submit = el("button", "Submit (Enter)", { type: "button", id: "review-submit" });
    submit.addEventListener("click", () => send().catch((error) => page.showError(error.message)));
    const back = el("button", "Back to the list", { type: "button" });
    back.addEventListener("click", () => list().catch((error) => page.showError(error.message)));
    section.append(table, el("p", "Keys: 1-9 choose (row by row) · Enter submit", {
      class: "keys" }), submit, back);
  }

  function choose(index, label) {
    review.answers[index] = label;
    for (const button of section.querySelectorAll(`.review-choice[data-row="${index}"]`)) {
      button.classList.toggle("selected", button.dataset.label === label);
    }
  }

  async function send() {
    if (review.answers.some((answer) => answer === null)) {
      page.showError("Choose a label for every row first.");
      return;
    }
    const id = review.task.request.review_id;
    await page.api("POST", `/reviews/${encodeURIComponent(id)}/answer`,
      { labels: review.answers });
    review.task = null;
    await claim();
  }

  document.addEventListener("keydown", (event) => {
    if (section.hidden || !review.task || event.target.tagName === "INPUT") return;
    const labels = review.task.request.labels;
    const digit = Number.parseInt(event.key, 10);
    if (digit >= 1 && digit <= Math.min(9, labels.length)) {
      const open = review.answers.indexOf(null);
      choose(open === -1 ? review.answers.length - 1 : open, labels[digit - 1]);
      event.preventDefault();
    } else if (event.key === "Enter") {
      send().catch((error) => page.showError(error.message));
      event.preventDefault();
    }
  });

  const tab = document.querySelector('#tabs button[data-tab="review-queue"]');
  if (tab) {
    tab.addEventListener("click", () => {
      review.task = null;
      list().catch((error) => page.showError("Review queue: " + error.message));
    });
  }
})();

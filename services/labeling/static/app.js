// The annotator's page: sign in with a credential, pick a job, label with the keyboard or mouse.
// Everything comes from this service's API; the credential stays in this tab's sessionStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { job: null, task: null, labels: [], type: "", chosen: new Set(), boxes: [],
  image: null, drag: null, busy: false };

function token() { return sessionStorage.getItem("cairn-token"); }

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers,
    body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) {
    let reason = response.status + " " + response.statusText;
    try {
      const data = await response.json();
      reason = data.error || (data.detail ? JSON.stringify(data.detail) : reason);
    } catch (ignored) { /* not JSON */ }
    const error = new Error(reason);
    error.status = response.status;
    throw error;
  }
  return response;
}

function show(section) {
  for (const id of ["sign-in", "queue", "task", "review-queue"]) $(id).hidden = id !== section;
}

async function signIn(event) {
  if (event) event.preventDefault();
  const typed = $("token").value.trim();
  if (typed) sessionStorage.setItem("cairn-token", typed);
  try {
    const data = await (await api("GET", "/annotator/jobs")).json();
    showError("");
    $("who").textContent = "Signed in as " + data.principal;
    $("sign-out").hidden = false;
    $("tabs").hidden = false;
    renderJobs(data.labeling_jobs);
  } catch (error) {
    sessionStorage.removeItem("cairn-token");
    showError("Sign-in failed: " + error.message);
  }
}

function renderJobs(jobs) {
  show("queue");
  const list = $("jobs");
  list.replaceChildren();
  $("no-jobs").hidden = jobs.length > 0;
  for (const job of jobs) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "open-job";
    button.dataset.job = job.job_name;
    button.textContent = `${job.job_name} (${job.task_type}): ${job.items_done}/` +
      `${job.items_total} items done, ${job.answered_by_me} answered by you`;
    button.addEventListener("click", () => openJob(job.job_name));
    item.append(button);
    list.append(item);
  }
}

async function openJob(jobName) {
  state.job = jobName;
  show("task");
  await nextTask();
}

async function nextTask() {
  state.chosen = new Set();
  state.boxes = [];
  state.image = null;
  try {
    const data = await (await api("POST", `/labeling-jobs/${state.job}/tasks/next`)).json();
    showError("");
    state.task = data.task;
    state.labels = data.labels;
    state.type = data.task_type;
    renderTask(data);
  } catch (error) {
    showError(error.message);
  }
}

function renderTask(data) {
  $("task-title").textContent = `${data.job_name}: ${data.task_type}`;
  const p = data.progress;
  $("progress").textContent = `You answered ${p.answered_by_me} · ${p.items_done} of ` +
    `${p.items_total} items done`;
  $("instructions").textContent = data.instructions || "";
  $("instructions-box").hidden = !data.instructions;
  const hasTask = data.task !== null;
  for (const id of ["item", "choices", "boxes", "submit", "skip"]) $(id).hidden = !hasTask;
  $("done").hidden = hasTask;
  if (!hasTask) return;
  $("item").dataset.itemId = data.task.item_id;
  $("item-text").textContent = data.task.text;
  const fields = $("item-fields");
  fields.replaceChildren();
  if (data.task_type === "tabular-classification") {
    for (const [name, value] of Object.entries(data.task.fields)) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      fields.append(dt, dd);
    }
  }
  renderChoices();
  renderBoxes();
  $("box-hint").hidden = data.task_type !== "bounding-box";
  $("image-wrap").hidden = !data.task.has_image;
  if (data.task.has_image) loadImage(data.task.item_id);
}

function renderChoices() {
  const list = $("choices");
  list.replaceChildren();
  state.labels.forEach((label, index) => {
    const item = document.createElement("li");
    item.dataset.label = label;
    item.className = state.chosen.has(label) ? "selected" : "";
    const key = document.createElement("kbd");
    key.textContent = index < 9 ? String(index + 1) : "";
    item.append(key, " " + label);
    item.addEventListener("click", () => choose(index));
    list.append(item);
  });
}

function choose(index) {
  const label = state.labels[index];
  if (label === undefined) return;
  if (state.type === "multi-label") {
    if (state.chosen.has(label)) state.chosen.delete(label); else state.chosen.add(label);
  } else {
    state.chosen = new Set([label]);
  }
  renderChoices();
}

function renderBoxes() {
  const list = $("boxes");
  list.replaceChildren();
  state.boxes.forEach((box, index) => {
    const item = document.createElement("li");
    item.textContent = `${box.label}: x ${Math.round(box.x)}, y ${Math.round(box.y)}, ` +
      `${Math.round(box.width)}×${Math.round(box.height)} `;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "remove";
    remove.addEventListener("click", () => { state.boxes.splice(index, 1); renderBoxes(); draw(); });
    item.append(remove);
    list.append(item);
  });
}

async function loadImage(itemId) {
  try {
    const blob = await (await api("GET", `/labeling-jobs/${state.job}/items/${itemId}/image`)).blob();
    const image = new Image();
    image.onload = () => { state.image = image; draw(); };
    image.src = URL.createObjectURL(blob);
  } catch (error) {
    showError("Image: " + error.message);
  }
}

function draw() {
  const canvas = $("canvas");
  if (!state.image) return;
  canvas.width = state.image.naturalWidth;
  canvas.height = state.image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(state.image, 0, 0);
  context.lineWidth = 2;
  const all = state.drag ? [...state.boxes, state.drag] : state.boxes;
  for (const box of all) {
    context.strokeStyle = box === state.drag ? "#f39c12" : "#1f6feb";
    context.strokeRect(box.x, box.y, box.width, box.height);
    context.fillStyle = context.strokeStyle;
    context.fillText(box.label || "", box.x + 3, box.y + 12);
  }
}

function canvasPoint(event) {
  const canvas = $("canvas");
  const rect = canvas.getBoundingClientRect();
  return { x: (event.clientX - rect.left) * (canvas.width / rect.width),
    y: (event.clientY - rect.top) * (canvas.height / rect.height) };
}

function startBox(event) {
  if (state.type !== "bounding-box") return;
  const label = [...state.chosen][0];
  if (!label) { showError("Choose a label (1-9) before drawing a box"); return; }
  const start = canvasPoint(event);
  state.drag = { label, x: start.x, y: start.y, width: 0, height: 0, start };
}

function moveBox(event) {
  if (!state.drag) return;
  const point = canvasPoint(event);
  const start = state.drag.start;
  Object.assign(state.drag, { x: Math.min(start.x, point.x), y: Math.min(start.y, point.y),
    width: Math.abs(point.x - start.x), height: Math.abs(point.y - start.y) });
  draw();
}

function endBox() {
  if (!state.drag) return;
  const { label, x, y, width, height } = state.drag;
  state.drag = null;
  if (width >= 2 && height >= 2) state.boxes.push({ label, x, y, width, height });
  renderBoxes();
  draw();
}

function answerBody() {
  if (state.type === "multi-label") return { labels: [...state.chosen] };
  if (state.type === "bounding-box") return { boxes: state.boxes };
  return { label: [...state.chosen][0] ?? null };
}

async function submit() {
  if (!state.task || state.busy) return;
  if (state.type !== "multi-label" && state.type !== "bounding-box" && state.chosen.size === 0) {
    showError("Choose a label first (keys 1-9)");
    return;
  }
  state.busy = true;
  try {
    await api("POST", `/labeling-jobs/${state.job}/tasks/${state.task.item_id}/answer`,
      answerBody());
    await nextTask();
  } catch (error) {
    showError(error.message);
  } finally {
    state.busy = false;
  }
}

async function skip() {
  if (!state.task || state.busy) return;
  state.busy = true;
  try {
    await api("POST", `/labeling-jobs/${state.job}/tasks/${state.task.item_id}/skip`);
    await nextTask();
  } catch (error) {
    showError(error.message);
  } finally {
    state.busy = false;
  }
}

function onKey(event) {
  if ($("task").hidden || event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey) return;
  if (/^[1-9]$/.test(event.key)) { choose(Number(event.key) - 1); event.preventDefault(); }
  else if (event.key === "Enter") { submit(); event.preventDefault(); }
  else if (event.key === "s" || event.key === "S") { skip(); event.preventDefault(); }
}

function switchTab(tab) {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === tab);
  }
  if (tab === "queue") signIn(); else show(tab);
}

function init() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem("cairn-token");
    location.reload();
  });
  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", skip);
  $("back").addEventListener("click", () => signIn());
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => switchTab(button.dataset.tab));
  }
  const canvas = $("canvas");
  canvas.addEventListener("mousedown", startBox);
  canvas.addEventListener("mousemove", moveBox);
  window.addEventListener("mouseup", endBox);
  document.addEventListener("keydown", onKey);
  if (token()) signIn(); else show("sign-in");
}

// What review.js (the review queue) uses: the signed-in API and the page's error line.
window.cairnLabeling = { api, showError, section: () => $("review-queue") };
init();

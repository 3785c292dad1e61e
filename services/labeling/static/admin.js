// The admin page: every job's progress; per job its agreement and each annotator's quality.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null;

function showError(message) { $("error").textContent = message; $("error").hidden = !message; }

async function api(method, path) {
  const response = await fetch(path, { method,
    headers: { Authorization: "Bearer " + sessionStorage.getItem("cairn-token") } });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || response.status + " " + response.statusText);
  return data;
}

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "–" : String(value);
  row.append(td);
  return td;
}

async function loadJobs() {
  try {
    const data = await api("GET", "/labeling-jobs");
    showError("");
    $("sign-in-form").hidden = true;
    $("jobs-section").hidden = false;
    const body = $("jobs").tBodies[0];
    body.replaceChildren();
    for (const job of data.labeling_jobs) {
      const row = document.createElement("tr");
      const link = document.createElement("a");
      link.href = "#" + job.job_name;
      link.textContent = job.job_name;
      link.addEventListener("click", () => loadJob(job.job_name));
      cell(row, "").append(link);
      cell(row, job.status);
      cell(row, job.task_type);
      cell(row, `${job.items_done}/${job.item_count}`);
      cell(row, job.annotations);
      cell(row, job.output_dataset_uri);
      body.append(row);
    }
    const wanted = location.hash.slice(1);
    if (wanted) loadJob(wanted);
  } catch (error) {
    showError("Sign-in failed: " + error.message);
  }
}

async function loadJob(name) {
  current = name;
  try {
    const job = await api("GET", `/labeling-jobs/${name}/quality`);
    showError("");
    $("job").hidden = false;
    $("job-title").textContent = `${job.job_name} (${job.status})`;
    const c = job.label_counters;
    $("job-progress").textContent = `${job.items_done} of ${job.item_count} items done, ` +
      `${job.annotations} answers; labelled by people ${c.human_labeled}, by a model ` +
      `${c.machine_labeled}, failed ${c.failed}`;
    const a = job.agreement;
    $("job-agreement").textContent = `Krippendorff's alpha ${a.krippendorff_alpha ?? "–"} · ` +
      `pairwise agreement ${a.pairwise ?? "–"}`;
    const body = $("annotators").tBodies[0];
    body.replaceChildren();
    const estimated = a.estimated_accuracy || {};
    for (const [name, stats] of Object.entries(a.annotators || {})) {
      const row = document.createElement("tr");
      cell(row, name);
      cell(row, stats.answers);
      cell(row, stats.agreement_with_consensus);
      cell(row, stats.pairwise_agreement);
      cell(row, estimated[name]);
      body.append(row);
    }
  } catch (error) {
    showError(error.message);
  }
}

async function act(action) {
  if (!current) return;
  try {
    await api("POST", `/labeling-jobs/${current}/${action}`);
    await loadJob(current);
  } catch (error) {
    showError(error.message);
  }
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("cairn-token", $("token").value.trim());
  loadJobs();
});
$("export").addEventListener("click", () => act("export"));
$("stop").addEventListener("click", () => act("stop"));
if (sessionStorage.getItem("cairn-token")) loadJobs();

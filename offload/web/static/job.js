// Keeps the job page current by polling the JSON API until the job ends.
// Text is written with textContent only, so nothing from a job is ever parsed as HTML.
(function () {
  "use strict";
  const root = document.getElementById("job");
  if (!root || root.dataset.ended === "true") return;

  const apiUrl = root.dataset.apiUrl;
  const field = (name) => root.querySelector(`[data-field="${name}"]`);
  const setText = (name, value) => { const el = field(name); if (el) el.textContent = value ?? "—"; };

  function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

  function render(job) {
    const status = field("status");
    status.textContent = job.status;
    status.className = `status status-${job.status}`;
    for (const form of root.querySelectorAll("[data-show-in]")) form.hidden = !form.dataset.showIn.split(" ").includes(job.status);
    field("progress").value = job.progress;
    setText("progress-text", job.progress);
    for (const name of ["created_at", "enqueued_at", "scheduled_for", "started_at", "ended_at"]) setText(name, job[name]);
    setText("duration_seconds", job.duration_seconds == null ? null : `${job.duration_seconds.toFixed(3)} s`);
    setText("attempt_count", job.attempts.length);
    setText("retries_left", `${job.retries_left} of ${job.max_retries}`);
    setText("error", job.error || "");
    root.querySelector('[data-show-when="failed"]').hidden = !job.error;
    root.querySelector('[data-show-when="finished"]').hidden = job.status !== "finished";
    if (job.status === "finished") setText("result", JSON.stringify(job.result, null, 2));
    const log = field("log");
    if (log && job.log) {
      log.textContent = job.log.join("\n");
      log.hidden = job.log.length === 0;
      const noLog = root.querySelector('[data-show-when="no-log"]');
      noLog.hidden = job.log.length > 0;
      if (job.ended) noLog.textContent = "Nothing was logged.";
    }
    const traceback = root.querySelector('[data-show-when="traceback"]');
    if (traceback && job.traceback) { setText("traceback", job.traceback); traceback.hidden = false; }
    root.querySelector('[data-show-when="download"]').hidden = !job.download_url;
    if (job.download_url) field("download").href = job.download_url;

    const rows = job.attempts.map((attempt, i) => {
      const tr = document.createElement("tr");
      const outcome = (attempt.outcome || "running") + (attempt.error ? `: ${attempt.error}` : "");
      tr.append(cell(String(i + 1)), cell(attempt.started_at || "—"), cell(attempt.ended_at || "—"), cell(outcome));
      return tr;
    });
    if (rows.length) field("attempts").replaceChildren(...rows);
    else if (job.ended) setText("no-attempts", "It never started.");
  }

  window.offloadPoll(root, {
    render,
    isDone: (data) => { const done = Boolean(data.ended); if (done) root.dataset.ended = "true"; return done; },
    expired: "this job has expired",
  });
})();

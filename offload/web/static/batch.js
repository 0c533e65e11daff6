// Keeps the newsletter batch page current by polling its JSON until nothing is pending.
// Text is written with textContent only, so nothing a recipient or a mail server wrote is parsed as HTML.
(function () {
  "use strict";
  const root = document.getElementById("batch");
  if (!root || root.dataset.done === "true") return;

  const apiUrl = root.dataset.apiUrl;
  const field = (name) => root.querySelector(`[data-field="${name}"]`);
  const setText = (name, value) => { const el = field(name); if (el) el.textContent = value ?? "—"; };

  function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

  function render(batch) {
    for (const name of ["sent", "failed", "pending", "canceled", "canceled_at"]) setText(name, batch[name]);
    const progress = field("progress");
    progress.max = batch.total;
    progress.value = batch.sent + batch.failed;
    setText("failures-note", batch.failed > batch.failures_shown ? `The first ${batch.failures_shown} of ${batch.failed}.` : "");
    if (!batch.failures.length) return;
    const rows = batch.failures.map((failure) => {
      const tr = document.createElement("tr");
      const link = document.createElement("a");
      link.href = `/jobs/${encodeURIComponent(failure.job_id)}`;
      const code = document.createElement("code");
      code.textContent = failure.job_id.slice(0, 8);
      link.append(code);
      const jobCell = document.createElement("td");
      jobCell.append(link);
      tr.append(cell(failure.to), cell(failure.reason), jobCell);
      return tr;
    });
    field("failures").replaceChildren(...rows);
  }

  window.offloadPoll(root, {
    render,
    isDone: (data) => { const done = Boolean(data.done); if (done) root.dataset.done = "true"; return done; },
    expired: "this newsletter has expired",
  });
})();

// Polls a page's JSON until it says it is done, backing off while the server is unreachable.
// Shared by the job page (job.js) and the newsletter batch page (batch.js).
"use strict";
window.offloadPoll = function (root, { render, isDone, expired }) {
  const note = root.querySelector("[data-live-note]");
  let delay = 1000;

  async function poll() {
    try {
      const response = await fetch(root.dataset.apiUrl, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (response.ok) {
        const data = await response.json();
        render(data);
        delay = 1000;
        note.textContent = "updating live";
        if (isDone(data)) { note.hidden = true; return; }
      } else if (response.status === 404) {
        note.textContent = expired;
        return;
      } else {
        note.textContent = "connection trouble, retrying…";
        delay = Math.min(delay * 2, 10000);
      }
    } catch (err) {
      note.textContent = "connection lost, retrying…";
      delay = Math.min(delay * 2, 10000);
    }
    setTimeout(poll, delay);
  }
  setTimeout(poll, 500);
};

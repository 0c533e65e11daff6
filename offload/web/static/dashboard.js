// The operators' dashboard: polls /operator/dashboard.json and draws its series as SVG lines.
// Hand-drawn SVG rather than a chart library: two line charts need ~150 lines, no 200 KB vendored
// file, and SVG text and titles are readable by screen readers and by axe.
"use strict";
(function () {
  const root = document.getElementById("dashboard");
  if (!root) return;
  const SVG = "http://www.w3.org/2000/svg";
  const OUTCOMES = ["finished", "failed", "retried"];
  const W = 640, H = 220, LEFT = 44, RIGHT = 8, TOP = 10, BOTTOM = 26;
  const note = root.querySelector("[data-live-note]");
  const toggle = document.getElementById("live-toggle");
  const span = document.getElementById("span");
  const scope = document.getElementById("scope");
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const listable = new Set(JSON.parse(root.dataset.tasks || "[]"));  // tasks the job list can filter by
  let paused = false, timer = null, delay = 5000, last = null;

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function draw(svg, data, lines) {
    svg.replaceChildren();
    const values = lines.flatMap((line) => line.values.filter((v) => v !== null));
    const top = Math.max(1, ...values);
    const x = (i) => LEFT + (i * (W - LEFT - RIGHT)) / Math.max(1, data.points - 1);
    const y = (v) => TOP + (H - TOP - BOTTOM) * (1 - v / top);
    svg.append(el("line", { x1: LEFT, y1: y(0), x2: W - RIGHT, y2: y(0), class: "axis" }));
    svg.append(el("line", { x1: LEFT, y1: TOP, x2: LEFT, y2: y(0), class: "axis" }));
    svg.append(el("text", { x: LEFT - 6, y: TOP + 10, "text-anchor": "end", class: "tick" }, String(top)));
    svg.append(el("text", { x: LEFT - 6, y: y(0), "text-anchor": "end", class: "tick" }, "0"));
    const first = new Date(data.start * 1000), end = new Date((data.start + data.points * data.step) * 1000);
    svg.append(el("text", { x: LEFT, y: H - 6, class: "tick" }, timeFormat.format(first)));
    svg.append(el("text", { x: W - RIGHT, y: H - 6, "text-anchor": "end", class: "tick" }, timeFormat.format(end)));
    for (const line of lines) {
      let path = "", pen = false;
      line.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      if (path) svg.append(el("path", { d: path, class: `series ${line.cls}`, "data-series": line.name }));
      line.values.forEach((v, i) => {  // a sample with no neighbour draws no line: mark it with a dot
        const alone = v !== null && (line.values[i - 1] ?? null) === null && (line.values[i + 1] ?? null) === null;
        if (alone) svg.append(el("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3, class: `dot ${line.cls}` }));
      });
    }
  }

  function series(data, outcome) {
    const wanted = scope.value === "all" ? `${outcome}|all` : `${outcome}|${scope.value}`;
    return data.series[wanted] || new Array(data.points).fill(0);
  }

  function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.append(td); }

  function totalsTable(body, data, kind, extra) {
    const names = new Set();
    for (const key of Object.keys(data.totals)) {
      const [, k, name] = key.split("|");
      if (k === kind) names.add(name);
    }
    if (kind === "queue") data.queues.forEach((name) => names.add(name));
    const rows = [...names].sort((a, b) =>
      (data.totals[`failed|${kind}|${b}`] || 0) - (data.totals[`failed|${kind}|${a}`] || 0) || a.localeCompare(b));
    body.replaceChildren();
    const since = data.span === "hour" ? "1h" : "24h";
    for (const name of rows) {
      const row = document.createElement("tr");
      row.dataset[kind] = name;
      const th = document.createElement("th");
      th.scope = "row";
      const code = document.createElement("code");
      code.textContent = name;
      th.append(code);
      row.append(th);
      for (const outcome of OUTCOMES) {
        const count = data.totals[`${outcome}|${kind}|${name}`] || 0;
        const td = document.createElement("td");
        td.dataset.outcome = outcome;
        if (outcome === "failed" && count > 0 && (kind === "queue" || listable.has(name))) {
          const link = document.createElement("a");
          link.href = `${root.dataset.jobsUrl}?state=failed&${kind}=${encodeURIComponent(name)}&since=${since}`;
          link.textContent = String(count);
          td.append(link);
        } else td.textContent = String(count);
        row.append(td);
      }
      if (extra) cell(row, extra(name));
      body.append(row);
    }
  }

  function render(data) {
    last = data;
    const lines = OUTCOMES.map((outcome) => ({ name: outcome, cls: `series-${outcome}`, values: series(data, outcome) }));
    draw(document.getElementById("throughput-chart"), data, lines);
    const sums = OUTCOMES.map((outcome) => `${lines.find((l) => l.name === outcome).values.reduce((a, b) => a + b, 0)} ${outcome}`);
    const where = scope.options[scope.selectedIndex].text;
    document.getElementById("throughput-summary").textContent =
      `${data.span === "hour" ? "Last hour" : "Last day"}, ${where}: ${sums.join(", ")}.`;

    const [kind, name] = scope.value.split("|");
    const queues = kind === "queue" ? [name] : kind === "task" ? [] : data.queues;
    const depthLines = queues.map((q, i) => ({ name: q, cls: `series-depth-${i % 4}`, values: data.series[`depth|${q}`] || new Array(data.points).fill(null) }));
    draw(document.getElementById("depth-chart"), data, depthLines);
    const legend = document.getElementById("depth-legend");
    legend.replaceChildren();
    depthLines.forEach((line) => {
      const key = document.createElement("span");
      key.className = `key key-depth-${line.cls.slice(-1)}`;
      legend.append(key, ` ${line.name}${data.paused.includes(line.name) ? " (paused)" : ""} `);
    });
    const nowDepth = (q) => { const v = (data.series[`depth|${q}`] || []).filter((x) => x !== null); return v.length ? String(v[v.length - 1]) : "—"; };
    document.getElementById("depth-summary").textContent = kind === "task"
      ? "Waiting jobs are counted per queue: pick a queue or every queue."
      : `Waiting now: ${queues.map((q) => `${q} ${nowDepth(q)}`).join(", ")}.`;
    totalsTable(document.querySelector("#task-totals tbody"), data, "task");
    totalsTable(document.querySelector("#queue-totals tbody"), data, "queue", nowDepth);
    root.dataset.updatedAt = String(Date.now());
  }

  async function poll() {
    timer = null;
    try {
      const response = await fetch(`${root.dataset.apiUrl}?span=${span.value}`, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (response.redirected || !(response.headers.get("Content-Type") || "").includes("json")) {
        note.textContent = "logged out: reload the page to log in again";  // sent to the login form
        return;
      }
      if (response.ok) {
        render(await response.json());
        delay = 5000;
        note.textContent = paused ? "paused" : "updating live";
      } else {
        note.textContent = response.status === 403 || response.status === 401 ? "logged out: reload to log in" : "connection trouble, retrying…";
        delay = Math.min(delay * 2, 60000);
      }
    } catch (err) {
      note.textContent = "connection lost, retrying…";
      delay = Math.min(delay * 2, 60000);
    }
    if (!paused) timer = setTimeout(poll, delay);
  }

  toggle.addEventListener("click", () => {
    paused = !paused;
    toggle.setAttribute("aria-pressed", String(paused));
    toggle.textContent = paused ? "Resume updates" : "Pause updates";
    root.dataset.live = paused ? "paused" : "live";
    if (paused) { clearTimeout(timer); timer = null; note.textContent = "paused"; } else poll();
  });
  span.addEventListener("change", () => { clearTimeout(timer); poll(); });
  scope.addEventListener("change", () => { if (last) render(last); });
  root.dataset.live = "live";
  poll();
})();

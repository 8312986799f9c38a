// The task page (seeds/004): submit a question, watch the steps stream in over SSE,
// see the answer, its data and a chart. EventSource reconnects by itself and sends
// Last-Event-ID, so a dropped connection loses no step.
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const auth = token ? { Authorization: `Bearer ${token}` } : {};
let source = null;
let current = null;

function showError(text) { $("error").textContent = text || ""; }

function stepRow(event) {
  // one row per step: a later event of the same step updates it
  let li = document.querySelector(`#steps li[data-step="${event.step}"]`);
  if (!li || event.step === "retry" || event.step === "call_tool" && event.status === "running") {
    li = document.createElement("li");
    li.dataset.step = event.step;
    $("steps").append(li);
  }
  li.className = `${event.category} ${event.status}`;
  li.innerHTML = "";
  const icon = document.createElement("span");
  icon.className = "icon";
  icon.textContent = event.icon;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = event.message;
  const tag = document.createElement("span");
  tag.className = "tag";
  tag.textContent = event.status === "running" ? event.category : event.status;
  li.append(icon, text, tag);
}

function setProgress(p) {
  $("bar-fill").style.width = `${p}%`;
  $("percent").textContent = `${p}%`;
}

function onEvent(message) {
  const event = JSON.parse(message.data);
  stepRow(event);
  setProgress(event.progress);
  return event;
}

async function finish(taskId) {
  source.close();
  $("cancel").hidden = true;
  $("submit").disabled = false;
  const resp = await fetch(`/api/v1/tasks/${taskId}`, { headers: auth });
  const task = await resp.json();
  if (task.state !== "done") {
    showError(task.error ? task.error.message : `The task ended: ${task.state}.`);
    return;
  }
  $("result").hidden = false;
  $("answer").textContent = task.result.answer;
  renderTable(task.result.table);
  renderChart(task.result.chart);
}

function renderTable(table) {
  $("table-box").hidden = !table;
  if (!table) return;
  $("sql").textContent = table.sql;
  const el = $("table");
  el.innerHTML = "";
  const head = el.insertRow();
  for (const c of table.columns) head.insertCell().outerHTML = `<th>${c.replace(/</g, "&lt;")}</th>`;
  for (const row of table.rows.slice(0, 200)) {
    const tr = el.insertRow();
    for (const v of row) tr.insertCell().textContent = v;
  }
}

function renderChart(chart) {
  const box = $("chart");
  box.innerHTML = "";
  if (!chart) return;
  const W = 640, H = 260, L = 60, B = 40, T = 10, R = 10;
  const values = chart.series.flatMap((s) => s.values);
  const max = Math.max(...values, 0) || 1;
  const n = chart.labels.length;
  const x = (i) => L + (n === 1 ? 0 : (i * (W - L - R)) / (n - 1));
  const y = (v) => H - B - (v / max) * (H - B - T);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${chart.type} chart of ${chart.series.map((s) => s.name).join(", ")} by ${chart.x}`);
  svg.classList.add("chart", chart.type);
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
    return el;
  };
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" });
  add("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" });
  add("text", { x: L - 6, y: T + 10, "text-anchor": "end", class: "tick" }, max.toLocaleString());
  add("text", { x: L - 6, y: H - B, "text-anchor": "end", class: "tick" }, "0");
  const every = Math.max(1, Math.ceil(n / 8));
  chart.labels.forEach((label, i) => {
    if (i % every === 0) add("text", { x: x(i), y: H - B + 16, "text-anchor": "middle", class: "tick" }, label);
  });
  chart.series.forEach((s, k) => {
    if (chart.type === "line") {
      const points = s.values.map((v, i) => `${x(i)},${y(v)}`).join(" ");
      add("polyline", { points, class: `series s${k}`, fill: "none" });
    } else {
      const width = Math.max(2, (W - L - R) / n / (chart.series.length + 1));
      s.values.forEach((v, i) => add("rect", {
        x: x(i) - (width * chart.series.length) / 2 + k * width, y: y(v), width, height: H - B - y(v),
        class: `series s${k}`,
      }));
    }
  });
  box.append(svg);
}

$("ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  showError("");
  $("steps").innerHTML = "";
  $("result").hidden = true;
  setProgress(0);
  if (source) source.close();
  const resp = await fetch("/api/query", {
    method: "POST", headers: { "Content-Type": "application/json", ...auth }, body: JSON.stringify({ query }),
  });
  const body = await resp.json();
  if (!resp.ok) { showError(body.error.message); return; }
  current = body.workflow_id;
  $("panel").hidden = false;
  $("submit").disabled = true;
  $("cancel").hidden = false;
  const taskId = current;
  source = new EventSource(`/api/stream/${taskId}${token ? `?token=${encodeURIComponent(token)}` : ""}`);
  source.onmessage = onEvent;
  source.addEventListener("error", (m) => { if (m.data) showError(onEvent(m).message); });
  source.addEventListener("end", (m) => { onEvent(m); finish(taskId); });
});

$("cancel").addEventListener("click", async () => {
  if (current) await fetch(`/api/v1/tasks/${current}/cancel`, { method: "POST", headers: auth });
});

window.greenroomTasks = { get current() { return current; } };

// Live bus traffic over /ws/tap: filtered on the server by session, type prefix and actor.
// Pausing keeps the connection and counts what arrives, but stops drawing it.
const $ = (id) => document.getElementById(id);
const MAX_SHOWN = 2000;
let ws = null;
let paused = false;
let shown = 0, held = 0, dropped = 0;

function counts() {
  $("counts").textContent = `${shown} shown` + (held ? `, ${held} while paused` : "") + (dropped ? `, ${dropped} dropped` : "");
}

function row(frame) {
  const li = document.createElement("li");
  if (frame.type === "undecodable") {
    li.className = "undecodable";
    li.textContent = `undecodable: ${frame.error}`;
    return li;
  }
  const h = frame.header;
  li.dataset.type = h.type;
  li.dataset.session = h.session;
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  const time = new Date(h.ts * 1000).toISOString().slice(11, 23);
  const extra = frame.extra.length ? ` +${frame.extra.map((n) => `${n}B`).join(",")}` : "";
  const latency = frame.latency_ms != null ? ` (${frame.latency_ms.toFixed(2)} ms)` : "";
  summary.innerHTML = "";
  for (const [cls, text] of [["time", time], ["type", h.type], ["session", h.session || "—"], ["turn", `#${h.turn}`],
                             ["src", h.src], ["extra", extra + latency]]) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    summary.append(span, " ");
  }
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify({ header: h, body: frame.body }, null, 2);
  details.append(summary, pre);
  li.append(details);
  return li;
}

function connect() {
  if (ws) ws.close();
  const q = new URLSearchParams();
  for (const [k, id] of [["session", "f-session"], ["type", "f-type"], ["actor", "f-actor"]]) {
    const v = $(id).value.trim();
    if (v) q.set(k, v);
  }
  history.replaceState(null, "", `/tap?${q}`);
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/tap?${q}`);
  ws.onmessage = (ev) => {
    const frame = JSON.parse(ev.data);
    if (frame.type === "tap") { document.body.dataset.live = "1"; return; }
    if (frame.type === "error") { $("error").textContent = frame.message; return; }
    if (frame.type === "dropped") { dropped += frame.count; counts(); return; }
    if (paused) { held++; counts(); return; }
    const list = $("messages");
    list.append(row(frame));
    shown++;
    while (list.children.length > MAX_SHOWN) list.firstChild.remove();
    counts();
  };
  ws.onclose = () => { document.body.dataset.live = ""; };
}

const params = new URLSearchParams(location.search);
$("f-session").value = params.get("session") || "";
$("f-type").value = params.get("type") || "";
$("f-actor").value = params.get("actor") || "";
$("filters").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
$("pause").addEventListener("click", () => {
  paused = !paused;
  $("pause").setAttribute("aria-pressed", String(paused));
  $("pause").textContent = paused ? "Resume" : "Pause";
});
$("clear").addEventListener("click", () => { $("messages").innerHTML = ""; shown = held = dropped = 0; counts(); });
connect();

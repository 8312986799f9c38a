// Telemetry dashboard: percentiles over recent turns, sessions, and for one session its
// turns as latency waterfalls (each hop in ms after the user's input) and its timeline.
const $ = (id) => document.getElementById(id);
const HOPS = ["vad_end", "stt_final", "user_input", "accepted", "llm_first_token", "first_sentence",
  "tts_first_chunk", "first_audio_out", "first_frame_sent", "playback_started", "reply_end"];
const fmt = (v) => (v == null ? "—" : `${Number(v).toFixed(1)} ms`);

function cell(tr, text) { tr.insertCell().textContent = text; }

async function loadSessions() {
  const resp = await fetch("/api/v1/telemetry/sessions");
  if (!resp.ok) return;
  const data = await resp.json();
  const pbody = $("percentiles").tBodies[0];
  pbody.innerHTML = "";
  for (const [name, label] of [["ttft_ms", "time to first token"], ["ttfa_ms", "time to first audio"],
                               ["total_ms", "reply complete"]]) {
    const p = (data.latency || {})[name] || {};
    const tr = pbody.insertRow();
    tr.dataset.metric = name;
    cell(tr, label); cell(tr, p.n ?? 0); cell(tr, fmt(p.p50)); cell(tr, fmt(p.p90)); cell(tr, fmt(p.p99));
  }
  const sbody = $("sessions").tBodies[0];
  sbody.innerHTML = "";
  for (const s of data.sessions) {
    const tr = sbody.insertRow();
    tr.dataset.session = s.session_id;
    const a = document.createElement("a");
    a.href = `#${s.session_id}`;
    a.textContent = s.session_id;
    tr.insertCell().append(a);
    cell(tr, s.kind); cell(tr, s.character || ""); cell(tr, new Date(s.last_seen * 1000).toLocaleTimeString());
    cell(tr, s.events); cell(tr, s.turns);
  }
}

function waterfall(turn) {
  const box = document.createElement("div");
  box.className = "waterfall";
  box.dataset.turn = turn.turn;
  const title = document.createElement("p");
  title.textContent = `Turn ${turn.turn} · ${turn.source} · ${turn.provider || "?"} · first token ${fmt(turn.ttft_ms)}`
    + ` · first audio ${fmt(turn.ttfa_ms)} · complete ${fmt(turn.total_ms)}${turn.interrupted ? " · interrupted" : ""}`;
  box.append(title);
  const end = Math.max(1, ...Object.values(turn.hops).filter((v) => v != null));
  for (const hop of HOPS) {
    if (!(hop in turn.hops)) continue;
    const ms = turn.hops[hop];
    const row = document.createElement("div");
    row.className = "hop";
    row.dataset.hop = hop;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = hop.replace(/_/g, " ");
    const track = document.createElement("span");
    track.className = "track";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(0.5, (100 * Math.max(0, ms)) / end)}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = fmt(ms);
    row.append(label, track, value);
    box.append(row);
  }
  return box;
}

async function loadDetail(session) {
  if (!session) { $("detail").hidden = true; return; }
  const resp = await fetch(`/api/v1/telemetry/sessions/${encodeURIComponent(session)}`);
  if (!resp.ok) return;
  const data = await resp.json();
  $("detail").hidden = false;
  $("detail-title").textContent = `${session} · ${data.session.character || data.session.kind}`;
  $("detail-tap").href = `/tap?session=${encodeURIComponent(session)}`;
  $("waterfalls").replaceChildren(...data.turns.map(waterfall));
  const list = $("timeline");
  list.innerHTML = "";
  const t0 = data.events.length ? data.events[0].ts : 0;
  for (const e of data.events) {
    const li = document.createElement("li");
    li.dataset.type = e.type;
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = `+${((e.ts - t0) * 1000).toFixed(1)} ms  ${e.type}  #${e.turn}  ${e.src}`
      + (e.extra_bytes ? `  +${e.extra_bytes}B` : "");
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(e.body, null, 2);
    details.append(summary, pre);
    li.append(details);
    list.append(li);
  }
}

window.addEventListener("hashchange", () => loadDetail(location.hash.slice(1)));
await loadSessions();
await loadDetail(location.hash.slice(1));
setInterval(loadSessions, 5000);

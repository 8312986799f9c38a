// Greenroom chat page: plain ES module, no build step.
const $ = (id) => document.getElementById(id);
const state = { ws: null, character: null, session: null, bubble: null, turnText: "" };
const key = (name) => `greenroom.session.${name}`;

async function loadCharacters() {
  const cards = await (await fetch("/api/characters")).json();
  const list = $("characters");
  list.replaceChildren();
  for (const card of cards) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.character = card.name;
    b.textContent = card.display_name;
    const small = document.createElement("small");
    small.textContent = card.greeting;
    b.append(small);
    b.addEventListener("click", () => openChat(card));
    li.append(b);
    list.append(li);
  }
}

function addBubble(speaker, text, extra = {}) {
  const li = document.createElement("li");
  li.className = speaker + (extra.interrupted ? " interrupted" : "");
  li.textContent = text;
  $("log").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

async function loadHistory(session) {
  const res = await fetch(`/api/v1/sessions/${encodeURIComponent(session)}/messages`);
  if (!res.ok) return false;
  const data = await res.json();
  $("log").replaceChildren();
  for (const m of data.messages) addBubble(m.speaker, m.content, m.metadata || {});
  return true;
}

async function openChat(card, fresh = false) {
  state.character = card.name;
  $("picker").hidden = true;
  $("chat").hidden = false;
  $("who").textContent = card.display_name;
  $("log").replaceChildren();
  $("error").textContent = "";
  location.hash = card.name;
  const remembered = fresh ? null : localStorage.getItem(key(card.name));
  const resumed = remembered ? await loadHistory(remembered) : false;
  connect(resumed ? remembered : null);
}

function connect(resume) {
  if (state.ws) state.ws.close();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws/${state.character}`);
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({
    action: "start_session", input_type: "text", new_session: !resume, session_id: resume || undefined,
  }));
  ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
  ws.onclose = () => { if (state.ws === ws) $("status").textContent = "disconnected"; };
}

function onFrame(f) {
  switch (f.type) {
    case "status":
      $("status").textContent = f.status || f.message;
      $("status").dataset.status = f.status || "";
      if (f.session_id) {
        state.session = f.session_id;
        localStorage.setItem(key(state.character), f.session_id);
      }
      break;
    case "text":
      if (!state.bubble) { state.bubble = addBubble("assistant", ""); state.turnText = ""; }
      state.turnText += f.text;
      state.bubble.textContent = state.turnText;
      break;
    case "transcript":
      if (f.speaker === "assistant") {
        if (state.bubble) state.bubble.textContent = f.text;
        else addBubble("assistant", f.text);
        if (f.interrupted && state.bubble) state.bubble.classList.add("interrupted");
        state.bubble = null;
      } else {
        addBubble("user", f.text);
      }
      break;
    case "emotion":
      $("emotion").textContent = f.emotion;
      break;
    case "interrupt":
      if (state.bubble) state.bubble.classList.add("interrupted");
      state.bubble = null;
      break;
    case "error":
      $("error").textContent = `${f.code}: ${f.message}`;
      break;
  }
}

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  if (state.bubble) { state.bubble.classList.add("interrupted"); state.bubble = null; }
  addBubble("user", text);
  $("error").textContent = "";
  state.ws.send(JSON.stringify({ action: "stream_data", input_type: "text", data: text }));
  $("text").value = "";
});
$("back").addEventListener("click", () => {
  if (state.ws) state.ws.close();
  state.ws = null;
  location.hash = "";
  $("chat").hidden = true;
  $("picker").hidden = false;
});
$("new").addEventListener("click", async () => {
  const cards = await (await fetch("/api/characters")).json();
  openChat(cards.find((c) => c.name === state.character), true);
});

await loadCharacters();
if (location.hash.length > 1) {
  const cards = await (await fetch("/api/characters")).json();
  const card = cards.find((c) => c.name === location.hash.slice(1));
  if (card) openChat(card);
}
setInterval(() => state.ws && state.ws.readyState === WebSocket.OPEN && state.ws.send('{"action":"ping"}'), 25000);

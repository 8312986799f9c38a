// Greenroom chat page: plain ES module, no build step.
const $ = (id) => document.getElementById(id);
const state = { ws: null, character: null, session: null, bubble: null, turnText: "", interim: null };
const audio = { ctx: null, player: null, mic: null, source: null, capture: null, on: false };
// What the page sent and played, for people debugging audio (and for the browser test).
window.greenroomAudio = { sentChunks: 0, receivedSamples: 0, playedSamples: 0, interrupts: 0 };
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
  ws.onopen = () => startSession(resume);
  ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
  ws.onclose = () => { if (state.ws === ws) $("status").textContent = "disconnected"; };
}

function startSession(resume) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify({
    action: "start_session", input_type: audio.on ? "audio" : "text", new_session: !resume,
    session_id: resume || undefined, speak: audio.on || $("speak").checked,
    sample_rate: audio.ctx ? audio.ctx.sampleRate : 48000,
  }));
}

// -- audio --------------------------------------------------------------------------------

async function audioContext() {
  if (!audio.ctx) {
    audio.ctx = new AudioContext({ sampleRate: 48000 });
    await audio.ctx.audioWorklet.addModule("/static/audio-worklets.js");
    audio.player = new AudioWorkletNode(audio.ctx, "greenroom-player", { outputChannelCount: [1] });
    audio.player.port.onmessage = (ev) => {
      window.greenroomAudio.playedSamples += ev.data.played;
      // the first sound of a turn's reply: tell the server (the latency ledger's last hop)
      if (state.audioTurn && state.audioTurn !== state.playedTurn && state.ws?.readyState === WebSocket.OPEN) {
        state.playedTurn = state.audioTurn;
        state.ws.send(JSON.stringify({ action: "playback_started", turn: state.audioTurn }));
      }
    };
    audio.player.connect(audio.ctx.destination);
  }
  if (audio.ctx.state === "suspended") await audio.ctx.resume();
  return audio.ctx;
}

function toBase64(int16) {
  const bytes = new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(b64) {
  const s = atob(b64);
  const pcm = new Int16Array(s.length >> 1);
  for (let i = 0; i < pcm.length; i++) pcm[i] = (s.charCodeAt(2 * i) | (s.charCodeAt(2 * i + 1) << 8)) << 16 >> 16;
  const out = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
  return out;
}

async function micOn() {
  const ctx = await audioContext();
  audio.mic = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  audio.source = ctx.createMediaStreamSource(audio.mic);
  audio.capture = new AudioWorkletNode(ctx, "greenroom-capture", { numberOfInputs: 1, numberOfOutputs: 0 });
  audio.capture.port.onmessage = (ev) => {
    if (!audio.on || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
    const block = ev.data;
    const pcm = new Int16Array(block.length);
    for (let i = 0; i < block.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(block[i] * 32767)));
    state.ws.send(JSON.stringify({ action: "stream_data", input_type: "audio", data: toBase64(pcm) }));
    window.greenroomAudio.sentChunks++;
  };
  audio.source.connect(audio.capture);
  audio.on = true;
}

function micOff() {
  audio.on = false;
  if (audio.source) audio.source.disconnect();
  if (audio.mic) for (const track of audio.mic.getTracks()) track.stop();
  audio.mic = audio.source = audio.capture = null;
}

function stopPlayback() {
  if (audio.player) audio.player.port.postMessage({ clear: true });
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
      } else if (f.isFinal === false) {
        if (!state.interim) { state.interim = addBubble("user", ""); state.interim.classList.add("interim"); }
        state.interim.textContent = f.text;
      } else {
        if (state.interim) { state.interim.remove(); state.interim = null; }
        addBubble("user", f.text);
      }
      break;
    case "audio": {
      const samples = fromBase64(f.audio_data);
      if (f.turn) state.audioTurn = f.turn;
      window.greenroomAudio.receivedSamples += samples.length;
      if (audio.player) audio.player.port.postMessage({ samples }, [samples.buffer]);
      break;
    }
    case "audio_end":
      if (audio.player) audio.player.port.postMessage({ end: true });
      break;
    case "emotion":
      $("emotion").textContent = f.emotion;
      break;
    case "interrupt":
      window.greenroomAudio.interrupts++;
      stopPlayback();
      if (state.bubble) state.bubble.classList.add("interrupted");
      state.bubble = null;
      break;
    case "agent_notification": {
      // one line per task, updated as its steps progress; the result replaces it
      let li = document.querySelector(`#log li.notification[data-task="${f.task_id}"]`);
      if (!li) { li = addBubble("notification", ""); li.dataset.task = f.task_id; }
      li.dataset.status = f.status;
      li.textContent = f.status === "result" ? `📋 ${f.text}` : `⏳ ${f.text} (${f.progress}%)`;
      break;
    }
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
$("mic").addEventListener("click", async () => {
  try {
    if (audio.on) micOff(); else await micOn();
  } catch (err) {
    micOff();
    $("error").textContent = `microphone: ${err.message || err}`;
  }
  $("mic").setAttribute("aria-pressed", String(audio.on));
  startSession(state.session);  // same session, now with (or without) the microphone
});
$("speak").addEventListener("change", async () => {
  if ($("speak").checked) await audioContext();
  startSession(state.session);
});
$("back").addEventListener("click", () => {
  micOff();
  stopPlayback();
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

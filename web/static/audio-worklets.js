// AudioWorklet processors for the chat page: microphone capture and speech playback.

// Posts the microphone's samples (Float32, the context's rate) to the page in 20 ms blocks.
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(Math.round(sampleRate / 50));
    this.filled = 0;
  }
  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (input) {
      let i = 0;
      while (i < input.length) {
        const n = Math.min(input.length - i, this.block.length - this.filled);
        this.block.set(input.subarray(i, i + n), this.filled);
        this.filled += n;
        i += n;
        if (this.filled === this.block.length) {
          this.port.postMessage(this.block.slice());
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

// Plays queued chunks back to back (no gaps, no clicks between chunks) after a small
// jitter buffer; {clear: true} drops everything at once (the user interrupted).
class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunks = [];
    this.offset = 0;
    this.queued = 0;
    this.playing = false;
    this.prebuffer = Math.round(sampleRate * 0.12);
    this.port.onmessage = (ev) => {
      if (ev.data.clear) {
        this.chunks = []; this.offset = 0; this.queued = 0; this.playing = false;
      } else if (ev.data.end) {
        this.playing = this.queued > 0;  // the turn is complete: play out what is left
      } else {
        this.chunks.push(ev.data.samples);
        this.queued += ev.data.samples.length;
      }
    };
  }
  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.queued >= this.prebuffer) this.playing = true;
    let i = 0;
    while (this.playing && i < out.length && this.chunks.length) {
      const chunk = this.chunks[0];
      const n = Math.min(out.length - i, chunk.length - this.offset);
      out.set(chunk.subarray(this.offset, this.offset + n), i);
      i += n; this.offset += n; this.queued -= n;
      if (this.offset === chunk.length) { this.chunks.shift(); this.offset = 0; }
    }
    if (i > 0) this.port.postMessage({ played: i });
    if (!this.chunks.length) this.playing = false;  // ran dry: buffer again before resuming
    for (const ch of outputs[0].slice(1)) ch.set(out);
    return true;
  }
}

registerProcessor("greenroom-capture", Capture);
registerProcessor("greenroom-player", Player);

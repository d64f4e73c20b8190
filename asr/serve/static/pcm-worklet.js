// An AudioWorklet that turns the microphone (the AudioContext's rate, usually
// 44.1 or 48 kHz, first channel) into 16-bit little-endian mono PCM at the
// server's rate, and posts it to the page in frames of `frameSamples` samples.
//
// Resampling is band-limited interpolation: each output sample is the input
// convolved with a Hann-windowed sinc low-pass at 90 % of the lower Nyquist
// frequency, 8 zero crossings each side, so downsampling does not alias the
// band above 8 kHz into the speech the model hears.
class Pcm16k extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.outRate = o.targetRate || 16000;
    this.frameSamples = o.frameSamples || 1600;
    this.step = sampleRate / this.outRate; // input samples per output sample
    this.fc = 0.5 * Math.min(1, this.outRate / sampleRate) * 0.9; // cycles/sample
    this.width = 8 / (2 * this.fc); // half-width of the filter, input samples
    this.buf = new Float32Array(0); // input not yet consumed
    this.t = 0; // position of the next output sample in buf, input samples
    this.out = new Int16Array(this.frameSamples);
    this.n = 0;
    this.port.onmessage = (ev) => {
      if (ev.data === "flush" && this.n > 0) {
        const part = this.out.slice(0, this.n);
        this.port.postMessage(part.buffer, [part.buffer]);
        this.n = 0;
      }
    };
  }

  emit(v) {
    const s = Math.max(-1, Math.min(1, v));
    this.out[this.n++] = Math.round(s * 32767);
    if (this.n === this.frameSamples) {
      const full = this.out;
      this.port.postMessage(full.buffer, [full.buffer]);
      this.out = new Int16Array(this.frameSamples);
      this.n = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const x = input[0];
    if (this.step === 1) {
      for (let i = 0; i < x.length; i++) this.emit(x[i]);
      return true;
    }
    const joined = new Float32Array(this.buf.length + x.length);
    joined.set(this.buf);
    joined.set(x, this.buf.length);
    const buf = joined;
    const w = this.width;
    const fc2 = 2 * this.fc;
    let t = this.t;
    while (t + w < buf.length) {
      const lo = Math.max(0, Math.ceil(t - w));
      const hi = Math.floor(t + w);
      let acc = 0;
      for (let k = lo; k <= hi; k++) {
        const d = t - k;
        const u = d / w;
        const window = 0.5 * (1 + Math.cos(Math.PI * u));
        const a = Math.PI * fc2 * d;
        const sinc = d === 0 ? 1 : Math.sin(a) / a;
        acc += buf[k] * fc2 * sinc * window;
      }
      this.emit(acc);
      t += this.step;
    }
    // Keep what the next outputs still reach back to.
    const keep = Math.max(0, Math.floor(t - w) - 1);
    this.buf = buf.slice(keep);
    this.t = t - keep;
    return true;
  }
}

registerProcessor("pcm-16k", Pcm16k);

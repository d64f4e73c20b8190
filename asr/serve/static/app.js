// The page: the microphone -> an AudioWorklet (16 kHz s16le) -> WS /stream;
// the server's partial result is shown live and each final with its times.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { finals: [], closed: null, ready: false };
window.asrState = state; // what the browser test reads

let ws = null;
let ctx = null;
let mic = null;
let node = null;
let sampleRate = 16000;

function status(text, cls) {
  $("status").textContent = text;
  $("status").className = cls || "";
}

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = (seconds - 60 * m).toFixed(2).padStart(5, "0");
  return `${m}:${s}`;
}

function showFinal(event) {
  if (!event.text) return;
  state.finals.push(event);
  const li = document.createElement("li");
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${clock(event.start)} – ${clock(event.end)}`;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = event.text;
  li.append(time, text);
  $("finals").append(li);
}

function onMessage(ev) {
  const event = JSON.parse(ev.data);
  if (event.type === "ready") {
    state.ready = true;
    status(`listening (model latency ${event.latency} s)`, "live");
  } else if (event.type === "partial") {
    $("partial").textContent = event.text;
  } else if (event.type === "final") {
    $("partial").textContent = "";
    showFinal(event);
  } else if (event.type === "error") {
    status(`error ${event.code}: ${event.message}`, "error");
  }
}

function stopAudio() {
  if (node) {
    node.port.onmessage = null;
    node.disconnect();
    node = null;
  }
  if (mic) {
    mic.getTracks().forEach((t) => t.stop());
    mic = null;
  }
  if (ctx) {
    ctx.close();
    ctx = null;
  }
}

async function start() {
  $("start").disabled = true;
  state.closed = null;
  state.ready = false;
  status("connecting…");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${scheme}//${location.host}/stream`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = onMessage;
  ws.onclose = (ev) => {
    stopAudio();
    state.closed = ev.code;
    $("start").disabled = false;
    $("stop").disabled = true;
    if ($("status").className !== "error") {
      status(ev.code === 1000 ? "done" : `closed (${ev.code}) ${ev.reason}`);
    }
  };
  try {
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("cannot connect to /stream"));
    });
    ws.send(JSON.stringify({ sample_rate: sampleRate, format: "s16le" }));
    mic = await navigator.mediaDevices.getUserMedia({
      // The model hears what a file would give it: no echo cancellation, noise
      // suppression or gain control reshaping the signal.
      audio: {
        channelCount: 1,
        echoCancellation: false,
        noiseSuppression: false,
        autoGainControl: false,
      },
    });
    ctx = new AudioContext();
    await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    const source = ctx.createMediaStreamSource(mic);
    node = new AudioWorkletNode(ctx, "pcm-16k", {
      processorOptions: { targetRate: sampleRate, frameSamples: sampleRate / 10 },
    });
    node.port.onmessage = (ev) => {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(ev.data);
    };
    // A silent path to the output keeps the graph, and so the worklet, running.
    const mute = ctx.createGain();
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(ctx.destination);
    $("stop").disabled = false;
  } catch (err) {
    status(`error: ${err.message}`, "error");
    stopAudio();
    if (ws) ws.close();
    $("start").disabled = false;
  }
}

function stop() {
  $("stop").disabled = true;
  if (node) node.port.postMessage("flush");
  // The last frame is posted back before the end message goes out.
  setTimeout(() => {
    stopAudio();
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "end" }));
      status("finishing…");
    }
  }, 100);
}

async function describe() {
  try {
    const health = await (await fetch("/health")).json();
    sampleRate = health.sample_rate;
    const m = health.model;
    const params = m.parameters.toLocaleString("en");
    $("model").textContent = health.streaming
      ? `${m.checkpoint}: ${params} parameters, ${health.sample_rate} Hz, ` +
        `latency ${health.latency} s, ${health.streams}/${health.max_streams} streams`
      : `${m.checkpoint} cannot stream: ${health.streaming_error}`;
    $("start").disabled = !health.streaming;
  } catch (err) {
    status(`error: ${err.message}`, "error");
  }
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
// The token in the address has been turned into a cookie: keep it off the screen.
if (location.search.includes("token=")) history.replaceState(null, "", "/");
describe();

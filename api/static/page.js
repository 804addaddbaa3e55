// The page at GET / (index.html): send a file or a microphone recording to POST /predict and draw the
// answer (verdict, per-speaker timeline, speakers table) with the model's published figures (trust.json).
// Plain JS, no framework; server text is only ever set as textContent.
"use strict";

const KEY_STORAGE = "soundsentry.apiKey";
const RECORDING_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"];

const $ = (id) => document.getElementById(id);
const percent = (value, digits = 0) => `${(value * 100).toFixed(digits)} %`;
const seconds = (value) => `${value.toFixed(1)} s`;

/** P(fake) as a colour: green (0) through amber to red (1). */
function probabilityColour(probability) {
  const p = Math.min(Math.max(probability, 0), 1);
  return `hsl(${Math.round(120 * (1 - p))} 65% 35%)`;
}

// ------------------------------------------------------------------------------------------ status

function setStatus(text) {
  $("status").textContent = text;
}

function showError(message, detail) {
  const box = $("error");
  box.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = message;
  box.append(strong);
  if (detail) {
    const small = document.createElement("div");
    small.className = "hint";
    small.textContent = detail;
    box.append(small);
  }
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

function setBusy(busy) {
  $("analyse").disabled = busy;
  $("record").disabled = busy && !recorder;
}

// ------------------------------------------------------------------------------------------ sending

/** POST one recording to /predict; draw the answer or show the server's message. */
async function analyse(blob, filename) {
  clearError();
  $("result").hidden = true;
  const form = new FormData();
  form.append("audio", blob, filename);
  if ($("use-diarization").checked) form.append("use_diarization", "true");
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers["X-API-Key"] = key;
  setBusy(true);
  setStatus(`Analysing ${filename} (${(blob.size / 1024).toFixed(0)} KiB)…`);
  let response;
  try {
    response = await fetch("predict", { method: "POST", body: form, headers });
  } catch (error) {
    setStatus("");
    showError("Could not reach the server.", String(error));
    setBusy(false);
    return;
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  setBusy(false);
  if (!response.ok || body === null) {
    setStatus("");
    const message = body && body.message ? body.message : `The server answered HTTP ${response.status}.`;
    const detail = body && body.error_code
      ? `${response.status} ${body.error_code}${body.request_id ? ` · request ${body.request_id}` : ""}`
      : "";
    showError(message, detail);
    return;
  }
  setStatus(`${filename}: analysed in ${Math.round(body.processing_time_ms)} ms.`);
  render(body);
}

// ------------------------------------------------------------------------------------------ drawing

const ZONE_TEXT = {
  real: "below the equal-error point",
  uncertain: "called Real but leaning fake (above the equal-error point, where real speech of unfamiliar "
    + "sources also lands)",
  fake: "called Fake",
};

function render(body) {
  const verdict = $("verdict");
  verdict.textContent = body.overall === "No Speech" ? "No speech found" : body.overall;
  verdict.className = body.overall === "No Speech" ? "none" : (body.zone || body.overall.toLowerCase());
  const parts = [];
  if (body.overall !== "No Speech") {
    parts.push(`P(fake) ${percent(body.mean_probability)} over ${seconds(body.duration_config.speech_duration)} `
      + `of speech, confidence ${percent(body.confidence)}`);
    if (body.zone) parts.push(`zone ${body.zone}: ${ZONE_TEXT[body.zone]}`);
  }
  $("verdict-detail").textContent = parts.join("; ");
  const message = $("message");
  message.textContent = body.message || "";
  message.hidden = !body.message;
  drawTimeline(body);
  fillSpeakers(body);
  $("result").hidden = false;
  describeTrust(body);
}

/** Seconds between axis ticks: at most about ten over ``duration``. */
function tickStep(duration) {
  for (const step of [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800]) {
    if (duration / step <= 10) return step;
  }
  return 3600;
}

function drawTimeline(body) {
  const timeline = $("timeline");
  timeline.replaceChildren();
  const segments = body.details || [];
  const duration = Math.max(body.duration_config.duration || 0, ...segments.map((s) => s.end), 0.001);
  const names = (body.speakers || []).map((s) => s.speaker);
  for (const segment of segments) if (!names.includes(segment.speaker)) names.push(segment.speaker);
  if (names.length === 0) {
    const empty = document.createElement("p");
    empty.className = "hint";
    empty.textContent = "No scored speech to draw.";
    timeline.append(empty);
  }
  for (const name of names) {
    const track = document.createElement("div");
    track.className = "track";
    track.dataset.speaker = name;
    const label = document.createElement("div");
    label.className = "track-name";
    label.textContent = name;
    const lane = document.createElement("div");
    lane.className = "track-lane";
    for (const segment of segments.filter((s) => s.speaker === name)) {
      const bar = document.createElement("div");
      bar.className = "segment";
      bar.dataset.probability = String(segment.probability);
      bar.style.left = `${(100 * segment.start) / duration}%`;
      bar.style.width = `${(100 * (segment.end - segment.start)) / duration}%`;
      bar.style.background = probabilityColour(segment.probability);
      const scores = Object.entries(segment.scores || {}).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ");
      bar.title = `${name}, ${segment.start.toFixed(2)}–${segment.end.toFixed(2)} s: ${segment.result}, `
        + `P(fake) ${segment.probability.toFixed(2)}${scores ? ` (${scores})` : ""}`;
      bar.textContent = percent(segment.probability);
      lane.append(bar);
    }
    track.append(label, lane);
    timeline.append(track);
  }
  const axis = document.createElement("div");
  axis.className = "axis";
  const step = tickStep(duration);
  for (let t = 0; t <= duration + 1e-9; t += step) {
    const tick = document.createElement("span");
    tick.style.left = `${(100 * t) / duration}%`;
    tick.textContent = `${Number.isInteger(t) ? t : t.toFixed(1)} s`;
    axis.append(tick);
  }
  timeline.append(axis);
}

function fillSpeakers(body) {
  const rows = $("speakers").querySelector("tbody");
  rows.replaceChildren();
  for (const speaker of body.speakers || []) {
    const row = document.createElement("tr");
    const cells = [
      speaker.speaker,
      `${speaker.result} (${speaker.zone})`,
      percent(speaker.probability),
      percent(speaker.threshold),
      seconds(speaker.speech_duration),
      speaker.counted ? "yes" : "no (too little speech)",
    ];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    row.children[1].className = speaker.zone;
    rows.append(row);
  }
  $("speakers").hidden = (body.speakers || []).length === 0;
}

// ------------------------------------------------------------------------------------------ trust

let figures = null;

/** The plain sentence on how far to trust a verdict, from the published figures (trust.json). */
function describeTrust(body) {
  const text = $("trust-text");
  if (!figures) {
    text.textContent = "Treat a verdict as weak evidence (the model's figures could not be loaded).";
    return;
  }
  const f = figures;
  const sentences = [
    `Treat a verdict as weak evidence: on speech from sources it never trained on, about `
      + `${percent(f.wrong_on_unfamiliar)} of its verdicts are wrong (equal-error rate ${percent(f.eer_files)} `
      + `on whole files, ${percent(f.eer_chunks)} on 4-second browser chunks).`,
    `At its operating point it called ${percent(f.reals_called_fake_files, 1)} of real files Fake `
      + `(${percent(f.reals_called_fake_chunks, 1)} of real chunks) and ${percent(f.fakes_called_real_files, 1)} `
      + `of fake files Real (${percent(f.fakes_called_real_chunks)} of fake chunks).`,
  ];
  if (body && body.overall === "Fake") {
    sentences.push("So \u201cFake\u201d is rarely wrong about real speech like that it was tested on, "
      + "though unfamiliar recordings and codecs (telephone audio) are called Fake more often.");
  } else if (body && body.overall === "Real") {
    sentences.push("So \u201cReal\u201d says little: most fakes of unfamiliar generators are called Real too.");
  } else {
    sentences.push("\u201cFake\u201d is rarely wrong; \u201cReal\u201d says little.");
  }
  text.textContent = sentences.join(" ");
}

async function loadFigures() {
  try {
    const response = await fetch("static/trust.json");
    if (response.ok) figures = await response.json();
  } catch {
    figures = null;
  }
  describeTrust(null);
}

// ------------------------------------------------------------------------------------------ recording

let recorder = null;

async function toggleRecording() {
  if (recorder) {
    recorder.stop();
    return;
  }
  clearError();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    showError("The microphone is not available.", String(error));
    return;
  }
  const mimeType = RECORDING_TYPES.find((type) => MediaRecorder.isTypeSupported(type)) || "";
  recorder = new MediaRecorder(stream, mimeType ? { mimeType } : {});
  const parts = [];
  const started = Date.now();
  const clock = setInterval(() => {
    $("record-status").textContent = `recording ${((Date.now() - started) / 1000).toFixed(0)} s…`;
  }, 500);
  recorder.ondataavailable = (event) => {
    if (event.data.size) parts.push(event.data);
  };
  recorder.onstop = () => {
    clearInterval(clock);
    stream.getTracks().forEach((track) => track.stop());
    const type = recorder.mimeType || "audio/webm";
    recorder = null;
    $("record").textContent = "Record";
    $("record").classList.remove("recording");
    $("record-status").textContent = "";
    const blob = new Blob(parts, { type });
    analyse(blob, type.includes("ogg") ? "recording.ogg" : "recording.webm");
  };
  recorder.start();
  $("record").textContent = "Stop and analyse";
  $("record").classList.add("recording");
}

// ------------------------------------------------------------------------------------------ wiring

function init() {
  const keyInput = $("api-key");
  keyInput.value = localStorage.getItem(KEY_STORAGE) || "";
  if (keyInput.value) $("key-box").open = true;
  keyInput.addEventListener("change", () => {
    const key = keyInput.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  });
  $("forget-key").addEventListener("click", () => {
    keyInput.value = "";
    localStorage.removeItem(KEY_STORAGE);
  });
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = $("audio-file").files[0];
    if (!file) {
      showError("Choose an audio file first.");
      return;
    }
    analyse(file, file.name);
  });
  const canRecord = typeof MediaRecorder !== "undefined" && navigator.mediaDevices;
  $("record").disabled = !canRecord;
  if (!canRecord) $("record-status").textContent = "(needs a browser with MediaRecorder, over HTTPS or localhost)";
  $("record").addEventListener("click", toggleRecording);
  loadFigures();
}

document.addEventListener("DOMContentLoaded", init);

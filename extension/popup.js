// The popup: renders the state the service worker keeps (chrome.storage.session "state") and follows it
// as it changes; its buttons ask the service worker to start or stop listening to the active tab.

import { NOT_LISTENING, PROBLEMS, STATUS_TEXT } from "./state.js";

const $ = (id) => document.getElementById(id);
const percent = (value) => `${Math.round(value * 100)} %`;

function sureness(confidence) {
  if (confidence >= 0.75) return "fairly sure";
  if (confidence >= 0.4) return "somewhat sure";
  return "unsure";
}

function speakerItem(speaker) {
  const item = document.createElement("li");
  item.dataset.speaker = speaker.speaker;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = speaker.speaker;
  const verdict = document.createElement("span");
  verdict.className = `verdict ${speaker.zone}`;
  verdict.textContent = `${speaker.result}${speaker.zone === "uncertain" ? " (leaning fake)" : ""}`;
  const detail = document.createElement("div");
  detail.className = "muted";
  detail.textContent = `P(fake) ${percent(speaker.probability)}, ${sureness(speaker.confidence)} `
    + `(confidence ${percent(speaker.confidence)}), ${speaker.speech_duration.toFixed(1)} s of speech in `
    + `${speaker.chunks} chunk(s)${speaker.counted ? "" : "; too little speech to count"}`;
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = percent(speaker.probability).replace(" ", "");
  fill.style.background = `hsl(${Math.round(120 * (1 - speaker.probability))} 65% 35%)`;
  bar.append(fill);
  item.append(name, verdict, detail, bar);
  return item;
}

function render(state) {
  const status = state ? state.status : "idle";
  const listening = !NOT_LISTENING.has(status);
  $("listen").hidden = Boolean(listening);
  $("stop").hidden = !listening;
  $("status").textContent = STATUS_TEXT[status] || status;
  $("status").dataset.status = status;
  const problem = $("problem");
  problem.hidden = !(state && (PROBLEMS.has(status)) && state.message);
  problem.textContent = state && state.message ? state.message : "";
  if (status === "busy" && state.retryAt) {
    problem.textContent += ` Trying again in ${Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000))} s.`;
  }
  const session = state && state.session;
  const box = $("verdict-box");
  box.hidden = !session;
  if (session) {
    const overall = $("overall");
    overall.textContent = session.overall === "No Speech" ? "No speech yet" : session.overall;
    overall.className = session.zone || "";
    $("overall-detail").textContent = session.overall === "No Speech"
      ? `${session.chunks} chunk(s) heard, none with enough speech.`
      : `P(fake) ${percent(session.probability)}, ${sureness(session.confidence)} (confidence `
        + `${percent(session.confidence)}); ${session.speech_duration.toFixed(1)} s of speech over `
        + `${session.chunks} chunk(s)${session.zone === "uncertain" ? "; leaning fake" : ""}.`;
    $("speakers").replaceChildren(...(session.speakers || []).map(speakerItem));
  }
  const latency = state && state.timing && state.timing.badgeAt
    ? ` · last chunk ${state.timing.badgeAt - state.timing.sentAt} ms from sending to the badge` : "";
  $("server").textContent = state && state.serverUrl ? `Server: ${state.serverUrl}${latency}` : "";
}

async function activeTabId() {
  const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
  return tab ? tab.id : null;
}

$("listen").addEventListener("click", async () => {
  const tabId = await activeTabId();
  if (tabId === null) return;
  render({ status: "starting" });
  await chrome.runtime.sendMessage({ target: "background", type: "start", tabId });
});
$("stop").addEventListener("click", () => chrome.runtime.sendMessage({ target: "background", type: "stop" }));

chrome.storage.session.get("state").then(({ state }) => render(state));
chrome.storage.onChanged.addListener((changes, area) => {
  if (area === "session" && changes.state) render(changes.state.newValue);
});

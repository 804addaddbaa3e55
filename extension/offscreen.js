// The offscreen document: the captured tab's audio → StreamAnalyser (recorder.js) → states to the
// service worker. Capturing a tab mutes it; the stream is played back through an AudioContext so the
// user still hears the tab.

import { StreamAnalyser } from "./recorder.js";

let current = null; // { stream, audio, analyser }

function report(tabId, state) {
  const monitor = current && current.audio ? current.audio.state : null;
  chrome.runtime.sendMessage({ target: "background", type: "state", tabId, state: { ...state, monitor } })
    .catch(() => {}); // the service worker is stopping us
}

async function startTab({ streamId, tabId, settings }) {
  await stop();
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { mandatory: { chromeMediaSource: "tab", chromeMediaSourceId: streamId } },
    video: false,
  });
  const audio = new AudioContext();
  audio.createMediaStreamSource(stream).connect(audio.destination); // keep the tab audible
  const analyser = new StreamAnalyser(stream, settings, (state) => report(tabId, state));
  current = { stream, audio, analyser };
  for (const track of stream.getAudioTracks()) {
    track.addEventListener("ended", () => stop()); // the tab went away
  }
  await analyser.start();
}

async function stop() {
  if (!current) return;
  const { stream, audio, analyser } = current;
  await analyser.stop();
  current = null;
  stream.getTracks().forEach((track) => track.stop());
  await audio.close().catch(() => {});
}

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (message.target !== "offscreen") return false;
  const work = message.type === "start-tab" ? startTab(message) : message.type === "stop" ? stop() : null;
  if (!work) return false;
  work.then(() => sendResponse({ ok: true }), (error) => sendResponse({ ok: false, error: String(error.message || error) }));
  return true;
});

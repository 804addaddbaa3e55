// The service worker: starts and stops the capture of one tab, and shows the rolling verdict.
//
// start(tabId): chrome.tabCapture.getMediaStreamId for the tab (allowed once the user has invoked the
// extension on it: the toolbar button's popup), then the offscreen document (offscreen.html) turns the
// id into a MediaStream and runs the recorder (recorder.js). Each state the offscreen document reports
// sets the toolbar badge (state.js badgeFor) and is kept in chrome.storage.session as "state", with the
// time the badge was set ("timing.badgeAt"), for the popup. Offscreen documents have no chrome.action
// or chrome.storage, hence the messages.

import { badgeFor, loadSettings, STATUS_TEXT } from "./state.js";

const OFFSCREEN_URL = "offscreen.html";
const TIMINGS_KEPT = 50;

async function offscreenOpen() {
  const contexts = await chrome.runtime.getContexts({ contextTypes: ["OFFSCREEN_DOCUMENT"] });
  return contexts.length > 0;
}

async function ensureOffscreen() {
  if (await offscreenOpen()) return;
  await chrome.offscreen.createDocument({
    url: OFFSCREEN_URL,
    reasons: ["USER_MEDIA"],
    justification: "Records the tab's audio in 4-second chunks for the Sound Sentry server and keeps it audible.",
  });
}

function toOffscreen(message) {
  return chrome.runtime.sendMessage({ ...message, target: "offscreen" });
}

/** Show ``state`` on the badge (of its tab, when it has one), then keep it for the popup. */
async function show(state) {
  const badge = badgeFor(state);
  const tabId = state.tabId ?? undefined;
  await Promise.all([
    chrome.action.setBadgeText({ text: badge.text, tabId }),
    chrome.action.setBadgeBackgroundColor({ color: badge.color, tabId }),
    chrome.action.setTitle({ title: badge.title, tabId }),
  ]);
  const badgeAt = Date.now();
  const kept = { ...state, badge: badge.text };
  const changes = { state: kept };
  if (state.timing && state.timing.sentAt && !state.timing.badgeAt) {
    kept.timing = { ...state.timing, badgeAt };
    const { timings = [] } = await chrome.storage.session.get("timings");
    changes.timings = [...timings, kept.timing].slice(-TIMINGS_KEPT);
  }
  await chrome.storage.session.set(changes);
  return kept;
}

/** Listen to ``tabId``: one tab at a time, so another capture in progress is stopped first. */
export async function start(tabId) {
  await stop();
  const settings = await loadSettings();
  await show({ status: "starting", tabId, serverUrl: settings.serverUrl, message: null, session: null });
  try {
    const streamId = await chrome.tabCapture.getMediaStreamId({ targetTabId: tabId });
    await ensureOffscreen();
    const answer = await toOffscreen({ type: "start-tab", streamId, tabId, settings });
    if (!answer || !answer.ok) throw new Error(answer ? answer.error : "the offscreen document did not answer");
  } catch (error) {
    await show({ status: "failed", tabId, serverUrl: settings.serverUrl, session: null,
      message: `Could not capture this tab: ${error.message || error}` });
    return false;
  }
  return true;
}

/** Stop listening: the offscreen document closes the session, then goes. */
export async function stop() {
  if (await offscreenOpen()) {
    try {
      await toOffscreen({ type: "stop" });
    } finally {
      await chrome.offscreen.closeDocument().catch(() => {});
    }
  }
  const { state } = await chrome.storage.session.get("state");
  if (state && state.status !== "stopped" && state.status !== "idle") {
    await show({ ...state, status: "stopped", message: STATUS_TEXT.stopped, timing: null });
  }
}

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (message.target !== "background") return false;
  if (message.type === "state") {
    show({ ...message.state, tabId: message.tabId ?? null }).then(() => sendResponse({ ok: true }));
    return true;
  }
  if (message.type === "start") {
    start(message.tabId).then((ok) => sendResponse({ ok }));
    return true;
  }
  if (message.type === "stop") {
    stop().then(() => sendResponse({ ok: true }));
    return true;
  }
  return false;
});

chrome.tabs.onRemoved.addListener(async (tabId) => {
  const { state } = await chrome.storage.session.get("state");
  if (state && state.tabId === tabId) await stop();
});

// for the console and for tests/test_extension.py: the same functions the popup's buttons reach by message
globalThis.soundsentry = { start, stop, show };

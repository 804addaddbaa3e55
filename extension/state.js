// What the extension shows, shared by the service worker (badge), the popup and the options page.
//
// The offscreen document's StreamAnalyser (recorder.js) reports a state object; the service worker
// keeps the latest in chrome.storage.session ("state") and sets the badge from it (badgeFor); the
// popup renders it (describeStatus). Settings live in chrome.storage.local.

export const DEFAULT_SETTINGS = Object.freeze({
  serverUrl: "http://127.0.0.1:8000",
  apiKey: "",
  // off: one speaker per chunk, linked across chunks by the server's session (S1, S2, ...): the chunk
  // costs about 55 ms on the server; on, each chunk is diarized too (130-240 ms on a busy 2-core machine)
  useDiarization: false,
});

/** The analyser's statuses, in the words the popup uses. */
export const STATUS_TEXT = Object.freeze({
  idle: "Not listening. Open a tab that plays speech and press Listen.",
  starting: "Starting the capture…",
  connecting: "Connecting to the server…",
  listening: "Listening: the first verdict comes after the first 4-second chunk.",
  verdict: "Listening.",
  "no-speech": "No speech heard yet in this tab's audio.",
  unreachable: "The server cannot be reached: is it running, and is its address right in the options?",
  busy: "The server is busy: chunks are skipped until it has room again.",
  unauthorized: "The server needs an API key (or refused this one): set it in the options.",
  error: "The server refused a chunk.",
  failed: "Could not capture this tab.",
  stopped: "Stopped.",
});

export const PROBLEMS = new Set(["unreachable", "busy", "unauthorized", "error", "failed"]);
/** Statuses in which nothing is being recorded. */
export const NOT_LISTENING = new Set(["idle", "stopped", "failed"]);

const COLOURS = {
  real: "#1e7d32",
  uncertain: "#b26a00",
  fake: "#c62828",
  unknown: "#5f6368",
  problem: "#e37400",
};

/** The toolbar badge for a state: {text, color, title}. "REAL"/"FAKE" from the session's rolling verdict,
 *  "?" while there is none (no speech yet), "!" when the server cannot answer, "" when not listening. */
export function badgeFor(state) {
  if (!state || state.status === "idle" || state.status === "stopped") {
    return { text: "", color: COLOURS.unknown, title: "Sound Sentry: not listening" };
  }
  if (PROBLEMS.has(state.status)) {
    return { text: "!", color: COLOURS.problem, title: `Sound Sentry: ${state.message || STATUS_TEXT[state.status]}` };
  }
  const session = state.session;
  if (!session || session.overall === "No Speech") {
    return { text: "?", color: COLOURS.unknown, title: `Sound Sentry: ${STATUS_TEXT[state.status] || "listening"}` };
  }
  const fake = session.overall === "Fake";
  const colour = fake ? COLOURS.fake : (session.zone === "uncertain" ? COLOURS.uncertain : COLOURS.real);
  return {
    text: fake ? "FAKE" : "REAL",
    color: colour,
    title: `Sound Sentry: ${session.overall}${session.zone ? ` (${session.zone})` : ""}, `
      + `P(fake) ${Math.round(session.probability * 100)} %, ${session.chunks} chunk(s)`,
  };
}

/** Settings with their defaults filled in. */
export async function loadSettings() {
  const stored = await chrome.storage.local.get(Object.keys(DEFAULT_SETTINGS));
  return { ...DEFAULT_SETTINGS, ...stored };
}

/** The origin (scheme, host and port) of a server URL, or null when it is not an http(s) URL. */
export function originOf(serverUrl) {
  try {
    const url = new URL(serverUrl);
    return url.protocol === "http:" || url.protocol === "https:" ? url.origin : null;
  } catch {
    return null;
  }
}

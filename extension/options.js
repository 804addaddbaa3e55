// Options: kept in chrome.storage.local (state.js DEFAULT_SETTINGS). A server other than 127.0.0.1 or
// localhost (the manifest's host_permissions) needs the user's permission to be reached, asked on save.

import { DEFAULT_SETTINGS, loadSettings, originOf } from "./state.js";

const $ = (id) => document.getElementById(id);

function said(text, bad = false) {
  $("saved").textContent = text;
  $("saved").className = bad ? "bad" : "";
}

async function fill() {
  const settings = await loadSettings();
  $("server-url").value = settings.serverUrl;
  $("api-key").value = settings.apiKey;
  $("use-diarization").checked = settings.useDiarization;
}

$("options").addEventListener("submit", async (event) => {
  event.preventDefault();
  const serverUrl = $("server-url").value.trim().replace(/\/+$/, "") || DEFAULT_SETTINGS.serverUrl;
  const origin = originOf(serverUrl);
  if (!origin) {
    said("The server URL must start with http:// or https://.", true);
    return;
  }
  const origins = [`${origin}/*`];
  if (!(await chrome.permissions.contains({ origins }))) {
    const granted = await chrome.permissions.request({ origins });
    if (!granted) {
      said(`Not saved: the extension may not reach ${origin} without your permission.`, true);
      return;
    }
  }
  await chrome.storage.local.set({
    serverUrl, apiKey: $("api-key").value.trim(), useDiarization: $("use-diarization").checked,
  });
  said("Saved. It applies the next time you press Listen.");
});

fill();

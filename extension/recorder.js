// The recorder: a MediaStream in, rolling verdicts out. Used by the offscreen document (offscreen.js)
// on the tab's captured audio; it needs nothing but the stream, fetch and MediaRecorder, so the same
// code runs on any stream (tests/test_extension.py drives it on an <audio> element's captureStream()
// where tab capture cannot run).
//
//   ChunkRecorder   the stream as standalone 4 s WEBM/Opus files: a new MediaRecorder every
//                   CHUNK_DURATION_MS (stopping one and starting the next), so each chunk has its own
//                   header and decodes alone.
//   SessionClient   the server's sessions API: POST /sessions, POST /sessions/{id}/chunks (multipart
//                   "audio", file name audio-chunk.webm, X-API-Key when set), DELETE /sessions/{id}; a
//                   404 session_not_found (expired) opens a new session and sends the chunk again.
//   StreamAnalyser  both together, and the state the extension shows: what the session says, or why it
//                   says nothing (no speech, server unreachable, busy: backs off by Retry-After, ...).

export const CHUNK_DURATION_MS = 4000;
export const CHUNK_MIME_TYPE = "audio/webm;codecs=opus";
export const CHUNK_FILE_NAME = "audio-chunk.webm";
export const CHUNK_BITS_PER_SECOND = 32000; // what the models were measured on (README: browser chunks)
const DEFAULT_BACKOFF_S = 5; // a 503 without Retry-After

/** Records ``stream`` as a sequence of standalone WEBM files of ``durationMs`` each. */
export class ChunkRecorder {
  constructor(stream, onChunk, { durationMs = CHUNK_DURATION_MS, mimeType = CHUNK_MIME_TYPE,
    audioBitsPerSecond = CHUNK_BITS_PER_SECOND } = {}) {
    if (!MediaRecorder.isTypeSupported(mimeType)) throw new Error(`this browser cannot record ${mimeType}`);
    this.stream = stream;
    this.onChunk = onChunk;
    this.options = { mimeType, audioBitsPerSecond };
    this.durationMs = durationMs;
    this.running = false;
    this.index = 0;
    this.current = null;
    this.timer = null;
  }

  start() {
    this.running = true;
    this.next();
  }

  /** Start the next recorder; stop it after durationMs, when the one after it has already started. */
  next() {
    if (!this.running) return;
    const recorder = new MediaRecorder(this.stream, this.options);
    const parts = [];
    const index = this.index++;
    const startedAt = Date.now();
    recorder.ondataavailable = (event) => {
      if (event.data && event.data.size) parts.push(event.data);
    };
    recorder.onstop = () => {
      const blob = new Blob(parts, { type: "audio/webm" });
      if (blob.size) this.onChunk(blob, { index, startedAt, durationMs: Date.now() - startedAt });
    };
    recorder.start();
    this.current = recorder;
    this.timer = setTimeout(() => {
      this.next();
      recorder.stop();
    }, this.durationMs);
  }

  /** Stop recording; the chunk in progress is delivered too (StreamAnalyser drops it). */
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    if (this.current && this.current.state !== "inactive") this.current.stop();
    this.current = null;
  }
}

/** An answer of the server that is not a success: its JSON error and Retry-After. */
export class ServerError extends Error {
  constructor(status, body, retryAfterS) {
    super((body && body.message) || `the server answered HTTP ${status}`);
    this.status = status;
    this.errorCode = (body && body.error_code) || null;
    this.requestId = (body && body.request_id) || null;
    this.retryAfterS = retryAfterS;
  }
}

/** fetch failed: nothing answered at the server's address (or the extension may not reach it). */
export class UnreachableError extends Error {}

export class SessionClient {
  constructor({ serverUrl, apiKey = "", useDiarization = false }) {
    this.base = serverUrl.replace(/\/+$/, "");
    this.apiKey = apiKey;
    this.useDiarization = useDiarization;
    this.sessionId = null;
  }

  async request(method, path, body) {
    const headers = {};
    if (this.apiKey) headers["X-API-Key"] = this.apiKey;
    let response;
    try {
      response = await fetch(this.base + path, { method, headers, body });
    } catch (error) {
      throw new UnreachableError(`${this.base} cannot be reached (${error.message || error})`);
    }
    if (response.status === 204) return null;
    let answer = null;
    try {
      answer = await response.json();
    } catch {
      answer = null;
    }
    if (!response.ok) {
      const retryAfter = Number.parseFloat(response.headers.get("Retry-After"));
      throw new ServerError(response.status, answer, Number.isFinite(retryAfter) ? retryAfter : null);
    }
    return answer;
  }

  async open() {
    const created = await this.request("POST", "/sessions");
    this.sessionId = created.session_id;
    return created;
  }

  /** Send one chunk; a session the server no longer knows (expired, restarted) is replaced once. */
  async send(blob) {
    if (!this.sessionId) await this.open();
    try {
      return await this.post(blob);
    } catch (error) {
      if (!(error instanceof ServerError) || error.errorCode !== "session_not_found") throw error;
      await this.open();
      return await this.post(blob);
    }
  }

  post(blob) {
    const form = new FormData();
    form.append("audio", blob, CHUNK_FILE_NAME);
    if (this.useDiarization) form.append("use_diarization", "true");
    return this.request("POST", `/sessions/${encodeURIComponent(this.sessionId)}/chunks`, form);
  }

  async close() {
    const sessionId = this.sessionId;
    this.sessionId = null;
    if (!sessionId) return;
    try {
      await this.request("DELETE", `/sessions/${encodeURIComponent(sessionId)}`);
    } catch {
      // gone already, or the server is away: it expires on its own
    }
  }
}

/** The stream's chunks to the server, one at a time, and the state to show after each answer. */
export class StreamAnalyser {
  constructor(stream, settings, onState, { durationMs = CHUNK_DURATION_MS } = {}) {
    this.client = new SessionClient(settings);
    this.recorder = new ChunkRecorder(stream, (blob, info) => this.onChunk(blob, info), { durationMs });
    this.onState = onState;
    this.pending = null; // the newest chunk waiting while one is being sent (older ones are dropped)
    this.sending = false;
    this.idle = null; // resolves stop() once the chunk being sent is answered
    this.stopped = false;
    this.backoffUntil = 0;
    this.state = {
      status: "connecting", message: null, serverUrl: this.client.base, sessionId: null, session: null,
      lastChunk: null, chunksSent: 0, chunksDropped: 0, retryAt: null, timing: null, updatedAt: Date.now(),
    };
  }

  emit(changes) {
    this.state = { ...this.state, ...changes, updatedAt: Date.now() };
    this.onState(this.state);
  }

  /** Open a session and start recording; a server that cannot be reached now is tried again with each chunk. */
  async start() {
    this.emit({ status: "connecting" });
    this.recorder.start();
    try {
      await this.client.open();
      this.emit({ status: "listening", sessionId: this.client.sessionId, message: null });
    } catch (error) {
      this.fail(error);
    }
  }

  onChunk(blob, info) {
    if (this.stopped) return;
    if (Date.now() < this.backoffUntil) {
      this.emit({ chunksDropped: this.state.chunksDropped + 1 });
      return;
    }
    if (this.sending) {
      if (this.pending) this.emit({ chunksDropped: this.state.chunksDropped + 1 });
      this.pending = { blob, info };
      return;
    }
    this.send(blob, info);
  }

  async send(blob, info) {
    this.sending = true;
    const sentAt = Date.now();
    try {
      const answer = await this.client.send(blob);
      const receivedAt = Date.now();
      const session = answer.session;
      const chunk = answer.chunk;
      this.emit({
        status: session.overall === "No Speech" ? "no-speech" : "verdict",
        message: null,
        retryAt: null,
        sessionId: answer.session_id,
        session,
        lastChunk: {
          index: answer.chunk_index, recorded: info.index, bytes: blob.size, overall: chunk.overall,
          zone: chunk.zone ?? null, probability: chunk.mean_probability,
          speechDuration: chunk.duration_config ? chunk.duration_config.speech_duration : 0,
          processingMs: chunk.processing_time_ms, message: chunk.message ?? null,
        },
        chunksSent: this.state.chunksSent + 1,
        timing: { sentAt, receivedAt, serverMs: chunk.processing_time_ms },
      });
    } catch (error) {
      this.fail(error);
    } finally {
      this.sending = false;
      const next = this.pending;
      this.pending = null;
      if (next && Date.now() >= this.backoffUntil) this.send(next.blob, next.info);
      else if (this.idle) this.idle();
    }
  }

  /** Show why there is no new verdict; back off while the server asks for it. */
  fail(error) {
    if (error instanceof UnreachableError) {
      this.emit({ status: "unreachable", message: error.message });
      return;
    }
    if (!(error instanceof ServerError)) {
      this.emit({ status: "error", message: String(error.message || error) });
      return;
    }
    const detail = `${error.message} (HTTP ${error.status}${error.errorCode ? ` ${error.errorCode}` : ""})`;
    if (error.status === 503 || error.status === 429) {
      const waitS = error.retryAfterS ?? DEFAULT_BACKOFF_S;
      this.backoffUntil = Date.now() + waitS * 1000;
      this.emit({ status: "busy", message: detail, retryAt: this.backoffUntil });
    } else if (error.status === 401) {
      this.emit({ status: "unauthorized", message: detail });
    } else {
      this.emit({ status: "error", message: detail });
    }
  }

  /** Stop recording (the unfinished chunk is dropped), let the chunk being sent finish, close the session. */
  async stop() {
    this.stopped = true;
    this.pending = null;
    this.recorder.stop();
    if (this.sending) await new Promise((resolve) => { this.idle = resolve; });
    await this.client.close();
    this.emit({ status: "stopped", sessionId: null });
  }
}

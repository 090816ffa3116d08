// The app's JSON API (docs/app-api.md): fetch with the session cookie, the CSRF header on every
// state-changing call, errors turned into ApiError, and server-sent events read from a POST.

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let csrfToken = null;
let onSignedOut = () => {};

/** Remembers the session's CSRF token (from login, signup or /api/me). */
export function setCsrfToken(token) {
  csrfToken = token;
}

/** Called when any call answers 401, so the app can show the sign-in page. */
export function whenSignedOut(handler) {
  onSignedOut = handler;
}

function headersFor(method, body, extra) {
  const headers = { Accept: 'application/json', ...extra };
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  if (body !== undefined && !(body instanceof Blob) && !headers['Content-Type']) {
    headers['Content-Type'] = 'application/json';
  }
  return headers;
}

async function send(method, path, body, { headers = {}, signal } = {}) {
  const response = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: headersFor(method, body, headers),
    body: body === undefined ? undefined : (body instanceof Blob ? body : JSON.stringify(body)),
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  if (response.status === 429) {
    const wait = response.headers.get('Retry-After');
    if (wait) message += ` (try again in ${wait} s)`;
  }
  const error = new ApiError(response.status, message, code);
  if (response.status === 401 && !response.url.includes('/api/auth/')) onSignedOut(error);
  return error;
}

/** A JSON call; resolves with the parsed body, or null for 204. */
export async function call(method, path, body, options) {
  const response = await send(method, path, body, options);
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  return type.includes('json') ? response.json() : response;
}

export const get = (path) => call('GET', path);
export const post = (path, body, options) => call('POST', path, body, options);
export const put = (path, body, options) => call('PUT', path, body, options);
export const patch = (path, body) => call('PATCH', path, body);
export const del = (path) => call('DELETE', path);

/**
 * POSTs `body` and hands each server-sent event's JSON to `onEvent` as it arrives. Resolves when
 * the stream ends; `signal` aborts it (the server then stops generating).
 */
export async function stream(path, body, onEvent, signal) {
  const response = await send('POST', path, body, {
    headers: { Accept: 'text/event-stream' },
    signal,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let boundary;
    while ((boundary = /\r\n\r\n|\n\n|\r\r/.exec(buffer))) {
      const block = buffer.slice(0, boundary.index);
      buffer = buffer.slice(boundary.index + boundary[0].length);
      const data = block
        .split(/\r\n|\n|\r/)
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(line.startsWith('data: ') ? 6 : 5))
        .join('\n');
      if (data) onEvent(JSON.parse(data));
    }
  }
}

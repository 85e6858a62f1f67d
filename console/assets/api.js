// api.js talks to calsync's REST API. The bearer token, when the server asks
// for one, lives in sessionStorage only (this tab, this origin) and travels
// in the Authorization header: never in a URL, never in a cookie. With mutual
// TLS the browser presents its client certificate by itself.

const tokenKey = 'calsync.token';

export function token() { return sessionStorage.getItem(tokenKey) || ''; }
export function setToken(t) {
  if (t) sessionStorage.setItem(tokenKey, t); else sessionStorage.removeItem(tokenKey);
}

// ApiError is a failed call: the HTTP status and the API's message.
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const h = { Accept: 'application/json', ...extra };
  const t = token();
  if (t) h.Authorization = 'Bearer ' + t;
  return h;
}

// unauthorized tells the shell to ask for a token.
function unauthorized(message) {
  window.dispatchEvent(new CustomEvent('calsync:unauthorized', { detail: message }));
}

async function fail(resp) {
  let message = resp.statusText, code;
  try {
    const body = await resp.json();
    if (body && body.message) message = body.message;
    code = body && body.code;
  } catch { /* not JSON */ }
  if (resp.status === 401) unauthorized(message);
  return new ApiError(resp.status, message, code);
}

// get fetches a JSON resource; query is an object of parameters (arrays
// repeat the parameter).
export async function get(path, query = {}, signal) {
  const resp = await fetch(path + qs(query), { headers: headers(), signal, credentials: 'same-origin' });
  if (!resp.ok) throw await fail(resp);
  return resp.json();
}

// post sends a JSON body and returns the JSON answer.
export async function post(path, body = {}) {
  const resp = await fetch(path, {
    method: 'POST', headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify(body), credentials: 'same-origin',
  });
  if (!resp.ok) throw await fail(resp);
  return resp.json();
}

export function qs(query) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === '' || v === false) continue;
    for (const item of Array.isArray(v) ? v : [v]) p.append(k, String(item));
  }
  const s = p.toString();
  return s ? '?' + s : '';
}

// watch reads the WatchEvents stream as Server-Sent Events through fetch
// (EventSource cannot send an Authorization header) and calls onEvent with
// {id, event, data} for each event, until the stream ends or signal aborts.
// It resolves when the server ends the stream and rejects on failure.
const maxEventChars = 16 << 20;

export async function watch(query, onEvent, signal) {
  const resp = await fetch('/v1/events:watch' + qs(query), {
    headers: headers({ Accept: 'text/event-stream' }), signal, credentials: 'same-origin', cache: 'no-store',
  });
  if (!resp.ok) throw await fail(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    // A single event is a change of one calendar event: bound what an
    // unterminated one may hold.
    if (buf.length > maxEventChars) throw new Error('stream event too large');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const ev = { id: '', event: 'message', data: '' };
      for (const line of block.split('\n')) {
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'id') ev.id = val;
        else if (field === 'event') ev.event = val;
        else if (field === 'data') ev.data += (ev.data ? '\n' : '') + val;
      }
      onEvent(ev);
    }
  }
}

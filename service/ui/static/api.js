// Calls to the service's public endpoints, with the API key from this tab's session storage.
// Every failure becomes an ApiError whose message is the service's {"error"} text, as sent.

const KEY = "latentserve.apiKey";
// The service's root, from where this file is served (/ui/api.js): right behind a path prefix too.
const BASE = new URL("../", import.meta.url);

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

async function request(method, path, body) {
  const headers = {};
  const key = apiKey.get();
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(new URL(path, BASE), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, `the service could not be reached (${e.message})`);
  }
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const message = payload && typeof payload.error === "string" ? payload.error : text || response.statusText;
    if (response.status === 401) onUnauthorized(message);
    throw new ApiError(response.status, message);
  }
  return payload;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);

// Bytes of the JSON body a request would have: checked against max_body_bytes before sending.
export function bodyBytes(body) {
  return new TextEncoder().encode(JSON.stringify(body)).length;
}

// Fetch wrapper for the REST API: session auth with the CSRF token, JSON in and out, and errors that carry the
// server's {"detail": ...} message so pages can show it instead of failing silently.

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

export async function api(path, { method = "GET", body, raw = false, signal } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", signal };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server could not be reached. Your work is kept; try again.", null);
  }
  if (raw && response.ok) return response;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const detail = (data && typeof data.detail === "string" && data.detail) || statusText(response.status, response.statusText);
    throw new ApiError(response.status, detail, data);
  }
  return data;
}

// Words for an error response without a JSON detail (a proxy's page, a crash before our error handler).
export function statusText(status, fallback = "") {
  if (status >= 500) return `The server hit an error (${status}); it was logged and nothing was saved. Try again, or tell an admin if it persists.`;
  if (status === 413) return "The upload is larger than the server accepts.";
  if (status === 404) return "Not found: it may have been deleted.";
  if (status === 403) return "Your role does not allow this.";
  if (status === 401) return "You are not logged in any more; log in again.";
  return `The request failed (${status}${fallback ? ` ${fallback}` : ""}).`;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function showError(container, message) {
  container.replaceChildren(el("div", { class: "flash error", role: "alert" }, message));
}

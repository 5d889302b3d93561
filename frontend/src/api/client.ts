/**
 * The one HTTP client of the UI: generated from the API's OpenAPI schema (`npm run gen:api`),
 * authenticated by the HttpOnly session cookie. Unsafe requests carry the CSRF token the
 * login (or `/auth/me`) gave; it lives in memory only, never in browser storage.
 */
import createClient, { type Middleware } from "openapi-fetch";
import type { paths } from "./generated/schema";

export type { paths };

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
export const API = "/api/v1";

let csrfToken: string | null = null;
export function setCsrfToken(token: string | null | undefined): void {
  csrfToken = token ?? null;
}
export function getCsrfToken(): string | null {
  return csrfToken;
}

type Listener = (message: string) => void;
const unauthorized = new Set<Listener>();
/** Called when the server says the session is gone (expired, ended elsewhere). */
export function onUnauthorized(listener: Listener): () => void {
  unauthorized.add(listener);
  return () => unauthorized.delete(listener);
}

/** A failed request, with the server's problem details in plain words. */
export class ApiError extends Error {
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly requestId: string | null;
  readonly fieldErrors: { field: string; message: string }[];

  constructor(status: number, body: unknown, requestId: string | null = null) {
    const problem = (body ?? {}) as Record<string, unknown>;
    const title = typeof problem.title === "string" ? problem.title : statusText(status);
    const detail = typeof problem.detail === "string" ? problem.detail : title;
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.requestId = typeof problem.request_id === "string" ? problem.request_id : requestId;
    this.fieldErrors = Array.isArray(problem.errors)
      ? (problem.errors as { field: string; message: string }[])
      : [];
  }
}

function statusText(status: number): string {
  if (status === 0) return "The server could not be reached";
  if (status === 401) return "Not signed in";
  if (status === 403) return "Not permitted";
  if (status === 404) return "Not found";
  if (status === 409) return "Conflict";
  if (status >= 500) return "Server error";
  return `Request failed (${status})`;
}

/** A message for people: what went wrong and, where it helps, what to do. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    const first = error.detail.charAt(0).toUpperCase() + error.detail.slice(1);
    const ref = error.status >= 500 && error.requestId ? ` (reference ${error.requestId})` : "";
    return `${first}${ref}`;
  }
  if (error instanceof TypeError) return "The server could not be reached. Check that ClinVault is running.";
  if (error instanceof Error) return error.message;
  return "Something went wrong.";
}

const auth: Middleware = {
  onRequest({ request }) {
    if (UNSAFE.has(request.method) && csrfToken) request.headers.set("X-CSRF-Token", csrfToken);
    request.headers.set("Accept", request.headers.get("Accept") ?? "application/json");
    return request;
  },
  onResponse({ request, response }) {
    if (response.status === 401 && !new URL(request.url).pathname.endsWith("/auth/login")) {
      void response
        .clone()
        .json()
        .catch(() => ({}))
        .then((body: { detail?: string }) => {
          const message = body?.detail ?? "Your session has ended. Sign in again.";
          unauthorized.forEach((listener) => listener(message));
        });
    }
    return response;
  },
};

export const api = createClient<paths>({
  baseUrl: typeof location !== "undefined" ? location.origin : "http://localhost",
  credentials: "same-origin",
  // Late-bound, so that tests can replace globalThis.fetch.
  fetch: (request: Request) => globalThis.fetch(request),
});
api.use(auth);

/** The data of an openapi-fetch answer, or an ApiError. */
export async function unwrap<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw new ApiError(response.status, error, response.headers.get("X-Request-ID"));
  return data as T;
}

/** A plain request for what the schema does not type (downloads, exports). */
export async function rawFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const method = (init.method ?? "GET").toUpperCase();
  const headers = new Headers(init.headers);
  if (UNSAFE.has(method) && csrfToken) headers.set("X-CSRF-Token", csrfToken);
  const response = await globalThis.fetch(path, { ...init, headers, credentials: "same-origin" });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) unauthorized.forEach((l) => l(body?.detail ?? "Your session has ended."));
    throw new ApiError(response.status, body, response.headers.get("X-Request-ID"));
  }
  return response;
}

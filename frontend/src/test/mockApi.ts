import { vi } from "vitest";

type Handler = (request: Request) => unknown | Promise<unknown>;

/** Replaces fetch: "METHOD /path" → JSON body (or a Response, or a function of the request). */
export function mockApi(routes: Record<string, unknown>) {
  const calls: { method: string; path: string; body: unknown; headers: Headers }[] = [];
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = input instanceof Request ? input : new Request(new URL(String(input), "http://localhost"), init);
    const url = new URL(request.url);
    const key = `${request.method} ${url.pathname}`;
    const text = request.method === "GET" || request.method === "HEAD" ? "" : await request.clone().text();
    calls.push({ method: request.method, path: url.pathname + url.search, body: text ? JSON.parse(text) : undefined, headers: request.headers });
    if (!(key in routes)) return new Response(JSON.stringify({ detail: `no mock for ${key}` }), { status: 404, headers: { "Content-Type": "application/json" } });
    const value = routes[key];
    const result = typeof value === "function" ? await (value as Handler)(request) : value;
    if (result instanceof Response) return result;
    return new Response(JSON.stringify(result), { status: 200, headers: { "Content-Type": "application/json" } });
  });
  vi.stubGlobal("fetch", fetchMock);
  return { calls, fetchMock };
}

export function problem(status: number, detail: string): Response {
  return new Response(JSON.stringify({ title: "x", status, detail }), { status, headers: { "Content-Type": "application/problem+json" } });
}

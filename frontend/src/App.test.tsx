import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, test, vi } from "vitest";
import { App } from "./App";
import { navFor } from "./Shell";
import { loginError } from "./screens/Login";
import { sessionEndedNotice } from "./session";
import { ApiError } from "./api/client";
import { toRequest, defaultName } from "./screens/BackupWizard";
import { mockApi, problem } from "./test/mockApi";

const ADMIN = { id: "u1", username: "admin", full_name: "Ada Admin", role: "SYSTEM_ADMIN" };
const AUDITOR = { id: "u2", username: "otto", full_name: "Otto Auditor", role: "AUDITOR" };
const EMPTY_AUDIT = { total: 0, offset: 0, limit: 50, items: [] };

afterEach(() => {
  vi.unstubAllGlobals();
  history.replaceState(null, "", "/");
});

describe("sign-in", () => {
  test("signs in, shows the user's name and role, and sends the CSRF token on unsafe requests", async () => {
    const user = userEvent.setup();
    const api = mockApi({
      "GET /api/v1/auth/me": problem(401, "authentication required: sign in, or send a bearer token"),
      "POST /api/v1/auth/login": { access_token: "t", token_type: "bearer", csrf_token: "csrf-1", expires_at: "2026-11-27T21:00:00Z", idle_timeout_seconds: 900, user: { ...AUDITOR, is_active: true } },
      "GET /api/v1/audit": EMPTY_AUDIT,
      "POST /api/v1/auth/logout": new Response(null, { status: 204 }),
    });
    render(<App />);
    await user.type(await screen.findByLabelText("Username"), "otto");
    await user.type(screen.getByLabelText("Password"), "a-long-password");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByTestId("user-name")).toHaveTextContent("Otto Auditor");
    expect(screen.getByTestId("user-role")).toHaveTextContent("Auditor");
    expect(await screen.findByRole("heading", { name: "Audit trail" })).toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Sign out" }));
    expect(await screen.findByText("You have signed out.")).toBeInTheDocument();
    const logout = api.calls.find((c) => c.path === "/api/v1/auth/logout");
    expect(logout?.headers.get("X-CSRF-Token")).toBe("csrf-1");
  });

  test("a refused sign-in explains lockout without saying which part was wrong", async () => {
    const user = userEvent.setup();
    mockApi({
      "GET /api/v1/auth/me": problem(401, "not signed in"),
      "POST /api/v1/auth/login": problem(401, "wrong username or password, or the account is locked"),
    });
    render(<App />);
    await user.type(await screen.findByLabelText("Username"), "admin");
    await user.type(screen.getByLabelText("Password"), "nope");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(/Wrong username or password, or the account is locked/);
    expect(screen.getByLabelText("Password")).toHaveValue("");
    expect(screen.getByText(/After 5 failed attempts/)).toBeInTheDocument();
  });

  test("an expired session sends the user back to sign-in with the reason", async () => {
    let expired = false;
    mockApi({
      "GET /api/v1/auth/me": { ...ADMIN, via: "session", csrf_token: "c" },
      "GET /api/v1/audit": () => (expired ? problem(401, "the session has expired (idle timeout): sign in again") : EMPTY_AUDIT),
    });
    history.replaceState(null, "", "/audit");
    const { rerender } = render(<App />);
    expect(await screen.findByRole("heading", { name: "Audit trail" })).toBeInTheDocument();
    expired = true;
    const user = userEvent.setup();
    await user.type(screen.getByLabelText("Action"), "backup.*");
    await user.click(screen.getByRole("button", { name: "Apply filters" }));
    rerender(<App />);
    expect(await screen.findByText(/expired after a period of inactivity/)).toBeInTheDocument();
    expect(screen.getByRole("heading", { name: "Sign in" })).toBeInTheDocument();
  });

  test("messages for lockout and expiry", () => {
    expect(loginError(new ApiError(401, { detail: "the account is locked after repeated failed attempts" }))).toMatch(/locked/);
    expect(sessionEndedNotice("the session has expired (absolute_timeout)")).toMatch(/maximum length/);
  });
});

describe("roles", () => {
  test("an auditor's sidebar has no backup actions", () => {
    const labels = navFor("AUDITOR").map((i) => i.label);
    expect(labels).toEqual(["Backups", "Audit trail"]);
    expect(navFor("SYSTEM_ADMIN").map((i) => i.label)).toContain("Restore");
  });

  test("an auditor who opens an admin page is told it is not permitted", async () => {
    mockApi({ "GET /api/v1/auth/me": { ...AUDITOR, via: "session", csrf_token: "c" } });
    history.replaceState(null, "", "/backups/new");
    render(<App />);
    expect(await screen.findByRole("heading", { name: "Not permitted" })).toBeInTheDocument();
  });
});

describe("backup wizard", () => {
  test("builds the create request from the form", () => {
    expect(toRequest({ type: "files", scope: "study", scopeIds: " STU-0001 , ", name: " n ", description: "", compression: "gzip", level: 9 })).toEqual({
      type: "files",
      scope: "study",
      scope_ids: ["STU-0001"],
      name: "n",
      description: undefined,
      compression: "gzip",
      level: 9,
    });
    expect(toRequest({ type: "full", scope: "study", scopeIds: "X", name: "", description: "d", compression: "zstd", level: 3 }).scope).toBe("all");
    expect(defaultName("full", new Date("2026-11-27T03:15:00Z"))).toBe("full-20261127-031500");
  });

  test("walks type, options, review and shows live progress to completion", async () => {
    const user = userEvent.setup();
    const job = { id: "j1", kind: "backup.create", status: "completed", params: { type: "database" }, result: { backup_id: "b1" }, error: null, stage: "done", percent: 100, bytes_done: 10, bytes_total: 10, eta_seconds: null, target_type: "backup", target_id: "b1", created_by: "Ada Admin", created_at: "2026-11-27T03:15:00Z", started_at: "2026-11-27T03:15:00Z", finished_at: "2026-11-27T03:15:04Z", heartbeat_at: null, cancel_requested: false, log: [{ seq: 1, at: "2026-11-27T03:15:00Z", level: "info", message: "dumping the database" }] };
    const api = mockApi({
      "GET /api/v1/auth/me": { ...ADMIN, via: "session", csrf_token: "c" },
      "GET /api/v1/backup/stats": { total_backups: 0, by_status: {}, by_type: {}, deleted_backups: 0, storage_used_bytes: 0, original_bytes: 0, saved_by_compression_bytes: 0, compression_ratio: null, last_backup: null, next_scheduled: null, usage_over_time: [] },
      "GET /api/v1/jobs": { items: [], total: 0, page: 1, page_size: 1 },
      "GET /api/v1/backup/list": { items: [], total: 0, page: 1, page_size: 1, pages: 0 },
      "POST /api/v1/backup/create": { job_id: "j1", kind: "backup.create", status: "pending", links: {} },
      "GET /api/v1/jobs/j1": job,
    });
    history.replaceState(null, "", "/backups/new");
    render(<App />);
    await user.click(await screen.findByLabelText(/Database only/));
    await user.click(screen.getByRole("button", { name: "Next" }));
    expect((screen.getByLabelText("Name") as HTMLInputElement).value).toMatch(/^database-\d{8}-\d{6}$/);
    await user.click(screen.getByRole("button", { name: "Next" }));
    expect(await screen.findByText("No earlier backup of this type to estimate from")).toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Start backup" }));
    expect(await screen.findByText("Completed.")).toBeInTheDocument();
    expect(screen.getByRole("progressbar", { name: /progress/ })).toHaveAttribute("aria-valuenow", "100");
    expect(screen.getByText("dumping the database")).toBeInTheDocument();
    await waitFor(() => expect(api.calls.some((c) => c.method === "POST" && c.path === "/api/v1/backup/create")).toBe(true));
    const create = api.calls.find((c) => c.path === "/api/v1/backup/create");
    expect(create?.body).toMatchObject({ type: "database", scope: "all", compression: "zstd", level: 3 });
    expect(create?.headers.get("X-CSRF-Token")).toBe("c");
  });
});

describe("schedule dialog", () => {
  test("shows the retention dry run of the saved rules: what goes and why each backup stays", async () => {
    const user = userEvent.setup();
    const schedule = { id: "s1", name: "nightly", backup_type: "full", scope: "all", scope_ids: [], is_active: true, cron_expression: "0 2 * * *", timezone: "UTC", retention_days: 30, keep_rules: { keep_last: 2 }, compression: "zstd", compression_level: null, last_run_at: null, next_run_at: "2026-11-28T02:00:00Z", last_status: null, created_by: "Ada Admin", created_at: "2026-11-01T00:00:00Z", updated_at: "2026-11-01T00:00:00Z" };
    const decision = (id: string, name: string, action: string, reasons: string[]) => ({ backup_id: id, name, type: "full", created_at: "2026-10-01T02:00:00Z", group: "schedule:nightly", action, reasons });
    const api = mockApi({
      "GET /api/v1/auth/me": { ...ADMIN, via: "session", csrf_token: "c" },
      "GET /api/v1/jobs": { items: [], total: 0, page: 1, page_size: 1 },
      "GET /api/v1/backup/list": { items: [], total: 0, page: 1, page_size: 1, pages: 0 },
      "GET /api/v1/backup/schedules": [schedule],
      "GET /api/v1/backup/schedules/preview": { cron: "0 2 * * *", timezone: "UTC", runs: [] },
      "POST /api/v1/retention/run": {
        dry_run: true,
        ran_at: "2026-11-27T10:00:00Z",
        schedule_id: "s1",
        deleted: ["00000000-0000-0000-0000-000000000002"],
        kept: 1,
        errors: [],
        decisions: [
          decision("00000000-0000-0000-0000-000000000001", "full-recent", "keep", ["keep_last 2"]),
          decision("00000000-0000-0000-0000-000000000002", "full-old", "delete", ["older than 30 days and no rule keeps it"]),
        ],
      },
    });
    history.replaceState(null, "", "/schedules");
    render(<App />);
    await user.click(await screen.findByRole("button", { name: "Edit nightly" }));
    await user.click(await screen.findByRole("button", { name: /Dry run/ }));
    expect(await screen.findByText(/1 backup\(s\) would be deleted, 1 kept/)).toBeInTheDocument();
    expect(screen.getByText(/full-old/)).toHaveTextContent("older than 30 days and no rule keeps it");
    expect(screen.getByText(/full-recent/)).toHaveTextContent("keep_last 2");
    const call = api.calls.find((c) => c.path === "/api/v1/retention/run");
    expect(call?.body).toEqual({ dry_run: true, schedule_id: "s1" });
    expect(call?.headers.get("X-CSRF-Token")).toBe("c");
  });
});

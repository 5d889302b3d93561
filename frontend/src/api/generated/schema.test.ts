// The generated client types must be exactly what openapi-typescript makes of openapi.json:
// a stale or hand-edited schema.d.ts fails here (regenerate with `npm run gen:api`).
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import openapiTS, { astToString } from "openapi-typescript";
import { expect, test } from "vitest";

const root = resolve(__dirname, "../../..");

test("generated types match openapi.json", async () => {
  const schema = JSON.parse(readFileSync(resolve(root, "openapi.json"), "utf8"));
  const fresh = astToString(await openapiTS(schema));
  const committed = readFileSync(resolve(root, "src/api/generated/schema.d.ts"), "utf8");
  const body = (text: string) => text.slice(text.indexOf("export interface paths"));
  expect(body(committed).trim()).toBe(body(fresh).trim());
}, 30_000);

test("every path the UI calls is in the schema", () => {
  const schema = JSON.parse(readFileSync(resolve(root, "openapi.json"), "utf8"));
  const used = [
    "/api/v1/auth/login",
    "/api/v1/auth/logout",
    "/api/v1/auth/me",
    "/api/v1/backup/list",
    "/api/v1/backup/stats",
    "/api/v1/backup/create",
    "/api/v1/backup/{backup_id}",
    "/api/v1/backup/{backup_id}/download",
    "/api/v1/backup/{backup_id}/verify",
    "/api/v1/restore/preview",
    "/api/v1/restore/validate",
    "/api/v1/restore/execute",
    "/api/v1/restore/history",
    "/api/v1/jobs",
    "/api/v1/jobs/{job_id}",
    "/api/v1/jobs/{job_id}/events",
    "/api/v1/jobs/{job_id}/cancel",
    "/api/v1/audit",
    "/api/v1/audit/verify",
    "/api/v1/audit/export",
    "/api/v1/backup/schedules",
    "/api/v1/backup/schedules/preview",
    "/api/v1/backup/schedules/{schedule_id}",
    "/api/v1/backup/schedules/{schedule_id}/toggle",
  ];
  expect(used.filter((p) => !(p in schema.paths))).toEqual([]);
});

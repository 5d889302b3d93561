import { describe, expect, test } from "vitest";
import { formatAge, formatBytes, formatDuration, formatTime, zoneLabel } from "./format";
import { describeCron } from "./cron";
import { matchPath } from "./router";

describe("format", () => {
  test("sizes are human-readable", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KB");
    expect(formatBytes(176160768)).toBe("168 MB");
    expect(formatBytes(null)).toBe("—");
  });

  test("times always name their zone", () => {
    expect(formatTime("2026-11-27T15:04:05Z")).toBe("2026-11-27 15:04 UTC");
    expect(formatTime("2026-11-27T15:04:05Z", "UTC", true)).toBe("2026-11-27 15:04:05 UTC");
    expect(formatTime("2026-11-27T15:04:05Z", "Europe/Berlin")).toMatch(/^2026-11-27 16:04 (CET|GMT\+1)$/);
    expect(formatTime("2026-07-01T00:00:00+00:00", "America/New_York")).toMatch(/^2026-06-30 20:00 (EDT|GMT-4)$/);
    expect(formatTime(null)).toBe("—");
    expect(zoneLabel("UTC")).toBe("UTC");
  });

  test("ages and durations read naturally", () => {
    const now = new Date("2026-11-27T15:00:00Z");
    expect(formatAge("2026-11-27T14:55:00Z", now)).toBe("5 minutes ago");
    expect(formatAge("2026-11-27T18:00:00Z", now)).toBe("in 3 hours");
    expect(formatAge("2026-11-27T14:59:50Z", now)).toBe("just now");
    expect(formatDuration(21)).toBe("21 s");
    expect(formatDuration(3725)).toBe("1 h 2 min");
  });

  test("cron expressions are described, invalid ones refused", () => {
    expect(describeCron("0 2 * * *")).toBe("At 02:00");
    expect(describeCron("0 22 * * 1-5")).toBe("At 22:00, Monday through Friday");
    expect(describeCron("@daily")).toBe("At 00:00");
    expect(describeCron("not cron")).toBeNull();
    expect(describeCron("0 2 * *")).toBeNull();
  });

  test("routes match with parameters", () => {
    expect(matchPath("/backups/:id", "/backups/abc")).toEqual({ id: "abc" });
    expect(matchPath("/backups/:id", "/backups")).toBeNull();
    expect(matchPath("/backups/new", "/backups/new")).toEqual({});
  });
});

/** The cron builder's presets and its human-readable description. */
import cronstrue from "cronstrue";

export const CRON_PRESETS: { label: string; expression: string }[] = [
  { label: "Every day at 02:00", expression: "0 2 * * *" },
  { label: "Every 6 hours", expression: "0 */6 * * *" },
  { label: "Every hour", expression: "0 * * * *" },
  { label: "Weekdays at 22:00", expression: "0 22 * * 1-5" },
  { label: "Every Sunday at 03:00", expression: "0 3 * * 0" },
  { label: "First day of every month at 01:00", expression: "0 1 1 * *" },
];

const MACROS: Record<string, string> = {
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
  "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@hourly": "0 * * * *",
};

/** "At 02:00, Monday through Friday", or null when the expression is not valid. */
export function describeCron(expression: string): string | null {
  const text = expression.trim();
  const expanded = MACROS[text.toLowerCase()] ?? text;
  if (expanded.split(/\s+/).length !== 5) return null;
  try {
    return cronstrue.toString(expanded, { use24HourTimeFormat: true, throwExceptionOnParseError: true, verbose: false });
  } catch {
    return null;
  }
}

export function timeZones(): string[] {
  const intl = Intl as unknown as { supportedValuesOf?: (key: string) => string[] };
  const zones = intl.supportedValuesOf?.("timeZone") ?? [];
  return ["UTC", ...zones.filter((z) => z !== "UTC")];
}

/** A readable view of free-form JSON (metadata, previews): scalars as rows, small objects as
 * nested lists, anything larger folded away as formatted JSON. */
import type { ReactNode } from "react";
import { humanize } from "../lib/format";

function isScalar(v: unknown): v is string | number | boolean | null {
  return v === null || ["string", "number", "boolean"].includes(typeof v);
}

function scalar(v: string | number | boolean | null): ReactNode {
  if (v === null) return <span className="muted">—</span>;
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "number") return v.toLocaleString("en-US");
  return v;
}

export function JsonView({ value, depth = 0 }: { value: unknown; depth?: number }): ReactNode {
  if (isScalar(value)) return scalar(value);
  if (Array.isArray(value)) {
    if (value.length === 0) return <span className="muted">none</span>;
    if (value.every(isScalar)) return value.map((v) => String(v)).join(", ");
    if (depth >= 2 || value.length > 20) return <Folded value={value} label={`${value.length} items`} />;
    return (
      <ol className="json-list">
        {value.map((v, i) => (
          <li key={i}>
            <JsonView value={v} depth={depth + 1} />
          </li>
        ))}
      </ol>
    );
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) return <span className="muted">none</span>;
  if (depth >= 2 || entries.length > 40) return <Folded value={value} label={`${entries.length} entries`} />;
  return (
    <dl className="kv json">
      {entries.map(([k, v]) => (
        <div key={k} className="kv-row">
          <dt>{humanize(k)}</dt>
          <dd>
            <JsonView value={v} depth={depth + 1} />
          </dd>
        </div>
      ))}
    </dl>
  );
}

function Folded({ value, label }: { value: unknown; label: string }) {
  return (
    <details>
      <summary>{label}</summary>
      <pre className="json-pre">{JSON.stringify(value, null, 2)}</pre>
    </details>
  );
}

/** Small building blocks: status badges, states (loading, empty, error), cards, progress. */
import type { ReactNode } from "react";
import { describeError } from "../api/client";
import { formatAge, formatTime } from "../lib/format";
import { useZone } from "../prefs";

type Tone = "ok" | "bad" | "warn" | "info" | "muted";

const STATUS: Record<string, { tone: Tone; label: string; icon: string }> = {
  completed: { tone: "ok", label: "Completed", icon: "✓" },
  success: { tone: "ok", label: "Success", icon: "✓" },
  ok: { tone: "ok", label: "OK", icon: "✓" },
  passed: { tone: "ok", label: "Passed", icon: "✓" },
  verified: { tone: "ok", label: "Verified", icon: "✓" },
  failed: { tone: "bad", label: "Failed", icon: "✕" },
  failure: { tone: "bad", label: "Failure", icon: "✕" },
  denied: { tone: "bad", label: "Denied", icon: "⊘" },
  rolled_back: { tone: "warn", label: "Rolled back", icon: "↺" },
  cancelled: { tone: "muted", label: "Cancelled", icon: "–" },
  pending: { tone: "info", label: "Pending", icon: "…" },
  validating: { tone: "info", label: "Validating", icon: "…" },
  running: { tone: "info", label: "Running", icon: "▶" },
  in_progress: { tone: "info", label: "In progress", icon: "▶" },
  deleted: { tone: "muted", label: "Deleted", icon: "🗑" },
  active: { tone: "ok", label: "Active", icon: "●" },
  paused: { tone: "muted", label: "Paused", icon: "❚❚" },
};

/** Colour plus icon plus words: never colour alone. */
export function StatusBadge({ status, label }: { status: string | null | undefined; label?: string }) {
  const key = (status ?? "").toLowerCase();
  const known = STATUS[key] ?? { tone: "muted" as Tone, label: status ?? "Unknown", icon: "•" };
  return (
    <span className={`badge badge-${known.tone}`} data-status={key}>
      <span aria-hidden="true">{known.icon}</span> {label ?? known.label}
    </span>
  );
}

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <div className="loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" /> {label}
    </div>
  );
}

export function EmptyState({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="empty">
      <p className="empty-title">{title}</p>
      {children && <div className="empty-body">{children}</div>}
    </div>
  );
}

export function ErrorBox({ error, title = "Something went wrong", onRetry }: { error: unknown; title?: string; onRetry?: () => void }) {
  if (!error) return null;
  return (
    <div className="alert alert-bad" role="alert">
      <strong>{title}.</strong> {describeError(error)}
      {onRetry && (
        <button type="button" className="button-link" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Alert({ tone, children, role }: { tone: Tone; children: ReactNode; role?: "alert" | "status" }) {
  return (
    <div className={`alert alert-${tone}`} role={role}>
      {children}
    </div>
  );
}

export function Card({ title, children, actions, className }: { title?: string; children: ReactNode; actions?: ReactNode; className?: string }) {
  return (
    <section className={`card ${className ?? ""}`} aria-label={title}>
      {(title || actions) && (
        <header className="card-header">
          {title && <h2>{title}</h2>}
          {actions && <div className="card-actions">{actions}</div>}
        </header>
      )}
      {children}
    </section>
  );
}

export function ProgressBar({ percent, label }: { percent: number; label: string }) {
  const value = Math.max(0, Math.min(100, percent));
  return (
    <div className="progress" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(value)}>
      <div className="progress-fill" style={{ width: `${value}%` }} />
      <span className="progress-text">{value.toFixed(0)}%</span>
    </div>
  );
}

/** A time with its zone, and its age on hover and below. */
export function Time({ value, withAge = false, seconds = false }: { value: string | null | undefined; withAge?: boolean; seconds?: boolean }) {
  const zone = useZone();
  if (!value) return <span className="muted">—</span>;
  return (
    <time dateTime={value} title={`${formatTime(value, "UTC", true)} · ${formatAge(value)}`}>
      {formatTime(value, zone, seconds)}
      {withAge && <span className="age"> ({formatAge(value)})</span>}
    </time>
  );
}

export function PageHeader({ title, children, subtitle }: { title: string; children?: ReactNode; subtitle?: ReactNode }) {
  return (
    <div className="page-header">
      <div>
        <h1 tabIndex={-1} data-page-title>
          {title}
        </h1>
        {subtitle && <p className="subtitle">{subtitle}</p>}
      </div>
      {children && <div className="page-actions">{children}</div>}
    </div>
  );
}

export function KeyValues({ items }: { items: [ReactNode, ReactNode][] }) {
  return (
    <dl className="kv">
      {items.map(([k, v], i) => (
        <div key={i} className="kv-row">
          <dt>{k}</dt>
          <dd>{v ?? "—"}</dd>
        </div>
      ))}
    </dl>
  );
}

export function Forbidden() {
  return (
    <div className="page">
      <PageHeader title="Not permitted" />
      <Alert tone="warn" role="alert">
        Your role does not allow this page. Backup and restore actions are reserved for system administrators.
      </Alert>
    </div>
  );
}

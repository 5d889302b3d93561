/** One job, live: a progress bar, the stages it passes through, its log lines, and how it
 * ended (success, failure with the reason, cancellation, automatic rollback). */
import { useEffect, useRef, type ReactNode } from "react";
import { FINISHED, useJobStream } from "../api/jobStream";
import type { Job } from "../api/types";
import { formatBytes, formatDuration, formatTime, humanize } from "../lib/format";
import { useZone } from "../prefs";
import { Alert, ErrorBox, ProgressBar, StatusBadge } from "./ui";

interface JobMonitorProps {
  jobId: string;
  /** Stages the work is expected to pass through, in order (shown before they start). */
  expectedStages?: string[];
  /** Shown when the job completed. */
  renderResult?(job: Job): ReactNode;
  onFinished?(job: Job): void;
  title?: string;
}

export function JobMonitor({ jobId, expectedStages = [], renderResult, onFinished, title = "Progress" }: JobMonitorProps) {
  const { job, lines, stages, live, error } = useJobStream(jobId);
  const zone = useZone();
  const logRef = useRef<HTMLOListElement>(null);
  const notified = useRef(false);

  useEffect(() => {
    if (job && FINISHED.has(job.status) && !notified.current) {
      notified.current = true;
      onFinished?.(job);
    }
  }, [job, onFinished]);

  useEffect(() => {
    const node = logRef.current;
    if (node) node.scrollTop = node.scrollHeight;
  }, [lines.length]);

  if (!job) return error ? <ErrorBox error={error} title="Cannot follow the job" /> : <p role="status">Starting…</p>;

  const finished = FINISHED.has(job.status);
  const current = (job.stage ?? "").split("+");
  const ordered = [...stages, ...expectedStages.filter((s) => !stages.includes(s))];
  const rolledBack = isRolledBack(job);
  const percent = job.status === "completed" ? 100 : job.percent;

  return (
    <section className="job-monitor" aria-label={title} data-job-status={job.status}>
      <div className="job-head">
        <StatusBadge status={rolledBack ? "rolled_back" : job.status} />
        <span className="muted">
          {humanize(job.kind)} · job {job.id.slice(0, 8)} · {live ? "live" : finished ? "finished" : "updating"}
        </span>
      </div>
      <ProgressBar percent={percent} label={`${humanize(job.kind)} progress`} />
      <p className="job-figures" aria-live="polite">
        {!finished && job.stage && <>Stage: {humanize(job.stage.replace(/\+/g, " + "))} · </>}
        {job.bytes_total > 0 && (
          <>
            {formatBytes(job.bytes_done)} of {formatBytes(job.bytes_total)}
            {" · "}
          </>
        )}
        {!finished && job.eta_seconds !== null && <>about {formatDuration(job.eta_seconds)} left</>}
        {finished && job.started_at && job.finished_at && (
          <>took {formatDuration((Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000)}, finished {formatTime(job.finished_at, zone, true)}</>
        )}
      </p>
      {ordered.length > 0 && (
        <ol className="stages" aria-label="Stages">
          {ordered.map((stage) => {
            const state = stageState(stage, stages, current, job.status);
            return (
              <li key={stage} className={`stage stage-${state}`}>
                <span aria-hidden="true">{{ done: "✓", active: "▶", pending: "○", skipped: "–", stopped: "✕" }[state]}</span>{" "}
                {humanize(stage)} <span className="sr-only">({state})</span>
              </li>
            );
          })}
        </ol>
      )}
      {job.status === "completed" && !rolledBack && (
        <Alert tone="ok" role="status">
          <strong>Completed.</strong> {renderResult?.(job)}
        </Alert>
      )}
      {rolledBack && (
        <Alert tone="warn" role="alert">
          <strong>Rolled back automatically.</strong> The restore failed after the switch-over and the previous data was put back; nothing was lost.
          {job.error && <> Reason: {job.error}</>}
        </Alert>
      )}
      {job.status === "failed" && !rolledBack && (
        <Alert tone="bad" role="alert">
          <strong>Failed.</strong> {job.error ?? "No reason was recorded; see the log below."}
        </Alert>
      )}
      {job.status === "cancelled" && (
        <Alert tone="muted" role="status">
          <strong>Cancelled.</strong> Nothing was kept from the interrupted work.
        </Alert>
      )}
      <details className="job-log" open={!finished || job.status !== "completed"}>
        <summary>Log ({lines.length} lines)</summary>
        <ol ref={logRef} className="log-lines" aria-live="off">
          {lines.map((line) => (
            <li key={line.seq} className={line.level === "error" ? "log-error" : undefined}>
              <span className="log-time">{formatTime(line.at, zone, true)}</span> {line.message}
            </li>
          ))}
        </ol>
      </details>
    </section>
  );
}

function isRolledBack(job: Job): boolean {
  const result = job.result as Record<string, unknown> | null;
  if (result && (result.status === "rolled_back" || result.rolled_back === true)) return true;
  return job.status === "failed" && /rolled back|rollback/i.test(job.error ?? "");
}

type StageState = "done" | "active" | "pending" | "skipped" | "stopped";

export function stageState(stage: string, seen: string[], current: string[], status: string): StageState {
  const wasSeen = seen.includes(stage);
  if (status === "completed") return "done";
  if (status === "failed" || status === "cancelled") {
    if (!wasSeen) return "skipped";
    return current.includes(stage) || stage === seen[seen.length - 1] ? "stopped" : "done";
  }
  if (current.includes(stage)) return "active";
  return wasSeen ? "done" : "pending";
}

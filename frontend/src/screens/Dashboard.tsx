import { lazy, Suspense } from "react";
import { useBackupStats, useBackups, useJobs } from "../api/queries";
import { BackupActions } from "../components/BackupActions";
import { JobMonitor } from "../components/JobMonitor";
import { Card, EmptyState, ErrorBox, Loading, PageHeader, StatusBadge, Time } from "../components/ui";
import { BACKUP_TYPES, formatAge, formatBytes, formatNumber, formatPercent } from "../lib/format";
import { Link } from "../lib/router";
import { expectedStages } from "./stages";

const StorageChart = lazy(() => import("../components/StorageChart"));

export default function Dashboard() {
  const stats = useBackupStats();
  const recent = useBackups({ page: 1, page_size: 10, sort: "created_at", order: "desc" }, { refetchInterval: 10_000 });
  const running = useJobs({ status: "running", page_size: 10 }, 3000);
  const s = stats.data;

  return (
    <div className="page">
      <PageHeader title="Dashboard" subtitle="Backups of the clinical platform at a glance.">
        <Link to="/backups/new" className="button primary">
          New backup
        </Link>
        <Link to="/restore" className="button">
          Restore…
        </Link>
      </PageHeader>

      <ErrorBox error={stats.error} title="Statistics unavailable" onRetry={() => stats.refetch()} />
      <div className="cards" aria-busy={stats.isLoading}>
        <Card title="Total backups" className="stat">
          <p className="stat-value" data-testid="stat-total">{s ? formatNumber(s.total_backups) : "…"}</p>
          <p className="stat-sub">
            {s ? (
              <>
                {s.by_status.completed ?? 0} completed · {s.by_status.failed ?? 0} failed
                {s.deleted_backups ? ` · ${s.deleted_backups} deleted` : ""}
              </>
            ) : (
              " "
            )}
          </p>
        </Card>
        <Card title="Storage used" className="stat">
          <p className="stat-value">{s ? formatBytes(s.storage_used_bytes) : "…"}</p>
          <p className="stat-sub">
            {s && s.original_bytes > 0 ? (
              <>
                {formatBytes(s.saved_by_compression_bytes)} saved by compression (
                {formatPercent((s.compression_ratio ?? 0) * 100)}) of {formatBytes(s.original_bytes)}
              </>
            ) : (
              "Nothing stored yet"
            )}
          </p>
        </Card>
        <Card title="Last backup" className="stat">
          {s?.last_backup ? (
            <>
              <p className="stat-value">{formatAge(s.last_backup.completed_at)}</p>
              <p className="stat-sub">
                <StatusBadge status="completed" /> <Link to={`/backups/${s.last_backup.id}`}>{s.last_backup.name}</Link> ·{" "}
                <Time value={s.last_backup.completed_at} />
              </p>
            </>
          ) : (
            <p className="stat-value muted">{s ? "None yet" : "…"}</p>
          )}
        </Card>
        <Card title="Next scheduled backup" className="stat">
          {s?.next_scheduled ? (
            <>
              <p className="stat-value">{formatAge(s.next_scheduled.next_run_at)}</p>
              <p className="stat-sub">
                {s.next_scheduled.name} · <Time value={s.next_scheduled.next_run_at} />
              </p>
            </>
          ) : (
            <>
              <p className="stat-value muted">{s ? "Not scheduled" : "…"}</p>
              <p className="stat-sub">
                <Link to="/schedules">Set up a schedule</Link>
              </p>
            </>
          )}
        </Card>
      </div>

      <Card title="Running jobs" className="running-jobs">
        {running.isLoading ? (
          <Loading />
        ) : running.data && running.data.items.length > 0 ? (
          <div className="job-list">
            {running.data.items.map((job) => (
              <JobMonitor key={job.id} jobId={job.id} title={`Job ${job.id}`} expectedStages={expectedStages(job.kind, job.params)} />
            ))}
          </div>
        ) : (
          <p className="muted" role="status">
            No job is running. Updates appear here live.
          </p>
        )}
      </Card>

      <div className="grid-2">
        <Card title="Recent backups" actions={<Link to="/backups">All backups</Link>}>
          <ErrorBox error={recent.error} title="Backups unavailable" />
          {recent.isLoading ? (
            <Loading />
          ) : recent.data && recent.data.items.length > 0 ? (
            <table className="table">
              <caption className="sr-only">The 10 most recent backups</caption>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Type</th>
                  <th scope="col">Status</th>
                  <th scope="col">Size</th>
                  <th scope="col">Created</th>
                  <th scope="col">
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {recent.data.items.map((b) => (
                  <tr key={b.id}>
                    <td>
                      <Link to={`/backups/${b.id}`}>{b.name}</Link>
                      {b.is_safety_backup && <span className="tag">safety</span>}
                    </td>
                    <td>{BACKUP_TYPES[b.type]?.split(" ")[0] ?? b.type}</td>
                    <td>
                      <StatusBadge status={b.deleted_at ? "deleted" : b.status} />
                    </td>
                    <td className="num">{formatBytes(b.file_size_compressed)}</td>
                    <td>
                      <span title={b.created_at}>{formatAge(b.created_at)}</span>
                    </td>
                    <td>
                      <BackupActions backup={b} compact />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : (
            <EmptyState title="No backups yet">
              <Link to="/backups/new">Create the first backup</Link>
            </EmptyState>
          )}
        </Card>
        <Card title="Storage used over time (30 days, UTC)">
          {s && s.usage_over_time.length > 0 ? (
            <Suspense fallback={<Loading label="Loading chart…" />}>
              <StorageChart days={s.usage_over_time} />
            </Suspense>
          ) : (
            <EmptyState title={s ? "No history yet" : "Loading…"} />
          )}
        </Card>
      </div>
    </div>
  );
}

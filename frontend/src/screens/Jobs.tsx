import { useState } from "react";
import { cancelJob, useJobs } from "../api/queries";
import type { Job, JobStatus } from "../api/types";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { Dialog } from "../components/Dialog";
import { JobMonitor } from "../components/JobMonitor";
import { Pagination } from "../components/table";
import { EmptyState, ErrorBox, Loading, PageHeader, ProgressBar, StatusBadge, Time } from "../components/ui";
import { humanize, shortId } from "../lib/format";
import { expectedStages } from "./stages";

export function Jobs() {
  const [status, setStatus] = useState<JobStatus | "">("");
  const [page, setPage] = useState(1);
  const jobs = useJobs({ status: status || undefined, page, page_size: 25 }, 3000);
  const [open, setOpen] = useState<Job | null>(null);
  const [cancelling, setCancelling] = useState<Job | null>(null);
  return (
    <div className="page">
      <PageHeader title="Jobs" subtitle="Backups, integrity checks and restores run as jobs. This list updates by itself." />
      <div className="filters">
        <div className="field inline">
          <label htmlFor="job-status">Status</label>
          <select id="job-status" value={status} onChange={(e) => { setStatus(e.target.value as JobStatus | ""); setPage(1); }}>
            <option value="">All</option>
            <option value="running">Running</option>
            <option value="pending">Pending</option>
            <option value="completed">Completed</option>
            <option value="failed">Failed</option>
            <option value="cancelled">Cancelled</option>
          </select>
        </div>
      </div>
      <ErrorBox error={jobs.error} title="Jobs unavailable" />
      {jobs.isLoading ? (
        <Loading />
      ) : jobs.data && jobs.data.items.length ? (
        <>
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Kind</th>
                <th scope="col">Status</th>
                <th scope="col">Progress</th>
                <th scope="col">Submitted</th>
                <th scope="col">By</th>
                <th scope="col"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {jobs.data.items.map((job) => (
                <tr key={job.id}>
                  <td><code>{shortId(job.id)}</code></td>
                  <td>{humanize(job.kind)}</td>
                  <td><StatusBadge status={job.status} />{job.error && <div className="muted small">{job.error}</div>}</td>
                  <td style={{ minWidth: 140 }}>
                    <ProgressBar percent={job.status === "completed" ? 100 : job.percent} label={`Job ${shortId(job.id)} progress`} />
                  </td>
                  <td><Time value={job.created_at} /></td>
                  <td>{job.created_by}</td>
                  <td className="row-actions">
                    <button type="button" onClick={() => setOpen(job)}>Details</button>
                    {(job.status === "running" || job.status === "pending") && (
                      <button type="button" className="danger-outline" onClick={() => setCancelling(job)}>Cancel</button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <Pagination page={page} pageSize={25} total={jobs.data.total} onPage={setPage} label="jobs" />
        </>
      ) : (
        <EmptyState title="No jobs" />
      )}
      {open && (
        <Dialog title={`${humanize(open.kind)} — job ${shortId(open.id)}`} onClose={() => setOpen(null)} wide>
          <JobMonitor jobId={open.id} expectedStages={expectedStages(open.kind, open.params)} />
        </Dialog>
      )}
      {cancelling && (
        <ConfirmDialog title="Cancel this job?" confirmLabel="Cancel job" danger onClose={() => setCancelling(null)} onConfirm={async () => { await cancelJob(cancelling.id); void jobs.refetch(); }}>
          <p>
            The {humanize(cancelling.kind).toLowerCase()} job {shortId(cancelling.id)} stops and cleans up after itself: a cancelled backup leaves nothing
            behind.
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}

/** Server state: one function per endpoint, and the react-query hooks the screens use. */
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { API, api, unwrap } from "./client";
import type {
  AuditPage,
  BackupCreate,
  BackupDetail,
  BackupPage,
  BackupStats,
  ChainCheck,
  CronPreview,
  Job,
  JobAccepted,
  JobPage,
  JobStatus,
  RestoreExecuteIn,
  RestoreHistoryPage,
  RestorePreview,
  RestorePreviewIn,
  RetentionReport,
  Schedule,
  ScheduleIn,
  SignatureIn,
  ValidationOut,
} from "./types";

export const keys = {
  backups: ["backups"] as const,
  backupList: (q: BackupListQuery) => ["backups", "list", q] as const,
  backup: (id: string, filesOffset: number, filesLimit: number) => ["backups", "detail", id, filesOffset, filesLimit] as const,
  stats: ["backups", "stats"] as const,
  jobs: ["jobs"] as const,
  job: (id: string) => ["jobs", id] as const,
  audit: ["audit"] as const,
  restores: ["restores"] as const,
  schedules: ["schedules"] as const,
};

// ---- backups ---------------------------------------------------------------------------------

export interface BackupListQuery {
  page: number;
  page_size: number;
  type?: "full" | "database" | "files";
  status?: "pending" | "in_progress" | "completed" | "failed";
  search?: string;
  sort: string;
  order: "asc" | "desc";
}

export function useBackups(query: BackupListQuery, options: { refetchInterval?: number } = {}) {
  return useQuery({
    queryKey: keys.backupList(query),
    queryFn: () =>
      unwrap<BackupPage>(
        api.GET("/api/v1/backup/list", {
          params: { query: { ...query, search: query.search || undefined } as never },
        }),
      ),
    placeholderData: keepPreviousData,
    refetchInterval: options.refetchInterval,
  });
}

export function useBackup(id: string, filesOffset = 0, filesLimit = 200, enabled = true) {
  return useQuery({
    enabled: enabled && id !== "",
    queryKey: keys.backup(id, filesOffset, filesLimit),
    queryFn: () =>
      unwrap<BackupDetail>(
        api.GET("/api/v1/backup/{backup_id}", {
          params: { path: { backup_id: id }, query: { files_offset: filesOffset, files_limit: filesLimit } },
        }),
      ),
    placeholderData: keepPreviousData,
  });
}

export function useBackupStats() {
  return useQuery({
    queryKey: keys.stats,
    queryFn: () => unwrap<BackupStats>(api.GET("/api/v1/backup/stats", { params: { query: { days: 30 } } })),
  });
}

export function createBackup(body: BackupCreate): Promise<JobAccepted> {
  return unwrap<JobAccepted>(api.POST("/api/v1/backup/create", { body }));
}

export function verifyBackup(id: string): Promise<JobAccepted> {
  return unwrap<JobAccepted>(api.POST("/api/v1/backup/{backup_id}/verify", { params: { path: { backup_id: id } } }));
}

export function deleteBackup(id: string, signature: SignatureIn, purge: boolean): Promise<unknown> {
  return unwrap(
    api.DELETE("/api/v1/backup/{backup_id}", {
      params: { path: { backup_id: id } },
      body: { purge, signature },
    }),
  );
}

export function downloadUrl(id: string): string {
  return `${API}/backup/${encodeURIComponent(id)}/download`;
}

/** Everything that changes when a backup appears, changes or goes. */
export function useInvalidateBackups() {
  const client = useQueryClient();
  return () => {
    void client.invalidateQueries({ queryKey: keys.backups });
    void client.invalidateQueries({ queryKey: keys.jobs });
    void client.invalidateQueries({ queryKey: keys.audit });
  };
}

// ---- jobs ------------------------------------------------------------------------------------

export function getJob(id: string): Promise<Job> {
  return unwrap<Job>(api.GET("/api/v1/jobs/{job_id}", { params: { path: { job_id: id } } }));
}

export interface JobQuery {
  status?: JobStatus;
  kind?: string;
  page?: number;
  page_size?: number;
}

export function useJobs(params: JobQuery = {}, refetchInterval: number | false = 5000, enabled = true) {
  return useQuery({
    queryKey: [...keys.jobs, "list", params],
    queryFn: () => unwrap<JobPage>(api.GET("/api/v1/jobs", { params: { query: { page_size: 50, ...params } } })),
    refetchInterval,
    enabled,
    placeholderData: keepPreviousData,
  });
}

export function cancelJob(id: string): Promise<Job> {
  return unwrap<Job>(api.POST("/api/v1/jobs/{job_id}/cancel", { params: { path: { job_id: id } } }));
}

// ---- restore ---------------------------------------------------------------------------------

export function previewRestore(body: RestorePreviewIn): Promise<RestorePreview> {
  return unwrap<RestorePreview>(api.POST("/api/v1/restore/preview", { body }));
}

export function validateRestore(backupId: string, scope?: "full" | "database" | "files"): Promise<ValidationOut> {
  return unwrap<ValidationOut>(
    api.POST("/api/v1/restore/validate", { body: { backup_id: backupId, scope, check_hashes: true } }),
  );
}

export function executeRestore(body: RestoreExecuteIn): Promise<JobAccepted> {
  return unwrap<JobAccepted>(api.POST("/api/v1/restore/execute", { body }));
}

export function useRestoreHistory(offset: number, limit: number, enabled = true) {
  return useQuery({
    queryKey: [...keys.restores, offset, limit],
    queryFn: () => unwrap<RestoreHistoryPage>(api.GET("/api/v1/restore/history", { params: { query: { offset, limit } } })),
    placeholderData: keepPreviousData,
    enabled,
  });
}

// ---- schedules -------------------------------------------------------------------------------

export function previewCron(cron: string, timezone: string, count = 5): Promise<CronPreview> {
  return unwrap<CronPreview>(api.GET("/api/v1/backup/schedules/preview", { params: { query: { cron, timezone, count } } }));
}

/** What the schedule's saved retention rules would delete now, and why each backup stays. */
export function previewRetention(scheduleId: string): Promise<RetentionReport> {
  return unwrap<RetentionReport>(
    api.POST("/api/v1/retention/run", { body: { dry_run: true, schedule_id: scheduleId } }),
  );
}

export function useSchedules() {
  return useQuery({
    queryKey: keys.schedules,
    queryFn: () => unwrap<Schedule[]>(api.GET("/api/v1/backup/schedules")),
  });
}

export function saveSchedule(body: ScheduleIn, id?: string): Promise<Schedule> {
  return id
    ? unwrap<Schedule>(api.PUT("/api/v1/backup/schedules/{schedule_id}", { params: { path: { schedule_id: id } }, body }))
    : unwrap<Schedule>(api.POST("/api/v1/backup/schedules", { body }));
}

export function toggleSchedule(id: string): Promise<Schedule> {
  return unwrap<Schedule>(api.POST("/api/v1/backup/schedules/{schedule_id}/toggle", { params: { path: { schedule_id: id } } }));
}

export function deleteSchedule(id: string): Promise<unknown> {
  return unwrap(api.DELETE("/api/v1/backup/schedules/{schedule_id}", { params: { path: { schedule_id: id } } }));
}

export function useScheduleMutation<T>(fn: (arg: T) => Promise<unknown>) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: fn,
    onSuccess: () => {
      void client.invalidateQueries({ queryKey: keys.schedules });
      void client.invalidateQueries({ queryKey: keys.stats });
    },
  });
}

// ---- audit -----------------------------------------------------------------------------------

export interface AuditQuery {
  offset: number;
  limit: number;
  action?: string;
  actor?: string;
  target_type?: string;
  target_id?: string;
  outcome?: "success" | "failure" | "denied";
  since?: string;
  until?: string;
}

export function useAudit(query: AuditQuery, enabled = true) {
  return useQuery({
    queryKey: [...keys.audit, query],
    queryFn: () => {
      const clean = Object.fromEntries(Object.entries(query).filter(([, v]) => v !== "" && v !== undefined));
      return unwrap<AuditPage>(api.GET("/api/v1/audit", { params: { query: clean as never } }));
    },
    placeholderData: keepPreviousData,
    enabled,
  });
}

export function verifyAuditChain(): Promise<ChainCheck> {
  return unwrap<ChainCheck>(api.GET("/api/v1/audit/verify"));
}

export function auditExportUrl(format: "csv" | "json"): string {
  return `${API}/audit/export?format=${format}`;
}

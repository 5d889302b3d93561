/**
 * Names for the API's shapes, taken from the generated schema (`generated/schema.d.ts`), so
 * that a change in the API shows up here as a type error after `npm run gen:api`.
 */
import type { components } from "./generated/schema";

type S = components["schemas"];

export type Role = S["Role"];
export type SessionUser = Pick<S["MeOut"], "id" | "username" | "full_name" | "role">;
export type Backup = S["BackupOut"];
export type BackupDetail = S["BackupDetailOut"];
export type BackupPage = S["BackupPage"];
export type BackupStats = S["BackupStatsOut"];
export type BackupCreate = S["BackupCreateIn"];
export type BackupType = S["BackupType"];
export type BackupStatus = S["BackupStatus"];
export type BundleObject = S["BundleObject"];
export type FileEntry = S["FileOut"];
export type JobAccepted = S["JobAccepted"];
export type JobStatus = S["JobStatus"];
export type AuditEvent = S["AuditEventOut"];
export type AuditPage = S["AuditPage"];
export type ChainCheck = S["ChainCheck"];
export type AuditOutcome = S["AuditOutcome"];
export type SignatureIn = S["SignatureIn"];
export type SignatureOut = S["SignatureOut"];
export type UsageDay = S["UsageDay"];

export type LogLine = S["LogLine"];
export type Job = S["JobOut"];
export type JobPage = S["JobPage"];
export type RestoreScopeName = NonNullable<S["RestorePreviewIn"]["scope"]>;
export type RestorePreviewIn = S["RestorePreviewIn"];
export type RestoreExecuteIn = S["RestoreExecuteIn"];
export type ValidationCheck = S["ValidationCheck"];
export type ValidationOut = S["ValidationOut"];
export type RestoreOperation = S["RestoreOperationOut"];
export type RestoreHistoryPage = S["RestoreHistoryPage"];
/** The preview is a free-form report (see services/restore_preview.py). */
export type RestorePreview = Record<string, unknown>;

export type KeepRules = S["KeepRules"];
export type Schedule = S["ScheduleOut"];
export type ScheduleIn = S["ScheduleIn"];
export type ScheduleUpdate = S["ScheduleUpdateIn"];
export type CronPreview = S["PreviewOut"];
export type RetentionReport = S["RetentionOut"];

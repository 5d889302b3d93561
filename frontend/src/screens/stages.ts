/** The stages each kind of job reports, in order (from the service's progress trackers). */
export function expectedStages(kind: string, params: Record<string, unknown> = {}): string[] {
  if (kind === "backup.create") {
    const type = params.type;
    if (type === "database") return ["database", "audit", "finalize"];
    if (type === "files") return ["files", "audit", "finalize"];
    return ["database", "files", "audit", "finalize"];
  }
  if (kind === "backup.verify") return ["verify"];
  if (kind === "restore.execute") {
    const scope = params.scope;
    if (scope === "study" || scope === "organization") return ["validate", "safety_backup", "stage_dump", "load_rows", "apply", "extract_files"];
    if (scope === "database") return ["validate", "safety backup", "database", "verify", "cut-over"];
    if (scope === "files") return ["validate", "safety backup", "files", "verify", "cut-over"];
    return ["validate", "safety backup", "database", "files", "verify", "cut-over"];
  }
  return [];
}

/**
 * A job followed live: the job as `GET /jobs/{id}` gives it, then server-sent events
 * (`progress`, `log`, `done`) from `GET /jobs/{id}/events`. Where the stream is not available
 * (an old proxy, a test without EventSource) it falls back to polling once a second.
 */
import { useEffect, useRef, useState } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { API } from "./client";
import { getJob, keys } from "./queries";
import type { Job, LogLine } from "./types";

export const FINISHED = new Set(["completed", "failed", "cancelled"]);

export interface JobStream {
  job: Job | null;
  lines: LogLine[];
  /** Every stage seen so far, in order (a stage like `database+files` counts as both). */
  stages: string[];
  live: boolean;
  error: unknown;
}

function mergeLines(current: LogLine[], incoming: LogLine[]): LogLine[] {
  const last = current.length ? current[current.length - 1].seq : 0;
  const fresh = incoming.filter((l) => l.seq > last);
  return fresh.length ? [...current, ...fresh].slice(-1000) : current;
}

function addStages(seen: string[], stage: string | null | undefined): string[] {
  if (!stage || stage === "starting" || stage === "done" || stage === "cancelled") return seen;
  const parts = stage.split("+").map((s) => s.trim()).filter(Boolean);
  const next = [...seen];
  for (const part of parts) if (!next.includes(part)) next.push(part);
  return next.length === seen.length ? seen : next;
}

function parse<T>(data: string): T | null {
  try {
    return JSON.parse(data) as T;
  } catch {
    return null;
  }
}

export function useJobStream(jobId: string | null): JobStream {
  const [state, setState] = useState<JobStream>({ job: null, lines: [], stages: [], live: false, error: null });
  const client = useQueryClient();
  const finishedRef = useRef(false);

  useEffect(() => {
    if (!jobId) return;
    finishedRef.current = false;
    setState({ job: null, lines: [], stages: [], live: false, error: null });
    let stopped = false;
    let source: EventSource | null = null;
    let timer: ReturnType<typeof setTimeout> | null = null;

    const apply = (job: Partial<Job> | null, lines: LogLine[] = []) =>
      setState((s) => {
        const merged = job ? ({ ...(s.job ?? {}), ...job } as Job) : s.job;
        const all = mergeLines(s.lines, [...(job?.log ?? []), ...lines]);
        return { ...s, job: merged, lines: all, stages: addStages(s.stages, merged?.stage), error: null };
      });

    const finish = (job: Job | null) => {
      if (finishedRef.current) return;
      finishedRef.current = true;
      source?.close();
      setState((s) => ({ ...s, live: false }));
      if (job) apply(job);
      // The done event carries status, result and error; fetch the rest (times, last lines).
      getJob(jobId)
        .then((full) => !stopped && apply(full))
        .catch(() => undefined);
      void client.invalidateQueries({ queryKey: keys.backups });
      void client.invalidateQueries({ queryKey: keys.jobs });
      void client.invalidateQueries({ queryKey: keys.restores });
      void client.invalidateQueries({ queryKey: keys.audit });
    };

    const poll = async () => {
      if (stopped) return;
      try {
        const job = await getJob(jobId);
        if (stopped) return;
        apply(job);
        if (FINISHED.has(job.status)) {
          finish(job);
          return;
        }
      } catch (error) {
        setState((s) => ({ ...s, error }));
      }
      timer = setTimeout(poll, 1000);
    };

    const stream = () => {
      if (typeof EventSource === "undefined") {
        void poll();
        return;
      }
      let failures = 0;
      source = new EventSource(`${API}/jobs/${encodeURIComponent(jobId)}/events`, { withCredentials: true });
      source.onopen = () => setState((s) => ({ ...s, live: true }));
      source.addEventListener("progress", (e) => {
        failures = 0;
        apply(parse<Partial<Job>>((e as MessageEvent).data));
      });
      source.addEventListener("log", (e) => {
        const line = parse<LogLine>((e as MessageEvent).data);
        if (line) apply(null, [line]);
      });
      source.addEventListener("done", (e) => {
        const job = parse<Job>((e as MessageEvent).data);
        finish(job);
        if (!job) void poll();
      });
      source.onerror = () => {
        if (finishedRef.current || stopped) return;
        failures += 1;
        setState((s) => ({ ...s, live: false }));
        // The stream may have ended with the job; or the server refuses streams: poll instead.
        if (failures >= 2 || source?.readyState === EventSource.CLOSED) {
          source?.close();
          void poll();
        }
      };
    };

    // The current state first (the stream only tells what happens next), then live updates.
    getJob(jobId)
      .then((job) => {
        if (stopped) return;
        apply(job);
        if (FINISHED.has(job.status)) finish(job);
        else stream();
      })
      .catch((error) => {
        if (stopped) return;
        setState((s) => ({ ...s, error }));
        timer = setTimeout(poll, 1500);
      });

    return () => {
      stopped = true;
      source?.close();
      if (timer) clearTimeout(timer);
    };
  }, [jobId, client]);

  return state;
}

/** The electronic signature (21 CFR 11.50, 11.200): the signed-in user's username and password
 * re-entered, a meaning from the fixed list, and a reason. The password is never kept. */
import { useState, type ReactNode } from "react";
import { useForm } from "react-hook-form";
import type { SignatureIn } from "../api/types";
import { ApiError, describeError } from "../api/client";
import { Dialog } from "./Dialog";

export const MEANINGS = [
  "Approved restore",
  "Approved deletion",
  "Reviewed",
  "Authored",
  "Verified",
  "Responsible",
] as const;

interface SignatureDialogProps {
  title: string;
  /** What is being signed, shown above the form. */
  summary: ReactNode;
  username: string;
  fullName: string;
  meaning: (typeof MEANINGS)[number];
  submitLabel: string;
  onSign(signature: SignatureIn): Promise<unknown>;
  onClose(): void;
}

type Fields = { username: string; password: string; meaning: string; reason: string };

export function SignatureDialog({ title, summary, username, fullName, meaning, submitLabel, onSign, onClose }: SignatureDialogProps) {
  const [serverError, setServerError] = useState<string | null>(null);
  const {
    register,
    handleSubmit,
    resetField,
    formState: { errors, isSubmitting },
  } = useForm<Fields>({ defaultValues: { username, password: "", meaning, reason: "" } });

  const submit = handleSubmit(async (fields) => {
    setServerError(null);
    try {
      await onSign({ ...fields, reason: fields.reason.trim() });
    } catch (error) {
      resetField("password");
      setServerError(
        error instanceof ApiError && (error.status === 401 || error.status === 403)
          ? `Signature refused: ${error.detail}`
          : describeError(error),
      );
    }
  });

  return (
    <Dialog
      title={title}
      onClose={onClose}
      busy={isSubmitting}
      describedBy="signature-statement"
      footer={
        <>
          <button type="button" onClick={onClose} disabled={isSubmitting}>
            Cancel
          </button>
          <button type="submit" form="signature-form" className="danger" disabled={isSubmitting}>
            {isSubmitting ? "Signing…" : submitLabel}
          </button>
        </>
      }
    >
      <div className="signature-summary">{summary}</div>
      <form id="signature-form" className="form" onSubmit={submit} noValidate>
        <p id="signature-statement" className="hint">
          Signing as <strong>{fullName}</strong>. Your electronic signature is the legally binding
          equivalent of your handwritten signature; it is recorded with the date and time (UTC), its
          meaning and your reason, and bound to exactly this operation.
        </p>
        <div className="field">
          <label htmlFor="sig-username">Username</label>
          <input id="sig-username" autoComplete="username" {...register("username", { required: "Enter your username." })} aria-invalid={!!errors.username} />
          {errors.username && <p className="field-error">{errors.username.message}</p>}
        </div>
        <div className="field">
          <label htmlFor="sig-password">Password</label>
          <input
            id="sig-password"
            type="password"
            autoComplete="current-password"
            data-autofocus
            {...register("password", { required: "Re-enter your password to sign." })}
            aria-invalid={!!errors.password}
            aria-describedby={errors.password ? "sig-password-error" : undefined}
          />
          {errors.password && <p className="field-error" id="sig-password-error">{errors.password.message}</p>}
        </div>
        <div className="field">
          <label htmlFor="sig-meaning">Meaning</label>
          <select id="sig-meaning" {...register("meaning", { required: true })}>
            {MEANINGS.map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="sig-reason">Reason</label>
          <textarea
            id="sig-reason"
            rows={3}
            placeholder="For example: change ticket CHG-1042, data corruption found in study ONC-001"
            {...register("reason", {
              required: "A reason is required for the audit trail.",
              validate: (v) => v.trim().length > 0 || "A reason is required for the audit trail.",
              maxLength: { value: 2000, message: "At most 2000 characters." },
            })}
            aria-invalid={!!errors.reason}
            aria-describedby={errors.reason ? "sig-reason-error" : undefined}
          />
          {errors.reason && <p className="field-error" id="sig-reason-error">{errors.reason.message}</p>}
        </div>
        {serverError && (
          <div className="alert alert-bad" role="alert">
            {serverError}
          </div>
        )}
      </form>
    </Dialog>
  );
}

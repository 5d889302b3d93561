import { useState } from "react";
import { useForm } from "react-hook-form";
import { ApiError, describeError } from "../api/client";
import { useSession } from "../session";

type Fields = { username: string; password: string };

export function Login({ notice }: { notice: string | null }) {
  const { login } = useSession();
  const [error, setError] = useState<string | null>(null);
  const {
    register,
    handleSubmit,
    resetField,
    setFocus,
    formState: { errors, isSubmitting },
  } = useForm<Fields>({ defaultValues: { username: "", password: "" } });

  const submit = handleSubmit(async ({ username, password }) => {
    setError(null);
    try {
      await login(username.trim(), password);
    } catch (e) {
      resetField("password");
      setFocus("password");
      setError(loginError(e));
    }
  });

  return (
    <main className="login-page">
      <div className="login-card">
        <div className="brand brand-large" aria-hidden="true">
          <span className="brand-mark">CV</span> ClinVault
        </div>
        <h1>Sign in</h1>
        <p className="muted">Backup and restore for the clinical platform. Every action is recorded in the audit trail.</p>
        {notice && (
          <div className="alert alert-info" role="status">
            {notice}
          </div>
        )}
        {error && (
          <div className="alert alert-bad" role="alert">
            {error}
          </div>
        )}
        <form className="form" onSubmit={submit} noValidate>
          <div className="field">
            <label htmlFor="login-username">Username</label>
            <input
              id="login-username"
              autoComplete="username"
              autoFocus
              aria-invalid={!!errors.username}
              aria-describedby={errors.username ? "login-username-error" : undefined}
              {...register("username", { required: "Enter your username." })}
            />
            {errors.username && <p className="field-error" id="login-username-error">{errors.username.message}</p>}
          </div>
          <div className="field">
            <label htmlFor="login-password">Password</label>
            <input
              id="login-password"
              type="password"
              autoComplete="current-password"
              aria-invalid={!!errors.password}
              aria-describedby={errors.password ? "login-password-error" : undefined}
              {...register("password", { required: "Enter your password." })}
            />
            {errors.password && <p className="field-error" id="login-password-error">{errors.password.message}</p>}
          </div>
          <button type="submit" className="primary wide" disabled={isSubmitting}>
            {isSubmitting ? "Signing in…" : "Sign in"}
          </button>
        </form>
        <p className="hint">
          After 5 failed attempts in a row the account is locked for 15 minutes. Sessions end after 15 minutes without
          activity.
        </p>
      </div>
    </main>
  );
}

export function loginError(error: unknown): string {
  if (error instanceof ApiError && error.status === 401) {
    const detail = error.detail.toLowerCase();
    if (detail.includes("locked") && !detail.includes("or the account is locked"))
      return "This account is locked after repeated failed sign-in attempts. Wait 15 minutes or ask an administrator to unlock it.";
    return "Wrong username or password, or the account is locked after repeated failures. Check your details and try again.";
  }
  if (error instanceof ApiError && error.status === 429) return "Too many attempts. Wait a moment and try again.";
  return describeError(error);
}

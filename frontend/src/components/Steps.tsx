/** The step indicator of the wizards. */
export function Steps({ steps, current }: { steps: string[]; current: number }) {
  return (
    <ol className="steps" aria-label="Steps">
      {steps.map((label, i) => {
        const state = i < current ? "done" : i === current ? "current" : "todo";
        return (
          <li key={label} className={`step step-${state}`} aria-current={i === current ? "step" : undefined}>
            <span className="step-number" aria-hidden="true">
              {i < current ? "✓" : i + 1}
            </span>
            <span>
              {label}
              <span className="sr-only">{state === "done" ? " (done)" : state === "current" ? " (current step)" : ""}</span>
            </span>
          </li>
        );
      })}
    </ol>
  );
}

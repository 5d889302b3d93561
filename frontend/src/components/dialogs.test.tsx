import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useState } from "react";
import { describe, expect, test, vi } from "vitest";
import { ApiError } from "../api/client";
import { Dialog } from "./Dialog";
import { SignatureDialog } from "./SignatureDialog";
import { stageState } from "./JobMonitor";
import { StatusBadge } from "./ui";

function Opener() {
  const [open, setOpen] = useState(false);
  return (
    <>
      <button onClick={() => setOpen(true)}>Open</button>
      {open && (
        <Dialog title="Example" onClose={() => setOpen(false)} footer={<button>Last</button>}>
          <input aria-label="First field" />
        </Dialog>
      )}
    </>
  );
}

describe("Dialog", () => {
  test("is labelled, traps focus, closes on Escape and gives focus back", async () => {
    const user = userEvent.setup();
    render(<Opener />);
    const opener = screen.getByRole("button", { name: "Open" });
    await user.click(opener);
    const dialog = screen.getByRole("dialog", { name: "Example" });
    expect(dialog).toHaveAttribute("aria-modal", "true");
    // First focusable element (the close button) has focus; Tab cycles inside.
    expect(screen.getByRole("button", { name: "Close dialog" })).toHaveFocus();
    await user.tab();
    expect(screen.getByLabelText("First field")).toHaveFocus();
    await user.tab();
    expect(screen.getByRole("button", { name: "Last" })).toHaveFocus();
    await user.tab();
    expect(screen.getByRole("button", { name: "Close dialog" })).toHaveFocus();
    await user.tab({ shift: true });
    expect(screen.getByRole("button", { name: "Last" })).toHaveFocus();
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
    expect(opener).toHaveFocus();
  });
});

describe("SignatureDialog", () => {
  function renderDialog(onSign = vi.fn().mockResolvedValue(undefined)) {
    render(
      <SignatureDialog
        title="Sign the restore"
        summary={<p>Restore study ONC-001</p>}
        username="admin"
        fullName="Ada Admin"
        meaning="Approved restore"
        submitLabel="Sign and start restore"
        onSign={onSign}
        onClose={() => undefined}
      />,
    );
    return onSign;
  }

  test("pre-fills the username and meaning, focuses the password, requires a reason", async () => {
    const user = userEvent.setup();
    const onSign = renderDialog();
    expect(screen.getByLabelText("Username")).toHaveValue("admin");
    expect(screen.getByLabelText("Meaning")).toHaveValue("Approved restore");
    expect(screen.getByLabelText("Password")).toHaveFocus();
    expect(screen.getByText(/Signing as/)).toHaveTextContent("Ada Admin");
    await user.type(screen.getByLabelText("Password"), "secret-password");
    await user.click(screen.getByRole("button", { name: "Sign and start restore" }));
    expect(await screen.findByText("A reason is required for the audit trail.")).toBeInTheDocument();
    expect(onSign).not.toHaveBeenCalled();
    await user.type(screen.getByLabelText("Reason"), "  CHG-1042  ");
    await user.click(screen.getByRole("button", { name: "Sign and start restore" }));
    await waitFor(() =>
      expect(onSign).toHaveBeenCalledWith({ username: "admin", password: "secret-password", meaning: "Approved restore", reason: "CHG-1042" }),
    );
  });

  test("a refused signature says so and clears the password", async () => {
    const user = userEvent.setup();
    renderDialog(vi.fn().mockRejectedValue(new ApiError(403, { detail: "signature refused: wrong username or password, or the account is locked" })));
    await user.type(screen.getByLabelText("Password"), "wrong");
    await user.type(screen.getByLabelText("Reason"), "why");
    await user.click(screen.getByRole("button", { name: "Sign and start restore" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Signature refused");
    expect(screen.getByLabelText("Password")).toHaveValue("");
  });
});

describe("status and stages", () => {
  test("status badges carry words, not colour alone", () => {
    render(<StatusBadge status="failed" />);
    expect(screen.getByText("Failed")).toBeInTheDocument();
  });

  test("stages move from pending to active to done, and stop where a job failed", () => {
    expect(stageState("files", ["database"], ["database"], "running")).toBe("pending");
    expect(stageState("database", ["database", "files"], ["files"], "running")).toBe("done");
    expect(stageState("files", ["database", "files"], ["files"], "running")).toBe("active");
    expect(stageState("files", ["database", "files"], ["files"], "failed")).toBe("stopped");
    expect(stageState("audit", ["database", "files"], ["files"], "failed")).toBe("skipped");
    expect(stageState("audit", ["database"], ["done"], "completed")).toBe("done");
  });
});

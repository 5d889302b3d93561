"""``python -m clinvault``: the same command as ``clinvault``."""

from clinvault.cli.app import run

if __name__ == "__main__":
    run()

"""``python -m clinvault``: the same command as ``clinvault``."""

from clinvault.cli.app import main

if __name__ == "__main__":
    main()

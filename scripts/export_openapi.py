"""Write the API's OpenAPI schema, built in-process from ``create_app()`` (no server).

    python scripts/export_openapi.py                  # writes frontend/openapi.json
    python scripts/export_openapi.py -o -             # to standard output
    python scripts/export_openapi.py --check          # exit 1 when frontend/openapi.json is stale

The output is deterministic: settings come from defaults only (``CLINVAULT_*`` variables and
the config file are ignored, the data directory is a fixed placeholder that is never touched),
and the JSON is written with a fixed indentation and a final newline. The UI's typed client is
generated from this file (``npm run gen:api`` in ``frontend/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "frontend" / "openapi.json"
PLACEHOLDER_DATA_DIR = Path("/nonexistent/clinvault-openapi")


@contextmanager
def _default_environment() -> Iterator[None]:
    """Hide the ``CLINVAULT_*`` variables while settings are read, then put them back."""
    hidden = {n: v for n, v in os.environ.items() if n.startswith("CLINVAULT_")}
    for name in hidden:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(hidden)


def build_schema() -> dict[str, Any]:
    """The schema of a fresh app on default settings. Nothing is started or written."""
    from clinvault.api.app import create_app
    from clinvault.config import Settings

    with _default_environment():
        settings = Settings(data_dir=PLACEHOLDER_DATA_DIR)
        schema: dict[str, Any] = create_app(settings=settings).openapi()
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT), help="file, or - for stdout")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = render(build_schema())
    if args.check:
        current = Path(args.output).read_text(encoding="utf-8") if args.output != "-" else ""
        if current != text:
            print(f"{args.output} is stale: run `make ui-api`", file=sys.stderr)
            return 1
        return 0
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

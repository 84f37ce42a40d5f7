"""The JSON Schemas of the files zoo writes, generated from their records into ``docs/schema``.

``python -m finetune.schemas`` writes them again; a test checks the files against the records.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune.config import RunConfig
from finetune.results.records import RunSummary
from zoo.records import BundleMetadata
from zoo.schema import json_schema

SCHEMA_FOLDER = Path(__file__).resolve().parent.parent / "docs" / "schema"
SCHEMAS: dict[str, type] = {"zoo.schema.json": BundleMetadata, "summary.schema.json": RunSummary,
                             "config.schema.json": RunConfig}


def render(record: type) -> str:
    """The schema file of ``record``."""
    return json.dumps(json_schema(record), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    SCHEMA_FOLDER.mkdir(parents=True, exist_ok=True)
    for name, record in SCHEMAS.items():
        (SCHEMA_FOLDER / name).write_text(render(record), encoding="utf-8")


if __name__ == "__main__":
    main()

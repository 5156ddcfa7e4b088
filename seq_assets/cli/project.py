"""``seqctl init DIR``: a new definitions project for a team's own repository.

It writes a definitions module (an example source, event type and feature, valid as written), an
empty version lock beside it, the landing folder of the example source and a README saying how to
validate, land data, run Dagster and serve.
"""

from __future__ import annotations

import json
import keyword
from pathlib import Path

from signal_defs import loader, templates

_README = """# Sequence definitions

`{module}.py` holds every definition of this project: sources, enrichments, event types and
sequence features, listed in its `REGISTRY`. `{lock}` beside it records the output hash of each
production feature version; a change to what a production feature produces needs a new `version`.
Start a new definition from a template: `seqctl defs new source|event-type|feature NAME`.

Every command below runs in this folder with these settings:

```bash
export SEQ_DEFS_MODULE={module}            # the definitions: {module}.py in the current directory
export SEQ_LANDING_DIR=$PWD/landing        # where batch files land
export SEQ_LAKE_URI=$PWD/lake              # where the Delta tables are written
export DAGSTER_HOME=$PWD/.dagster_home     # Dagster's runs and schedules
```

## Validate and compile

```bash
seqctl defs validate                       # every problem names the definition and the field
seqctl defs compile --out compiled         # one JSON per definition plus index.json; updates {lock}
seqctl defs diff compiled                  # what changed since that compile
```

## Land data

A batch source's records land as JSON lines, one object per line with the source's schema, grouped
by the day they arrived:

```
landing/<batch_location>/arrival_date=YYYY-MM-DD/*.jsonl
landing/{batch_location}/arrival_date=2026-01-01/part-0.jsonl
```

for example `{example}`. A lookup enrichment's daily snapshots land as
`landing/<snapshot_location>/date=YYYY-MM-DD/*.parquet`. The stream reads the source's Kafka
topic (`SEQ_KAFKA_BOOTSTRAP`, default 127.0.0.1:9092).

## Run and serve

```bash
mkdir -p "$DAGSTER_HOME"
dagster dev -m seq_assets.definitions      # assets, checks, schedules and sensors: http://127.0.0.1:3000
seqctl serve                               # the serving API: http://127.0.0.1:8000/v1/features
```
"""

_EXAMPLE_RECORD = {"rating_id": "r-1", "member_id": 42, "title_id": 7, "stars": 4,
                   "rated_at": 1767225600000, "device": "tv"}


def init_project(target: str | Path, module: str = "seq_defs") -> list[Path]:
    """Write a new definitions project into ``target`` (absent or empty); return the paths written."""
    if not module.isidentifier() or keyword.iskeyword(module):
        raise ValueError(f"--module {module!r} is not a valid Python module name")
    root = Path(target)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not empty; give a new or empty folder")
    landing = root / "landing" / templates.EXAMPLE_SOURCE
    landing.mkdir(parents=True, exist_ok=True)
    files = {
        root / f"{module}.py": templates.project_module(module),
        root / loader.LOCK_FILE: "{}\n",
        root / "README.md": _README.format(module=module, lock=loader.LOCK_FILE, batch_location=templates.EXAMPLE_SOURCE,
                                           example=json.dumps(_EXAMPLE_RECORD)),
    }
    for path, text in files.items():
        path.write_text(text)
    return [*files, landing]


def cmd_init(args) -> int:
    written = init_project(args.dir, args.module)
    for path in written:
        print(f"wrote {path}{'/' if path.is_dir() else ''}")
    print(f"next: cd {args.dir} && SEQ_DEFS_MODULE={args.module} seqctl defs validate")
    return 0


def add_init_command(sub) -> None:
    p = sub.add_parser("init", help="start a definitions project in DIR (a module, its version lock, "
                                    "a landing folder and a README)")
    p.add_argument("dir", help="a new or empty folder")
    p.add_argument("--module", default="seq_defs", help="name of the definitions module (default seq_defs)")
    p.set_defaults(fn=cmd_init)

"""``seqctl``: the command line. One module per command group: ``defs``, ``project`` (init),
``batch`` (demo data and materialize), ``stream`` (broker and produce), ``serve``, ``analysis``
(sql, show, report, compare) and ``maintain``."""

from __future__ import annotations

import argparse
import sys

# ---- entry -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from seq_assets.cli.analysis import add_analysis_commands
    from seq_assets.cli.batch import add_batch_commands
    from seq_assets.cli.defs import add_defs_commands
    from seq_assets.cli.maintain import add_maintain_command
    from seq_assets.cli.project import add_init_command
    from seq_assets.cli.serve import add_serve_command
    from seq_assets.cli.stream import add_broker_commands

    p = argparse.ArgumentParser(prog="seqctl", description="User-sequence platform command line.")
    sub = p.add_subparsers(dest="command", required=True)
    add_defs_commands(sub)  # seqctl defs validate|compile|diff|new
    add_init_command(sub)  # seqctl init DIR
    add_batch_commands(sub)  # seqctl demo-data, seqctl materialize
    add_broker_commands(sub)  # seqctl broker, seqctl produce
    add_serve_command(sub)  # seqctl serve
    add_analysis_commands(sub)  # seqctl sql, show, report, compare
    add_maintain_command(sub)  # seqctl maintain
    return p


def main(argv: list[str] | None = None) -> int:
    from signal_defs.validate import DefinitionError, DefinitionErrors

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except (DefinitionErrors, DefinitionError) as e:
        print(str(e), file=sys.stderr)
        return 2
    except (ValueError, KeyError, FileNotFoundError) as e:
        # A bad argument (unknown table, day, path): one line, not a traceback.
        print(f"seqctl {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The warm run launcher, under the name Dagster instance settings use:

    run_launcher:
      module: seq_assets.launcher
      class: WarmRunLauncher

It lives in ``seq_assets.orchestration.launcher``; this module keeps the public import path.
"""

from seq_assets.orchestration.launcher import WarmRunLauncher  # noqa: F401

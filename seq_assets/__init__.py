"""The engine, lake and Dagster assets of the user-sequence platform."""

import warnings

# Backfill policies are marked beta in Dagster 1.13; the single-run policy is what backfills need.
warnings.filterwarnings("ignore", message=r".*backfill_policy.*", category=Warning)

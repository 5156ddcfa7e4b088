"""Where a reader looks for the stream sensors: they are built in ``seq_assets.orchestration.sensors``
(one Kafka sensor and one micro-batch job per compiled source), and this package re-exports them,
with the file-count compaction sensor of ``seq_assets.orchestration.maintenance``."""

from seq_assets.orchestration.sensors import (  # noqa: F401
    KafkaResource,
    partition_groups,
    plan_ranges,
    sensor_defs,
    stream_defs,
    topic_epoch,
)
from seq_assets.orchestration.maintenance import compact_on_file_count  # noqa: F401

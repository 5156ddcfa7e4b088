"""Where a reader looks for the stream sensors: they are built in ``seq_assets.orchestration.sensors``
(one Kafka sensor and one micro-batch job per compiled source), and this package re-exports them."""

from seq_assets.orchestration.sensors import (  # noqa: F401
    KafkaResource,
    plan_ranges,
    sensor_defs,
    stream_defs,
)

-- The batch job a team would write by hand in DuckDB for the demo's engagements feature, the
-- baseline bench/batch.py measures the platform against (bench/handwritten.py runs it).
--
-- Per day, every user's last 500 click / save / close-up events (bots excluded, close-ups held at
-- least 1 s) within 90 days, newest first (ties by event id), each with the day's item embedding
-- and category, as list columns, to Parquet. It knows the demo's field names and types; it has no
-- dead letters (ignore_errors drops a bad line without saying why), no counter enrichment, no
-- second feature, no checks and no Delta tables past its first step.
--
-- Statements are separated by "-- name: <step>" lines; $landing, $raw, $out, $day, $start_ms and
-- $end_ms are filled in by the driver (string.Template).

-- name: settings
SET TimeZone = 'UTC';

-- name: raw
-- Step 1: landing JSON lines -> typed rows, one per event id (the first delivery), with its event
-- day. The driver writes the result to a Delta table partitioned by date.
SELECT * EXCLUDE (arrival_date, filename)
FROM (
    SELECT *, CAST(make_timestamp(ts * 1000) AS DATE) AS date
    FROM read_json('$landing/user_engagements/arrival_date=*/*.jsonl',
                   format = 'newline_delimited', ignore_errors = true, hive_partitioning = true,
                   filename = true,
                   columns = {event_id: 'VARCHAR', user_id: 'BIGINT', action: 'VARCHAR',
                              item_id: 'BIGINT', ts: 'BIGINT', surface: 'VARCHAR',
                              device: 'VARCHAR', country: 'VARCHAR', dwell_ms: 'BIGINT',
                              is_bot: 'BOOLEAN'})
    WHERE event_id IS NOT NULL AND user_id IS NOT NULL AND action IS NOT NULL
      AND item_id IS NOT NULL AND ts IS NOT NULL AND is_bot IS NOT NULL
)
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY arrival_date, filename) = 1;

-- name: events
-- Step 2: the three event types, each event joined with its day's embedding and category
-- snapshots. $raw is the Delta table of step 1, handed to DuckDB as an Arrow dataset.
CREATE OR REPLACE TABLE events AS
SELECT r.event_id, r.user_id, r.ts, r.date,
       CASE r.action WHEN 'click' THEN 'pin_click' WHEN 'save' THEN 'pin_save' ELSE 'pin_closeup' END AS event_type,
       r.item_id, r.surface, r.device, r.country, c.item_category, e.item_embedding
FROM $raw AS r
LEFT JOIN read_parquet('$landing/enrichments/item_embedding/date=*/*.parquet', hive_partitioning = true) AS e
       ON e.item_id = r.item_id AND e.date = r.date
LEFT JOIN read_parquet('$landing/enrichments/item_category/date=*/*.parquet', hive_partitioning = true) AS c
       ON c.item_id = r.item_id AND c.date = r.date
WHERE NOT r.is_bot
  AND (r.action IN ('click', 'save') OR (r.action = 'closeup' AND r.dwell_ms >= 1000));

-- name: sequences
-- Step 3, once per day: each user's last 500 events in the 90 days up to the end of $day.
COPY (
    SELECT user_id, DATE '$day' AS date,
           list(event_id ORDER BY ts DESC, event_id) AS event_id,
           list(ts ORDER BY ts DESC, event_id) AS ts,
           list(event_type ORDER BY ts DESC, event_id) AS event_type,
           list(item_id ORDER BY ts DESC, event_id) AS item_id,
           list(surface ORDER BY ts DESC, event_id) AS surface,
           list(device ORDER BY ts DESC, event_id) AS device,
           list(country ORDER BY ts DESC, event_id) AS country,
           list(item_category ORDER BY ts DESC, event_id) AS item_category,
           list(item_embedding ORDER BY ts DESC, event_id) AS item_embedding
    FROM (
        SELECT * FROM events
        WHERE ts >= $start_ms AND ts < $end_ms
        QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, event_id) <= 500
    )
    GROUP BY user_id
) TO '$out/date=$day/part-0.parquet' (FORMAT parquet, COMPRESSION zstd);

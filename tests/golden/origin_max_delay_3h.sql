WITH "__spine" AS MATERIALIZED (
  SELECT
    ROW_NUMBER() OVER () AS "__row",
    "flight_id",
    "origin",
    CAST((
      "time_hour" + TO_MINUTES("minute") - INTERVAL '2' HOUR
    ) AS TIMESTAMP) AS "__t",
    (
      "dep_delay" IS NULL OR "dep_delay" >= 15
    ) AS "__label",
    CAST((
      "time_hour" + TO_MINUTES("minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT))
    ) AS TIMESTAMP) AS "__label_at"
  FROM "flights"
  WHERE
    (
      NOT CAST((
        "time_hour" + TO_MINUTES("minute") - INTERVAL '2' HOUR
      ) AS TIMESTAMP) IS NULL
    )
    AND (
      NOT (
        "dep_delay" IS NULL OR "dep_delay" >= 15
      ) IS NULL
    )
    AND (
      CAST((
        "time_hour" + TO_MINUTES("minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT))
      ) AS TIMESTAMP) < CAST('9999-01-01 00:00:00' AS TIMESTAMP)
    )
), "__level_1" AS MATERIALIZED (
  SELECT
    "__p".*,
    "__p"."origin" AS "__f_origin"
  FROM "__spine" AS "__p"
), "__agg_0_frame0_10800000000___level_1" AS (
  SELECT
    "__row",
    MAX("__v0") OVER (
      PARTITION BY "__k0", "__part"
      ORDER BY "__at" ASC
      RANGE BETWEEN INTERVAL '3' HOUR PRECEDING AND INTERVAL '1' MICROSECOND PRECEDING
    ) AS "__f_origin_max_delay_3h"
  FROM (
    SELECT
      *,
      (
        EPOCH_US("__at") + 62135596800000000
      ) // 10800000000 - 5753296 + 0 AS "__part"
    FROM (
      SELECT
        "origin" AS "__k0",
        CAST((
          "time_hour" + TO_MINUTES("minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT))
        ) AS TIMESTAMP) AS "__at",
        "dep_delay" AS "__v0",
        CAST(NULL AS BIGINT) AS "__row"
      FROM "flights"
      WHERE
        NOT CAST((
          "time_hour" + TO_MINUTES("minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT))
        ) AS TIMESTAMP) IS NULL
        AND NOT "origin" IS NULL
    ) AS "__rows"
    UNION ALL
    SELECT
      *,
      (
        EPOCH_US("__at") + 62135596800000000
      ) // 10800000000 - 5753296 + 1 AS "__part"
    FROM (
      SELECT
        "origin" AS "__k0",
        CAST((
          "time_hour" + TO_MINUTES("minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT))
        ) AS TIMESTAMP) AS "__at",
        "dep_delay" AS "__v0",
        CAST(NULL AS BIGINT) AS "__row"
      FROM "flights"
      WHERE
        NOT CAST((
          "time_hour" + TO_MINUTES("minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT))
        ) AS TIMESTAMP) IS NULL
        AND NOT "origin" IS NULL
    ) AS "__rows"
    UNION ALL
    SELECT
      "__p"."__f_origin" AS "__k0",
      "__p"."__t" AS "__at",
      NULL AS "__v0",
      "__p"."__row" AS "__row",
      (
        EPOCH_US("__p"."__t") + 62135596800000000
      ) // 10800000000 - 5753296 AS "__part"
    FROM "__level_1" AS "__p"
  ) AS "__stream"
  QUALIFY
    NOT "__row" IS NULL
), "__agg_0_probe_2" AS (
  SELECT
    "__p"."__row",
    "__agg_0_frame0_10800000000___level_1"."__f_origin_max_delay_3h" AS "__f_origin_max_delay_3h"
  FROM (
    SELECT
      "__row",
      "__t",
      "__f_origin"
    FROM "__level_1"
  ) AS "__p"
  LEFT JOIN "__agg_0_frame0_10800000000___level_1"
    ON "__agg_0_frame0_10800000000___level_1"."__row" = "__p"."__row"
), "__level_2" AS MATERIALIZED (
  SELECT
    "__p".*,
    "__agg_0_probe_2"."__f_origin_max_delay_3h"
  FROM "__level_1" AS "__p"
  LEFT JOIN "__agg_0_probe_2"
    ON "__agg_0_probe_2"."__row" = "__p"."__row"
)
SELECT
  "flight_id",
  "__t" AS "prediction_time",
  "__label" AS "label",
  "__label_at" AS "label_available_at",
  "__f_origin" AS "origin",
  "__f_origin_max_delay_3h" AS "origin_max_delay_3h"
FROM "__level_2"
ORDER BY
  "__t",
  "flight_id",
  "__row"

WITH "__spine" AS MATERIALIZED (
  SELECT
    ROW_NUMBER() OVER () AS "__row",
    "flight_id",
    "origin",
    CAST((
      "time_hour" + (
        "minute"
      ) * INTERVAL '1 MINUTE' - INTERVAL '2 HOUR'
    ) AS TIMESTAMP) AS "__t",
    (
      "dep_delay" IS NULL OR "dep_delay" >= 15
    ) AS "__label",
    CAST((
      "time_hour" + (
        "minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT)
      ) * INTERVAL '1 MINUTE'
    ) AS TIMESTAMP) AS "__label_at"
  FROM "flights"
  WHERE
    (
      NOT CAST((
        "time_hour" + (
          "minute"
        ) * INTERVAL '1 MINUTE' - INTERVAL '2 HOUR'
      ) AS TIMESTAMP) IS NULL
    )
    AND (
      NOT (
        "dep_delay" IS NULL OR "dep_delay" >= 15
      ) IS NULL
    )
    AND (
      CAST((
        "time_hour" + (
          "minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT)
        ) * INTERVAL '1 MINUTE'
      ) AS TIMESTAMP) < CAST('9999-01-01 00:00:00' AS TIMESTAMP)
    )
), "__level_1" AS MATERIALIZED (
  SELECT
    "__p".*,
    "__p"."origin" AS "__f_origin"
  FROM "__spine" AS "__p"
), "__agg_0_frame0_all___level_1" AS (
  SELECT
    "__row",
    "__t",
    "__f_origin",
    "__f_origin_delayed_3h"
  FROM (
    SELECT
      "__row",
      "__at" AS "__t",
      "__k0" AS "__f_origin",
      CAST(COUNT("__v0") OVER (
        PARTITION BY "__k0"
        ORDER BY CAST(EXTRACT(EPOCH FROM "__at") * 1000000 AS BIGINT) ASC
        RANGE BETWEEN 10800000000 PRECEDING AND 1 PRECEDING
      ) AS BIGINT) AS "__f_origin_delayed_3h"
    FROM (
      SELECT
        "origin" AS "__k0",
        CAST((
          "time_hour" + (
            "minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT)
          ) * INTERVAL '1 MINUTE'
        ) AS TIMESTAMP) AS "__at",
        (
          CASE WHEN (
            "dep_delay" >= 15
          ) THEN 1 END
        ) AS "__v0",
        CAST(NULL AS BIGINT) AS "__row",
        1 AS "__one"
      FROM "flights"
      WHERE
        NOT CAST((
          "time_hour" + (
            "minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT)
          ) * INTERVAL '1 MINUTE'
        ) AS TIMESTAMP) IS NULL
        AND NOT "origin" IS NULL
      UNION ALL
      SELECT
        "__p"."__f_origin" AS "__k0",
        "__p"."__t" AS "__at",
        NULL AS "__v0",
        "__p"."__row" AS "__row",
        NULL AS "__one"
      FROM "__level_1" AS "__p"
    ) AS "__stream"
  ) AS "_t"
  WHERE
    NOT "__row" IS NULL
), "__agg_0_probe_2" AS (
  SELECT
    "__p"."__row",
    "__p"."__f_origin_delayed_3h" AS "__f_origin_delayed_3h"
  FROM "__agg_0_frame0_all___level_1" AS "__p"
), "__level_2" AS MATERIALIZED (
  SELECT
    "__p".*,
    "__agg_0_probe_2"."__f_origin_delayed_3h"
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
  "__f_origin_delayed_3h" AS "origin_delayed_3h"
FROM "__level_2"
ORDER BY
  "__t",
  "flight_id",
  "__row"

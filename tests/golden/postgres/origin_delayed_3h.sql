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
), "__agg_0_totals" AS (
  SELECT
    "__k0",
    "__at",
    SUM("__c0") OVER (
      PARTITION BY "__k0"
      ORDER BY "__at" ASC
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS "__c0"
  FROM (
    SELECT
      "origin" AS "__k0",
      CAST((
        "time_hour" + (
          "minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT)
        ) * INTERVAL '1 MINUTE'
      ) AS TIMESTAMP) AS "__at",
      COUNT((
        CASE WHEN (
          "dep_delay" >= 15
        ) THEN 1 END
      )) AS "__c0"
    FROM "flights"
    WHERE
      NOT CAST((
        "time_hour" + (
          "minute" + CAST(COALESCE("dep_delay", 0) AS BIGINT)
        ) * INTERVAL '1 MINUTE'
      ) AS TIMESTAMP) IS NULL
      AND NOT "origin" IS NULL
    GROUP BY
      "__k0",
      "__at"
  ) AS "__per_time"
), "__level_1" AS MATERIALIZED (
  SELECT
    "__p".*,
    "__p"."origin" AS "__f_origin"
  FROM "__spine" AS "__p"
), "__agg_0_probe_2" AS (
  SELECT
    "__p"."__row",
    CAST(COALESCE("__agg_0_at0___level_1"."__c0", 0) - COALESCE("__agg_0_at1___level_1"."__c0", 0) AS BIGINT) AS "__f_origin_delayed_3h"
  FROM (
    SELECT
      "__row",
      "__t",
      "__f_origin"
    FROM "__level_1"
  ) AS "__p"
  LEFT JOIN (
    SELECT
      "__row",
      "__m"
    FROM (
      SELECT
        "__row",
        "__side",
        MAX(CASE WHEN "__side" = 1 THEN "__at" END) OVER (
          PARTITION BY "__e0"
          ORDER BY "__at", "__side"
          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS "__m"
      FROM (
        SELECT
          "__p"."__row" AS "__row",
          "__p"."__f_origin" AS "__e0",
          "__p"."__t" AS "__at",
          0 AS "__side"
        FROM (
          SELECT
            "__row",
            "__t",
            "__f_origin"
          FROM "__level_1"
        ) AS "__p"
        UNION ALL
        SELECT
          CAST(NULL AS BIGINT) AS "__row",
          "__k0" AS "__e0",
          "__at" AS "__at",
          1 AS "__side"
        FROM "__agg_0_totals"
        WHERE
          NOT "__k0" IS NULL
      ) AS "__stream"
    ) AS "__marked"
    WHERE
      "__side" = 0
  ) AS "__agg_0_at0___level_1__match"
    ON "__agg_0_at0___level_1__match"."__row" = "__p"."__row"
  LEFT JOIN "__agg_0_totals" AS "__agg_0_at0___level_1"
    ON (
      "__agg_0_at0___level_1"."__k0" = "__p"."__f_origin"
    )
    AND (
      "__agg_0_at0___level_1"."__at" = "__agg_0_at0___level_1__match"."__m"
    )
  LEFT JOIN (
    SELECT
      "__row",
      "__m"
    FROM (
      SELECT
        "__row",
        "__side",
        MAX(CASE WHEN "__side" = 1 THEN "__at" END) OVER (
          PARTITION BY "__e0"
          ORDER BY "__at", "__side"
          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS "__m"
      FROM (
        SELECT
          "__p"."__row" AS "__row",
          "__p"."__f_origin" AS "__e0",
          "__p"."__t" - INTERVAL '3 HOUR' AS "__at",
          0 AS "__side"
        FROM (
          SELECT
            "__row",
            "__t",
            "__f_origin"
          FROM "__level_1"
        ) AS "__p"
        UNION ALL
        SELECT
          CAST(NULL AS BIGINT) AS "__row",
          "__k0" AS "__e0",
          "__at" AS "__at",
          1 AS "__side"
        FROM "__agg_0_totals"
        WHERE
          NOT "__k0" IS NULL
      ) AS "__stream"
    ) AS "__marked"
    WHERE
      "__side" = 0
  ) AS "__agg_0_at1___level_1__match"
    ON "__agg_0_at1___level_1__match"."__row" = "__p"."__row"
  LEFT JOIN "__agg_0_totals" AS "__agg_0_at1___level_1"
    ON (
      "__agg_0_at1___level_1"."__k0" = "__p"."__f_origin"
    )
    AND (
      "__agg_0_at1___level_1"."__at" = "__agg_0_at1___level_1__match"."__m"
    )
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

WITH `__spine` AS (
  SELECT
    MONOTONICALLY_INCREASING_ID() AS `__row`,
    `flight_id`,
    `origin`,
    CAST((
      `time_hour` + (
        `minute`
      ) * INTERVAL '1' MINUTE - INTERVAL '2' HOUR
    ) AS TIMESTAMP) AS `__t`,
    (
      `dep_delay` IS NULL OR `dep_delay` >= 15
    ) AS `__label`,
    CAST((
      `time_hour` + (
        `minute` + CAST(COALESCE(`dep_delay`, 0) AS BIGINT)
      ) * INTERVAL '1' MINUTE
    ) AS TIMESTAMP) AS `__label_at`
  FROM `flights`
  WHERE
    (
      NOT CAST((
        `time_hour` + (
          `minute`
        ) * INTERVAL '1' MINUTE - INTERVAL '2' HOUR
      ) AS TIMESTAMP) IS NULL
    )
    AND (
      NOT (
        `dep_delay` IS NULL OR `dep_delay` >= 15
      ) IS NULL
    )
    AND (
      CAST((
        `time_hour` + (
          `minute` + CAST(COALESCE(`dep_delay`, 0) AS BIGINT)
        ) * INTERVAL '1' MINUTE
      ) AS TIMESTAMP) < CAST('9999-01-01 00:00:00' AS TIMESTAMP)
    )
), `__level_1` AS (
  SELECT
    `__p`.*,
    `__p`.`origin` AS `__f_origin`
  FROM `__spine` AS `__p`
), `__asof_2_0` AS (
  SELECT
    `__k0`,
    `__at`,
    MAX(`__v0`) AS `__v0`
  FROM (
    SELECT
      `origin` AS `__k0`,
      CAST(`time_hour` AS TIMESTAMP) AS `__at`,
      `temp` AS `__v0`
    FROM `weather`
    WHERE
      NOT CAST(`time_hour` AS TIMESTAMP) IS NULL
  ) AS `__rows`
  GROUP BY
    `__k0`,
    `__at`
), `__asof_2_0_probe` AS (
  SELECT
    `__p`.`__q`.`__row`,
    CASE
      WHEN `__p`.`__m`.`__at` >= `__p`.`__q`.`__t` - INTERVAL '3' HOUR
      THEN `__p`.`__m`.`__v0`
    END AS `__f_origin_temp`
  FROM (
    SELECT
      `__row`,
      `__q`,
      `__m`
    FROM (
      SELECT
        `__row`,
        `__q`,
        `__side`,
        LAST(`__m`) IGNORE NULLS OVER (
          PARTITION BY `__e0`
          ORDER BY `__at` NULLS LAST, `__side` NULLS LAST
          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS `__m`
      FROM (
        SELECT
          `__p`.`__row` AS `__row`,
          `__p`.`__f_origin` AS `__e0`,
          `__p`.`__t` AS `__at`,
          0 AS `__side`,
          NULL AS `__m`,
          STRUCT(`__p`.`__row` AS `__row`, `__p`.`__t` AS `__t`) AS `__q`
        FROM (
          SELECT
            `__row`,
            `__t`,
            `__f_origin`
          FROM `__level_1`
        ) AS `__p`
        UNION ALL
        SELECT
          CAST(NULL AS BIGINT) AS `__row`,
          `__k0` AS `__e0`,
          `__at` AS `__at`,
          1 AS `__side`,
          STRUCT(`__at` AS `__at`, `__v0` AS `__v0`) AS `__m`,
          NULL AS `__q`
        FROM `__asof_2_0`
        WHERE
          NOT `__k0` IS NULL
      ) AS `__stream`
    ) AS `__marked`
    WHERE
      `__side` = 0
  ) AS `__p`
), `__level_2` AS (
  SELECT
    `__p`.*,
    `__asof_2_0_probe`.`__f_origin_temp`
  FROM `__level_1` AS `__p`
  LEFT JOIN `__asof_2_0_probe`
    ON `__asof_2_0_probe`.`__row` = `__p`.`__row`
)
SELECT
  `flight_id`,
  `__t` AS `prediction_time`,
  `__label` AS `label`,
  `__label_at` AS `label_available_at`,
  `__f_origin` AS `origin`,
  `__f_origin_temp` AS `origin_temp`
FROM `__level_2`
ORDER BY
  `__t`,
  `flight_id`,
  `__row`

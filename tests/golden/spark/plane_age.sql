WITH `__spine` AS (
  SELECT
    MONOTONICALLY_INCREASING_ID() AS `__row`,
    `flight_id`,
    `tailnum`,
    `year`,
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
    `__lookup_1_0`.`__v0` AS `__f_plane_year`
  FROM `__spine` AS `__p`
  LEFT JOIN (
    SELECT
      `tailnum` AS `__k0`,
      `year` AS `__v0`
    FROM `planes`
  ) AS `__lookup_1_0`
    ON (
      `__lookup_1_0`.`__k0` = `__p`.`tailnum`
    )
), `__level_2` AS (
  SELECT
    `__p`.*,
    (
      `__p`.`year` - `__p`.`__f_plane_year`
    ) AS `__f_plane_age`
  FROM `__level_1` AS `__p`
)
SELECT
  `flight_id`,
  `__t` AS `prediction_time`,
  `__label` AS `label`,
  `__label_at` AS `label_available_at`,
  `__f_plane_year` AS `plane_year`,
  `__f_plane_age` AS `plane_age`
FROM `__level_2`
ORDER BY
  `__t`,
  `flight_id`,
  `__row`

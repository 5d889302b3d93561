"""The server-side bulk generation of the sample platform: subjects, visits, observations
and adverse events, as ``INSERT ... SELECT`` statements over ``generate_series``.

Keys for ``pg_temp.rnd``: a subject's is study_id * 1e6 + its number in the study, a visit's
its id, an observation's visit_id * 64 + test order. Salts pick independent draws per key.
OFFSET 0 keeps the planner from inlining a subquery and evaluating its draws twice.
"""

from __future__ import annotations

from typing import Final

SUBJECTS_SQL: Final = """
INSERT INTO subjects (study_id, site_id, subject_number, sex, birth_year, arm, status,
                      enrolled_on, withdrawn_on, demographics, created_at, updated_at)
SELECT study_id, site_id, subject_number, sex, birth_year, arm, status, enrolled_on,
       CASE WHEN status = 'withdrawn'
            THEN greatest(enrolled_on, least(%(as_of)s::date,
                          enrolled_on + 30 + floor(pg_temp.rnd(k, 9) * 300)::int))
       END,
       demographics,
       (enrolled_on + time '09:00')::timestamp AT TIME ZONE 'UTC'
           + make_interval(mins => floor(pg_temp.rnd(k, 10) * 480)::int),
       (enrolled_on + time '09:00')::timestamp AT TIME ZONE 'UTC'
           + make_interval(mins => floor(pg_temp.rnd(k, 10) * 480)::int)
FROM (
    SELECT x.*,
           x.site_numbers[x.site_pick] || '-' || lpad(x.n::text, 4, '0') AS subject_number,
           x.site_ids[x.site_pick] AS site_id,
           CASE WHEN x.r_sex < 0.49 THEN 'F' WHEN x.r_sex < 0.985 THEN 'M' ELSE 'U' END AS sex,
           (1940 + floor(pg_temp.rnd(x.k, 3) * 62))::smallint AS birth_year,
           x.arms[1 + floor(pg_temp.rnd(x.k, 4) * cardinality(x.arms))::int] AS arm,
           (CASE WHEN x.r_status < 0.05 THEN 'screen_failed'
                WHEN x.r_status < 0.14 THEN 'withdrawn'
                WHEN x.study_status IN ('completed', 'terminated') THEN 'completed'
                WHEN x.r_status < 0.20 THEN 'screening'
                ELSE 'enrolled' END)::subject_status AS status,
           x.start_date + floor(pg_temp.rnd(x.k, 6)
               * least(540, %(as_of)s::date - x.start_date + 1))::int AS enrolled_on,
           jsonb_build_object(
               'race', (ARRAY['White', 'Black or African American', 'Asian',
                              'American Indian or Alaska Native', 'Other', 'Not reported'])
                       [1 + floor(pg_temp.rnd(x.k, 7) * 6)::int],
               'weight_kg', round((48 + pg_temp.rnd(x.k, 8) * 70)::numeric, 1),
               'height_cm', 150 + floor(pg_temp.rnd(x.k, 11) * 45)::int,
               'smoker', pg_temp.rnd(x.k, 12) < 0.2) AS demographics
    FROM (
        SELECT e.study_id, g.n, st.arms, st.status AS study_status, st.start_date,
               sa.ids AS site_ids, sa.numbers AS site_numbers,
               e.study_id * 1000000 + g.n AS k,
               1 + floor(pg_temp.rnd(e.study_id * 1000000 + g.n, 1)
                         * cardinality(sa.ids))::int AS site_pick,
               pg_temp.rnd(e.study_id * 1000000 + g.n, 2) AS r_sex,
               pg_temp.rnd(e.study_id * 1000000 + g.n, 5) AS r_status
        FROM pg_temp.demo_enrollment e
        JOIN studies st ON st.id = e.study_id
        JOIN (SELECT study_id, array_agg(id ORDER BY id) AS ids,
                     array_agg(site_number ORDER BY id) AS numbers
              FROM sites GROUP BY study_id) sa ON sa.study_id = e.study_id
        CROSS JOIN LATERAL generate_series(1, e.subjects) AS g(n)
        OFFSET 0
    ) x
    OFFSET 0
) s
ORDER BY study_id, k
"""

VISITS_SQL: Final = """
INSERT INTO visits (subject_id, visit_number, visit_name, scheduled_date, visit_date, status,
                    created_at, updated_at)
SELECT subject_id, n, visit_name, scheduled_date,
       CASE WHEN status = 'completed' THEN visit_date END, status, created_at,
       CASE WHEN status = 'completed'
            THEN (visit_date + time '17:00')::timestamp AT TIME ZONE 'UTC'
            ELSE created_at END
FROM (
    SELECT v.*,
           CASE WHEN v.visit_date > %(as_of)s::date THEN 'scheduled'
                WHEN v.n > 1 AND pg_temp.rnd(v.subject_id * 32 + v.n, 22) < 0.04 THEN 'missed'
                ELSE 'completed' END AS status
    FROM (
        SELECT s.id AS subject_id, g.n::smallint AS n, s.created_at,
               CASE g.n WHEN 1 THEN 'Screening' WHEN 2 THEN 'Baseline'
                        ELSE 'Week ' || (4 * (g.n - 2)) END AS visit_name,
               s.enrolled_on + CASE WHEN g.n = 1 THEN 0 ELSE 14 + 28 * (g.n - 2) END
                   AS scheduled_date,
               s.enrolled_on + CASE WHEN g.n = 1 THEN 0 ELSE 14 + 28 * (g.n - 2) END
                   + CASE WHEN g.n = 1 THEN 0
                          ELSE floor(pg_temp.rnd(s.id * 32 + g.n, 21) * 7)::int - 3 END
                   AS visit_date
        FROM subjects s
        CROSS JOIN LATERAL generate_series(1,
            CASE WHEN s.status IN ('screen_failed', 'screening') THEN 1
                 WHEN s.status = 'withdrawn' THEN 2 + floor(pg_temp.rnd(s.id, 20) * 4)::int
                 ELSE 6 + floor(pg_temp.rnd(s.id, 20) * 9)::int END) AS g(n)
        OFFSET 0
    ) v
    OFFSET 0
) w
ORDER BY subject_id, n
"""

OBSERVATIONS_SQL: Final = """
INSERT INTO observations (visit_id, lab_test_code, status, value_numeric, unit, reference_low,
                          reference_high, flag, collected_at, resulted_at, created_at,
                          updated_at)
SELECT visit_id, code, status, value::numeric(12, 3), unit, reference_low, reference_high,
       (CASE WHEN value IS NULL THEN NULL
            WHEN value < critical_low THEN 'critical_low'
            WHEN value < lo THEN 'low'
            WHEN value > critical_high THEN 'critical_high'
            WHEN value > hi THEN 'high'
            ELSE 'normal' END)::lab_flag,
       collected_at, resulted_at,
       coalesce(resulted_at, collected_at),
       coalesce(resulted_at, collected_at)
           + CASE WHEN status = 'corrected' THEN interval '3 days' ELSE interval '0' END
FROM (
    SELECT o.*,
           -- double precision, rounded to the test's decimals: numeric maths is far slower
           CASE WHEN o.status <> 'not_done'
                THEN round(greatest(0, (o.lo + o.hi) / 2 + (o.hi - o.lo) / 4 * o.z * o.spread)
                           * o.unit_scale) / o.unit_scale END AS value,
           CASE WHEN o.status <> 'not_done' THEN o.collected_at
                    + make_interval(mins => 120 + floor(pg_temp.rnd(o.k, 32) * 2880)::int)
                END AS resulted_at
    FROM (
        SELECT v.id AS visit_id, t.*, key.k,
               CASE WHEN pg_temp.rnd(key.k, 36) < 0.01 THEN 'not_done'
                    WHEN pg_temp.rnd(key.k, 37) < 0.005 THEN 'corrected'
                    ELSE 'final' END AS status,
               sqrt(-2 * ln(1 - pg_temp.rnd(key.k, 33)))
                   * cos(2 * pi() * pg_temp.rnd(key.k, 34)) AS z,
               CASE WHEN pg_temp.rnd(key.k, 35) < 0.03 THEN 2.5 ELSE 1 END AS spread,
               (v.visit_date + time '07:30')::timestamp AT TIME ZONE 'UTC'
                   + make_interval(mins => floor(pg_temp.rnd(v.id, 31) * 240)::int)
                   AS collected_at
        FROM visits v
        CROSS JOIN (
            -- Per test, once: limits in double precision, computed exactly in numeric first.
            SELECT code, display_order, unit, routine, reference_low, reference_high,
                   reference_low::double precision AS lo,
                   reference_high::double precision AS hi,
                   (reference_low - (reference_high - reference_low) / 2)::double precision
                       AS critical_low,
                   (reference_high + (reference_high - reference_low) / 2)::double precision
                       AS critical_high,
                   power(10, decimals)::double precision AS unit_scale
            FROM lab_tests
            OFFSET 0
        ) AS t
        CROSS JOIN LATERAL (SELECT v.id * 64 + t.display_order AS k) AS key
        WHERE v.id BETWEEN %(low)s AND %(high)s AND v.status = 'completed'
          AND pg_temp.rnd(key.k, 30) < CASE WHEN t.routine THEN 0.93 ELSE 0.3 END
        OFFSET 0
    ) o
    OFFSET 0
) r
ORDER BY visit_id, display_order
"""

ADVERSE_EVENTS_SQL: Final = """
INSERT INTO adverse_events (subject_id, term, meddra_code, severity, serious,
                            related_to_treatment, onset_date, resolved_date, outcome,
                            reported_at, created_at, updated_at)
SELECT subject_id, (%(terms)s::text[])[pick], (%(codes)s::text[])[pick], severity,
       severity >= 'severe' OR r_serious < 0.03, r_related < 0.35, onset_date,
       CASE WHEN severity <> 'fatal' AND r_resolved >= 0.15
            THEN onset_date + 1 + floor(r_resolved * 60)::int END,
       CASE WHEN severity = 'fatal' THEN 'fatal'
            WHEN r_resolved < 0.05 THEN 'not_recovered'
            WHEN r_resolved < 0.15 THEN 'recovering'
            WHEN r_resolved < 0.18 THEN 'sequelae'
            ELSE 'recovered' END,
       reported_at, reported_at, reported_at
FROM (
    SELECT a.*,
           (a.onset_date + time '10:00')::timestamp AT TIME ZONE 'UTC'
               + make_interval(hours => 24 + floor(pg_temp.rnd(a.k, 46) * 72)::int)
               AS reported_at
    FROM (
        SELECT s.id AS subject_id, g.n, s.id * 8 + g.n AS k,
               1 + floor(pg_temp.rnd(s.id * 8 + g.n, 41)
                         * cardinality(%(terms)s::text[]))::int AS pick,
               (CASE WHEN pg_temp.rnd(s.id * 8 + g.n, 42) < 0.55 THEN 'mild'
                     WHEN pg_temp.rnd(s.id * 8 + g.n, 42) < 0.85 THEN 'moderate'
                     WHEN pg_temp.rnd(s.id * 8 + g.n, 42) < 0.97 THEN 'severe'
                     WHEN pg_temp.rnd(s.id * 8 + g.n, 42) < 0.995 THEN 'life_threatening'
                     ELSE 'fatal' END)::ae_severity AS severity,
               pg_temp.rnd(s.id * 8 + g.n, 43) AS r_serious,
               pg_temp.rnd(s.id * 8 + g.n, 44) AS r_related,
               pg_temp.rnd(s.id * 8 + g.n, 45) AS r_resolved,
               least(%(as_of)s::date, s.enrolled_on + 1
                     + floor(pg_temp.rnd(s.id * 8 + g.n, 47) * 360)::int) AS onset_date
        FROM subjects s
        CROSS JOIN LATERAL generate_series(1, floor(pg_temp.rnd(s.id, 40) * 4)::int) AS g(n)
        WHERE s.status <> 'screen_failed'
        OFFSET 0
    ) a
    OFFSET 0
) e
ORDER BY subject_id, n
"""

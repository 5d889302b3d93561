"""DDL of the sample clinical platform: what a real study dashboard's database looks like.

The schema is split the way ``pg_restore`` splits it, because that is the fast way to load:
tables with their keys and checks first, then the data, then foreign keys and secondary
indexes (one validation scan and one sorted index build instead of a lookup per row).

Ownership is expressed only through foreign keys, because ClinVault discovers the scope of a
study or organization from them (child -> parent, all ``ON DELETE CASCADE`` unless noted):

    users             -> organizations
    studies           -> organizations
    study_memberships -> studies, users
    sites             -> studies
    subjects          -> studies, sites
    visits            -> subjects
    observations      -> visits, lab_tests (no cascade)
    adverse_events    -> subjects
    documents         -> organizations, studies (NULL for organization uploads),
                         subjects (nullable), users (``uploaded_by``, SET NULL)

``lab_tests`` is a global reference catalog: referenced by observations, owned by nobody.

Every table that has ``updated_at`` gets a ``BEFORE UPDATE`` trigger that sets it, as real
platforms do; inserts (and so this generator) are not affected.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg
from psycopg import sql

SCHEMA: Final = "public"

# Dependency order: a table appears after every table it references.
TABLES: Final[tuple[str, ...]] = (
    "organizations",
    "users",
    "lab_tests",
    "studies",
    "study_memberships",
    "sites",
    "subjects",
    "visits",
    "observations",
    "adverse_events",
    "documents",
)

TYPES: Final[tuple[str, ...]] = (
    "study_phase",
    "study_status",
    "subject_status",
    "user_role",
    "ae_severity",
    "lab_flag",
)

TYPES_SQL: Final = """
CREATE TYPE study_phase AS ENUM ('phase_1', 'phase_2', 'phase_3', 'phase_4', 'observational');
CREATE TYPE study_status AS ENUM ('planned', 'recruiting', 'active', 'completed', 'terminated');
CREATE TYPE subject_status AS ENUM
    ('screening', 'screen_failed', 'enrolled', 'completed', 'withdrawn');
CREATE TYPE user_role AS ENUM
    ('sponsor_admin', 'study_manager', 'data_manager', 'monitor', 'investigator',
     'coordinator', 'viewer');
CREATE TYPE ae_severity AS ENUM ('mild', 'moderate', 'severe', 'life_threatening', 'fatal');
CREATE TYPE lab_flag AS ENUM ('normal', 'low', 'high', 'critical_low', 'critical_high');
"""

TABLES_SQL: Final = """
CREATE TABLE organizations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (code ~ '^ORG-[0-9]{3}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 2 AND 200),
    country char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id bigint NOT NULL,
    email text NOT NULL UNIQUE CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    full_name text NOT NULL,
    role user_role NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    last_login_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE lab_tests (
    code text PRIMARY KEY CHECK (code ~ '^[A-Z0-9]{1,10}$'),
    name text NOT NULL,
    loinc_code text NOT NULL UNIQUE,
    specimen text NOT NULL CHECK (specimen IN ('blood', 'serum', 'plasma', 'urine')),
    unit text NOT NULL,
    reference_low numeric(12, 3) NOT NULL,
    reference_high numeric(12, 3) NOT NULL,
    decimals smallint NOT NULL CHECK (decimals BETWEEN 0 AND 3),
    routine boolean NOT NULL,
    display_order smallint NOT NULL UNIQUE,
    CHECK (reference_low < reference_high)
);

CREATE TABLE studies (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id bigint NOT NULL,
    code text NOT NULL UNIQUE CHECK (code ~ '^STU-[0-9]{4}$'),
    title text NOT NULL,
    phase study_phase NOT NULL,
    status study_status NOT NULL DEFAULT 'planned',
    therapeutic_area text NOT NULL,
    arms text[] NOT NULL CHECK (cardinality(arms) >= 1),
    is_blinded boolean NOT NULL,
    target_enrollment integer NOT NULL CHECK (target_enrollment > 0),
    start_date date NOT NULL,
    end_date date,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (end_date IS NULL OR end_date >= start_date)
);

CREATE TABLE study_memberships (
    study_id bigint NOT NULL,
    user_id bigint NOT NULL,
    role text NOT NULL
        CHECK (role IN ('lead', 'manager', 'monitor', 'investigator', 'coordinator', 'reader')),
    granted_at timestamptz NOT NULL,
    revoked_at timestamptz,
    PRIMARY KEY (study_id, user_id),
    CHECK (revoked_at IS NULL OR revoked_at >= granted_at)
);

CREATE TABLE sites (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_id bigint NOT NULL,
    site_number text NOT NULL CHECK (site_number ~ '^[0-9]{3}$'),
    name text NOT NULL,
    city text NOT NULL,
    country char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    principal_investigator text NOT NULL,
    activated_on date NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (study_id, site_number)
);

CREATE TABLE subjects (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_id bigint NOT NULL,
    site_id bigint NOT NULL,
    subject_number text NOT NULL,
    sex char(1) NOT NULL CHECK (sex IN ('F', 'M', 'U')),
    birth_year smallint NOT NULL CHECK (birth_year BETWEEN 1900 AND 2010),
    arm text NOT NULL,
    status subject_status NOT NULL,
    enrolled_on date NOT NULL,
    withdrawn_on date,
    demographics jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (study_id, subject_number),
    CHECK (withdrawn_on IS NULL OR withdrawn_on >= enrolled_on)
);

CREATE TABLE visits (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id bigint NOT NULL,
    visit_number smallint NOT NULL CHECK (visit_number > 0),
    visit_name text NOT NULL,
    scheduled_date date NOT NULL,
    visit_date date,
    status text NOT NULL CHECK (status IN ('scheduled', 'completed', 'missed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subject_id, visit_number),
    CHECK ((status = 'completed') = (visit_date IS NOT NULL))
);

CREATE TABLE observations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    visit_id bigint NOT NULL,
    lab_test_code text NOT NULL,
    status text NOT NULL CHECK (status IN ('final', 'corrected', 'not_done')),
    value_numeric numeric(12, 3),
    unit text NOT NULL,
    reference_low numeric(12, 3),
    reference_high numeric(12, 3),
    flag lab_flag,
    collected_at timestamptz NOT NULL,
    resulted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (status = 'not_done' OR value_numeric IS NOT NULL),
    CHECK (reference_low IS NULL OR reference_high IS NULL OR reference_low <= reference_high),
    CHECK (resulted_at IS NULL OR resulted_at >= collected_at)
);

CREATE TABLE adverse_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id bigint NOT NULL,
    term text NOT NULL,
    meddra_code text NOT NULL CHECK (meddra_code ~ '^[0-9]{8}$'),
    severity ae_severity NOT NULL,
    serious boolean NOT NULL,
    related_to_treatment boolean NOT NULL,
    onset_date date NOT NULL,
    resolved_date date,
    outcome text NOT NULL
        CHECK (outcome IN ('recovered', 'recovering', 'not_recovered', 'sequelae', 'fatal')),
    reported_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (resolved_date IS NULL OR resolved_date >= onset_date)
);

CREATE TABLE documents (
    id uuid PRIMARY KEY,
    organization_id bigint NOT NULL,
    study_id bigint,
    subject_id bigint,
    uploaded_by bigint,
    category text NOT NULL CHECK (category IN ('protocol', 'amendment', 'metadata',
        'lab_export', 'investigator_cv', 'consent', 'ecg', 'imaging', 'notes', 'scan',
        'report')),
    title text NOT NULL,
    file_name text NOT NULL,
    storage_path text NOT NULL UNIQUE
        CHECK (storage_path !~ '^/' AND storage_path !~ '(^|/)\\.\\.(/|$)'),
    content_type text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    sha256 char(64) NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (subject_id IS NULL OR study_id IS NOT NULL)
);
"""

FUNCTIONS_SQL: Final = """
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
"""

TRIGGERED_TABLES: Final[tuple[str, ...]] = tuple(
    t for t in TABLES if t not in ("lab_tests", "study_memberships")
)

FOREIGN_KEYS_SQL: Final = """
ALTER TABLE users ADD CONSTRAINT users_organization_fk
    FOREIGN KEY (organization_id) REFERENCES organizations (id) ON DELETE CASCADE;
ALTER TABLE studies ADD CONSTRAINT studies_organization_fk
    FOREIGN KEY (organization_id) REFERENCES organizations (id) ON DELETE CASCADE;
ALTER TABLE study_memberships ADD CONSTRAINT study_memberships_study_fk
    FOREIGN KEY (study_id) REFERENCES studies (id) ON DELETE CASCADE;
ALTER TABLE study_memberships ADD CONSTRAINT study_memberships_user_fk
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE sites ADD CONSTRAINT sites_study_fk
    FOREIGN KEY (study_id) REFERENCES studies (id) ON DELETE CASCADE;
ALTER TABLE subjects ADD CONSTRAINT subjects_study_fk
    FOREIGN KEY (study_id) REFERENCES studies (id) ON DELETE CASCADE;
ALTER TABLE subjects ADD CONSTRAINT subjects_site_fk
    FOREIGN KEY (site_id) REFERENCES sites (id) ON DELETE CASCADE;
ALTER TABLE visits ADD CONSTRAINT visits_subject_fk
    FOREIGN KEY (subject_id) REFERENCES subjects (id) ON DELETE CASCADE;
ALTER TABLE observations ADD CONSTRAINT observations_visit_fk
    FOREIGN KEY (visit_id) REFERENCES visits (id) ON DELETE CASCADE;
ALTER TABLE observations ADD CONSTRAINT observations_lab_test_fk
    FOREIGN KEY (lab_test_code) REFERENCES lab_tests (code);
ALTER TABLE adverse_events ADD CONSTRAINT adverse_events_subject_fk
    FOREIGN KEY (subject_id) REFERENCES subjects (id) ON DELETE CASCADE;
ALTER TABLE documents ADD CONSTRAINT documents_organization_fk
    FOREIGN KEY (organization_id) REFERENCES organizations (id) ON DELETE CASCADE;
ALTER TABLE documents ADD CONSTRAINT documents_study_fk
    FOREIGN KEY (study_id) REFERENCES studies (id) ON DELETE CASCADE;
ALTER TABLE documents ADD CONSTRAINT documents_subject_fk
    FOREIGN KEY (subject_id) REFERENCES subjects (id) ON DELETE CASCADE;
ALTER TABLE documents ADD CONSTRAINT documents_uploaded_by_fk
    FOREIGN KEY (uploaded_by) REFERENCES users (id) ON DELETE SET NULL;
"""

INDEXES_SQL: Final = """
CREATE INDEX users_organization_id_idx ON users (organization_id);
CREATE INDEX studies_organization_id_idx ON studies (organization_id);
CREATE INDEX study_memberships_user_id_idx ON study_memberships (user_id);
CREATE INDEX subjects_site_id_idx ON subjects (site_id);
CREATE INDEX visits_visit_date_idx ON visits (visit_date);
CREATE INDEX observations_visit_id_idx ON observations (visit_id);
CREATE INDEX observations_abnormal_idx ON observations (lab_test_code, collected_at)
    WHERE flag <> 'normal';
CREATE INDEX adverse_events_subject_id_idx ON adverse_events (subject_id);
CREATE INDEX adverse_events_serious_idx ON adverse_events (onset_date) WHERE serious;
CREATE INDEX documents_organization_id_idx ON documents (organization_id);
CREATE INDEX documents_study_id_idx ON documents (study_id);
CREATE INDEX documents_subject_id_idx ON documents (subject_id);
CREATE INDEX documents_uploaded_by_idx ON documents (uploaded_by);
"""

VIEWS_SQL: Final = """
CREATE VIEW study_enrollment AS
SELECT st.id AS study_id,
       st.code,
       st.target_enrollment,
       count(su.id) FILTER (WHERE su.status IN ('enrolled', 'completed')) AS enrolled,
       count(su.id) FILTER (WHERE su.status = 'withdrawn') AS withdrawn
FROM studies st
LEFT JOIN subjects su ON su.study_id = st.id
GROUP BY st.id;
"""


def _triggers_sql() -> sql.Composed:
    """One ``BEFORE UPDATE`` trigger per table with ``updated_at``."""
    return sql.SQL("").join(
        sql.SQL(
            "CREATE TRIGGER {trigger} BEFORE UPDATE ON {table}\n"
            "    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();\n"
        ).format(trigger=sql.Identifier(f"{table}_touch_updated_at"), table=sql.Identifier(table))
        for table in TRIGGERED_TABLES
    )


def _set_search_path(cur: psycopg.Cursor[Any]) -> None:
    """Unqualified names in the DDL above mean the demo schema, whatever the server default."""
    cur.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(SCHEMA)))


def create_tables(cur: psycopg.Cursor[Any]) -> None:
    """Create types, tables (keys and checks included), the trigger function and triggers.

    Foreign keys and secondary indexes are left to :func:`create_constraints`, to be run after
    the bulk load.
    """
    _set_search_path(cur)
    for statement in (TYPES_SQL, TABLES_SQL, FUNCTIONS_SQL, VIEWS_SQL):
        cur.execute(statement)
    cur.execute(_triggers_sql())


def create_constraints(cur: psycopg.Cursor[Any]) -> None:
    """Add the foreign keys and secondary indexes (after loading, for speed)."""
    _set_search_path(cur)
    cur.execute(FOREIGN_KEYS_SQL)
    cur.execute(INDEXES_SQL)


def apply_schema(cur: psycopg.Cursor[Any]) -> None:
    """Create the whole, empty schema in one go."""
    create_tables(cur)
    create_constraints(cur)


def drop_schema(cur: psycopg.Cursor[Any]) -> None:
    """Remove every object of the demo schema that exists (used to replace an empty one)."""
    _set_search_path(cur)
    names = sql.SQL(", ").join(map(sql.Identifier, TABLES))
    types = sql.SQL(", ").join(map(sql.Identifier, TYPES))
    cur.execute("DROP VIEW IF EXISTS study_enrollment")
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(names))
    cur.execute("DROP FUNCTION IF EXISTS touch_updated_at() CASCADE")
    cur.execute(sql.SQL("DROP TYPE IF EXISTS {} CASCADE").format(types))


# Reference data that ships with the schema, as a migration would seed it: (code, name, LOINC,
# specimen, unit, reference low, reference high, decimals, routine). Routine tests are drawn at
# almost every visit, the others now and then.
LAB_TESTS: Final[tuple[tuple[str, str, str, str, str, str, str, int, bool], ...]] = (
    ("HGB", "Hemoglobin", "718-7", "blood", "g/dL", "12.0", "17.5", 1, True),
    ("HCT", "Hematocrit", "4544-3", "blood", "%", "36.0", "50.0", 1, True),
    ("RBC", "Erythrocytes", "789-8", "blood", "10^12/L", "4.20", "5.90", 2, True),
    ("WBC", "Leukocytes", "6690-2", "blood", "10^9/L", "4.0", "11.0", 1, True),
    ("NEUT", "Neutrophils", "751-8", "blood", "10^9/L", "1.8", "7.5", 1, True),
    ("LYMPH", "Lymphocytes", "731-0", "blood", "10^9/L", "1.0", "4.0", 1, True),
    ("PLT", "Platelets", "777-3", "blood", "10^9/L", "150", "400", 0, True),
    ("NA", "Sodium", "2951-2", "serum", "mmol/L", "135", "145", 0, True),
    ("K", "Potassium", "2823-3", "serum", "mmol/L", "3.5", "5.1", 1, True),
    ("CL", "Chloride", "2075-0", "serum", "mmol/L", "98", "107", 0, True),
    ("HCO3", "Bicarbonate", "1963-8", "serum", "mmol/L", "22", "29", 0, True),
    ("BUN", "Urea nitrogen", "3094-0", "serum", "mg/dL", "7", "20", 0, True),
    ("CREAT", "Creatinine", "2160-0", "serum", "mg/dL", "0.60", "1.30", 2, True),
    ("GLUC", "Glucose", "2345-7", "serum", "mg/dL", "70", "99", 0, True),
    ("CA", "Calcium", "17861-6", "serum", "mg/dL", "8.6", "10.3", 1, True),
    ("ALT", "Alanine aminotransferase", "1742-6", "serum", "U/L", "7", "56", 0, True),
    ("AST", "Aspartate aminotransferase", "1920-8", "serum", "U/L", "10", "40", 0, True),
    ("ALP", "Alkaline phosphatase", "6768-6", "serum", "U/L", "44", "147", 0, True),
    ("TBIL", "Bilirubin, total", "1975-2", "serum", "mg/dL", "0.1", "1.2", 1, True),
    ("ALB", "Albumin", "1751-7", "serum", "g/dL", "3.5", "5.0", 1, True),
    ("TP", "Protein, total", "2885-2", "serum", "g/dL", "6.0", "8.3", 1, True),
    ("CHOL", "Cholesterol", "2093-3", "serum", "mg/dL", "125", "200", 0, False),
    ("TRIG", "Triglycerides", "2571-8", "serum", "mg/dL", "40", "150", 0, False),
    ("HBA1C", "Hemoglobin A1c", "4548-4", "blood", "%", "4.0", "5.6", 1, False),
    ("CRP", "C-reactive protein", "1988-5", "serum", "mg/L", "0.0", "10.0", 1, False),
    ("TSH", "Thyrotropin", "3016-3", "serum", "mIU/L", "0.40", "4.00", 2, False),
    ("INR", "INR", "6301-6", "plasma", "{INR}", "0.8", "1.1", 1, False),
    ("UPROT", "Protein, urine", "2888-6", "urine", "mg/dL", "0", "14", 0, False),
)

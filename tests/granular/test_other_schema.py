"""Granular restore on a schema that is not the sample platform.

The ``trial`` schema has what the sample lacks: a composite foreign key through a domain
over ``char(4)`` (keys the server must match), uuid keys, an identity column, a serial
column, a self-reference, a generated column, an enum type, a trigger that stamps
``updated_at``, and a table without a primary key tied to its protocol only by convention
(a configured ``ScopeLink`` on a text column), and names that need quoting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clinvault.catalog.models import BackupType, RestoreStatus
from clinvault.config import ScopeLink, ScopeSettings, Settings
from clinvault.engine.checks import read_manifest
from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pginspect import connect
from clinvault.errors import NotFoundError
from clinvault.services.actor import Actor
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.context import ServiceContext
from clinvault.services.granular import GranularRestoreService
from tests.granular.helpers import (
    database_state,
    except_keys,
    execute,
    live_counts,
    of_keys,
    scope_keys,
)

pytestmark = pytest.mark.pg

ACTOR = Actor("u-1", "Test Admin")

SCHEMA = """
CREATE SCHEMA trial;
CREATE TYPE trial.arm_kind AS ENUM ('active', 'placebo');
CREATE DOMAIN trial.centre_code AS char(4) CHECK (VALUE ~ '^[A-Z]{2}[0-9]{2}$');
CREATE FUNCTION trial.touch() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TABLE trial.sponsors (sponsor_id int PRIMARY KEY, code text NOT NULL UNIQUE);
CREATE TABLE trial.protocols (
    protocol_id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sponsor_id int NOT NULL REFERENCES trial.sponsors,
    code text NOT NULL UNIQUE);
CREATE TABLE trial.centres (
    protocol_id int REFERENCES trial.protocols ON DELETE CASCADE,
    centre_no trial.centre_code,
    name text NOT NULL,
    PRIMARY KEY (protocol_id, centre_no));
CREATE TABLE trial.participants (
    participant_id uuid PRIMARY KEY,
    protocol_id int NOT NULL,
    centre_no trial.centre_code NOT NULL,
    arm trial.arm_kind NOT NULL,
    note text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (protocol_id, centre_no) REFERENCES trial.centres ON DELETE CASCADE);
CREATE TRIGGER participants_touch BEFORE UPDATE ON trial.participants
    FOR EACH ROW EXECUTE FUNCTION trial.touch();
CREATE TABLE trial.samples (
    sample_id bigserial PRIMARY KEY,
    participant_id uuid NOT NULL REFERENCES trial.participants ON DELETE CASCADE,
    parent_sample bigint REFERENCES trial.samples ON DELETE CASCADE,
    taken date NOT NULL,
    volume numeric(8, 2),
    tags text[],
    volume_ul numeric(12, 2) GENERATED ALWAYS AS (volume * 1000) STORED);
CREATE TABLE trial.notes (protocol_code text NOT NULL, body text NOT NULL);
CREATE TABLE trial."Sample Log" (
    "Entry No" serial PRIMARY KEY,
    sample_id bigint NOT NULL REFERENCES trial.samples ON DELETE CASCADE,
    "Logged (UTC)" timestamptz NOT NULL,
    "select" text);
"""

DATA = """
INSERT INTO trial.sponsors VALUES (1, 'SP-1'), (2, 'SP-2');
INSERT INTO trial.protocols (sponsor_id, code) VALUES (1, 'P-1'), (1, 'P-2'), (2, 'P-3');
INSERT INTO trial.centres SELECT p.protocol_id, c.no, 'Centre ' || c.no
    FROM trial.protocols p, (VALUES ('AB01'), ('CD02')) c(no);
INSERT INTO trial.participants (participant_id, protocol_id, centre_no, arm, note, updated_at)
    SELECT gen_random_uuid(), c.protocol_id, c.centre_no,
           (ARRAY['active', 'placebo'])[1 + n % 2]::trial.arm_kind, 'tab\there "q" \\ end',
           timestamptz '2024-05-01 10:00+00' + n * interval '1 hour'
    FROM trial.centres c, generate_series(1, 3) n;
INSERT INTO trial.samples (participant_id, taken, volume, tags)
    SELECT participant_id, DATE '2024-06-01', 1.25, ARRAY['a', 'b,c'] FROM trial.participants;
INSERT INTO trial.samples (participant_id, parent_sample, taken, volume)
    SELECT participant_id, sample_id, DATE '2024-06-02', NULL FROM trial.samples;
INSERT INTO trial.notes SELECT code, 'note ' || n FROM trial.protocols, generate_series(1, 2) n;
INSERT INTO trial.notes SELECT code, 'note 1' FROM trial.protocols;
INSERT INTO trial."Sample Log" (sample_id, "Logged (UTC)", "select")
    SELECT sample_id, timestamptz '2024-06-03 08:00+00', 'line ' || sample_id
    FROM trial.samples;
"""

AFTER_BACKUP = """
DELETE FROM trial.notes WHERE protocol_code = 'P-1';
DELETE FROM trial.protocols WHERE code = 'P-1';
UPDATE trial.participants SET note = 'edited' WHERE protocol_id = (
    SELECT protocol_id FROM trial.protocols WHERE code = 'P-2');
DELETE FROM trial.samples WHERE sample_id = (SELECT max(sample_id) FROM trial.samples);
INSERT INTO trial.samples (participant_id, taken)
    SELECT participant_id, DATE '2025-01-01' FROM trial.participants
    WHERE protocol_id = (SELECT protocol_id FROM trial.protocols WHERE code = 'P-2');
INSERT INTO trial.notes VALUES ('P-2', 'added after the backup');
UPDATE trial."Sample Log" SET "select" = 'edited' WHERE sample_id IN (
    SELECT s.sample_id FROM trial.samples s JOIN trial.participants p USING (participant_id)
    JOIN trial.protocols pr USING (protocol_id) WHERE pr.code = 'P-2');
UPDATE trial.participants SET arm = 'placebo' WHERE protocol_id = (
    SELECT protocol_id FROM trial.protocols WHERE code = 'P-3');
"""


@pytest.fixture
def trial(make_database: Callable[[], ConnInfo], tmp_path: Path) -> ServiceContext:
    conn = make_database()
    execute(conn, SCHEMA)
    execute(conn, DATA)
    (tmp_path / "files").mkdir()
    scope = ScopeSettings(
        schema="trial",
        study_table="protocols",
        organization_table="sponsors",
        extra_links=[
            ScopeLink(
                table="notes", column="protocol_code", ref_table="protocols", ref_column="code"
            )
        ],
    )
    settings = Settings(
        data_dir=tmp_path / "home",
        database_url=conn.url(),
        files_root=tmp_path / "files",
        storage_url=(tmp_path / "store").as_uri(),
        catalog_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        scope=scope,
    )
    return ServiceContext(settings)


def test_protocols_come_back_exactly_on_another_schema(trial: ServiceContext) -> None:
    conn, scope = trial.platform, trial.settings.scope
    backup = BackupService(trial).create(BackupRequest(BackupType.DATABASE), ACTOR)
    keys = scope_keys(conn, scope, "study")
    targets = {keys["P-1"], keys["P-2"]}
    at_backup = database_state(conn, scope, "study")
    execute(conn, AFTER_BACKUP)
    before = database_state(conn, scope, "study")
    assert of_keys(before, targets) != of_keys(at_backup, targets)

    op = GranularRestoreService(trial).run(str(backup.id), "study", ["P-1", "P-2"], ACTOR)

    after = database_state(conn, scope, "study")
    assert of_keys(after, targets) == of_keys(at_backup, targets)
    assert except_keys(after, targets) == except_keys(before, targets)
    manifest, _ = read_manifest(trial.storage, str(backup.id))
    assert manifest.database is not None
    counts = manifest.database.scopes["study"].counts
    for key in targets:
        assert live_counts(after, key) == counts[key]["tables"]
    assert op.status is RestoreStatus.COMPLETED
    assert op.safety_backup_id is not None
    with connect(conn) as db:  # sequences stay ahead of the restored ids
        db.execute(
            "INSERT INTO trial.samples (participant_id, taken) SELECT participant_id,"
            " DATE '2025-02-01' FROM trial.participants LIMIT 1"
        )
        db.execute("INSERT INTO trial.protocols (sponsor_id, code) VALUES (2, 'P-4')")


def test_sponsor_restore_and_unknown_protocol_on_another_schema(trial: ServiceContext) -> None:
    conn, scope = trial.platform, trial.settings.scope
    backup = BackupService(trial).create(BackupRequest(BackupType.DATABASE), ACTOR)
    sponsor = scope_keys(conn, scope, "organization")["SP-1"]
    at_backup = database_state(conn, scope, "organization")
    execute(conn, AFTER_BACKUP)
    before = database_state(conn, scope, "organization")
    service = GranularRestoreService(trial)

    with pytest.raises(NotFoundError):
        service.run(str(backup.id), "study", ["P-9"], ACTOR, safety_backup=False)
    assert database_state(conn, scope, "organization") == before

    service.run(str(backup.id), "organization", ["SP-1"], ACTOR, safety_backup=False)

    after = database_state(conn, scope, "organization")
    assert of_keys(after, {sponsor}) == of_keys(at_backup, {sponsor})
    assert except_keys(after, {sponsor}) == except_keys(before, {sponsor})

"""Scope discovery from foreign keys, on a schema that is not the sample platform."""

from __future__ import annotations

import psycopg
import pytest

from clinvault.engine.pgconn import ConnInfo
from clinvault.engine.pginspect import ScopeRoot, SnapshotSession, connect, discover_scope
from clinvault.engine.scope import ForeignKey, TableRef

pytestmark = pytest.mark.pg

SCHEMA = """
CREATE SCHEMA trial;
CREATE TABLE trial.sponsor (sponsor_no int PRIMARY KEY, ref text UNIQUE);
CREATE TABLE trial.protocol (pid uuid PRIMARY KEY, sponsor_no int REFERENCES trial.sponsor,
                             code text);
CREATE TABLE trial.arm (pid uuid REFERENCES trial.protocol, arm_no int,
                        PRIMARY KEY (pid, arm_no));
CREATE TABLE trial.patient (id bigserial PRIMARY KEY, pid uuid, arm_no int,
                            FOREIGN KEY (pid, arm_no) REFERENCES trial.arm);
CREATE TABLE trial.sample (id bigserial PRIMARY KEY,
                           patient_id bigint REFERENCES trial.patient,
                           parent_id bigint REFERENCES trial.sample);
CREATE TABLE trial.note (id serial PRIMARY KEY, protocol_ref uuid, body text);
CREATE TABLE trial.lookup (code text PRIMARY KEY);
"""

P1 = "00000000-0000-0000-0000-000000000001"
P2 = "00000000-0000-0000-0000-000000000002"

DATA = f"""
INSERT INTO trial.sponsor VALUES (1, 'S-1'), (2, 'S-2');
INSERT INTO trial.protocol VALUES ('{P1}', 1, 'P-1'), ('{P2}', 2, 'P-2');
INSERT INTO trial.arm VALUES ('{P1}', 1), ('{P1}', 2), ('{P2}', 1);
INSERT INTO trial.patient (pid, arm_no) VALUES ('{P1}', 1), ('{P1}', 2), ('{P2}', 1);
INSERT INTO trial.sample (patient_id, parent_id) VALUES (1, NULL), (1, 1), (2, NULL), (3, NULL);
INSERT INTO trial.note (protocol_ref, body) VALUES ('{P1}', 'a'), ('{P2}', 'b'), ('{P2}', 'c');
"""


@pytest.fixture
def trial_db(database: ConnInfo) -> ConnInfo:
    with psycopg.connect(**database.psycopg_kwargs(), autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(DATA)
    return database


def test_scope_follows_composite_and_multi_hop_foreign_keys(trial_db: ConnInfo) -> None:
    root = ScopeRoot("study", TableRef("trial", "protocol"))
    with connect(trial_db) as db:
        model = discover_scope(db, root)
    assert model is not None
    assert model.key_column == "pid"
    assert model.label_column == "code"
    assert [t.qualified for t in model.tables] == [
        "trial.arm",
        "trial.patient",
        "trial.protocol",
        "trial.sample",
    ]
    assert len(model.paths[TableRef("trial", "sample")]) == 3


def test_scope_counts_in_snapshot_match_rows(trial_db: ConnInfo) -> None:
    root = ScopeRoot("study", TableRef("trial", "protocol"))
    link = ForeignKey("cfg", TableRef("trial", "note"), ("protocol_ref",), root.table, ("pid",))
    with connect(trial_db) as db:
        model = discover_scope(db, root, extra_links=[link])
    assert model is not None
    with SnapshotSession.open(trial_db) as session:
        assert session.snapshot_id
        counts = session.scope_counts(model)
    assert counts[P1] == {
        "label": "P-1",
        "tables": {
            "trial.protocol": 1,
            "trial.arm": 2,
            "trial.patient": 2,
            "trial.sample": 3,
            "trial.note": 1,
        },
    }
    assert counts[P2]["tables"]["trial.note"] == 2
    assert counts[P2]["tables"]["trial.sample"] == 1


def test_select_query_returns_only_rows_of_the_scope(trial_db: ConnInfo) -> None:
    root = ScopeRoot("study", TableRef("trial", "protocol"))
    with connect(trial_db) as db:
        model = discover_scope(db, root)
        assert model is not None
        query = model.select_query(TableRef("trial", "sample"), ["id"])
        ids = sorted(r[0] for r in db.execute(query, ([P1],)).fetchall())
    assert ids == [1, 2, 3]


def test_organization_scope_reaches_through_studies(trial_db: ConnInfo) -> None:
    root = ScopeRoot("organization", TableRef("trial", "sponsor"), label_column="ref")
    with connect(trial_db) as db:
        model = discover_scope(db, root, exclude=[TableRef("trial", "sample")])
    assert model is not None
    assert TableRef("trial", "sample") not in model.paths
    with SnapshotSession.open(trial_db) as session:
        counts = session.scope_counts(model)
    assert counts["1"]["label"] == "S-1"
    assert counts["1"]["tables"]["trial.patient"] == 2
    assert counts["2"]["tables"]["trial.protocol"] == 1


def test_missing_root_table_gives_no_scope(database: ConnInfo) -> None:
    with connect(database) as db:
        assert discover_scope(db, ScopeRoot("study", TableRef("public", "studies"))) is None


def test_snapshot_counts_ignore_rows_committed_later(trial_db: ConnInfo) -> None:
    with SnapshotSession.open(trial_db) as session:
        with psycopg.connect(**trial_db.psycopg_kwargs(), autocommit=True) as other:
            other.execute("INSERT INTO trial.lookup VALUES ('late')")
        counts = session.table_counts([TableRef("trial", "lookup")])
    assert counts == {"trial.lookup": 0}


def test_nested_scope_counts_summed_from_inner_equal_direct_counts(trial_db: ConnInfo) -> None:
    study_root = ScopeRoot("study", TableRef("trial", "protocol"))
    org_root = ScopeRoot("organization", TableRef("trial", "sponsor"), label_column="ref")
    link = ForeignKey(
        "cfg", TableRef("trial", "note"), ("protocol_ref",), study_root.table, ("pid",)
    )
    with connect(trial_db) as db:
        study = discover_scope(db, study_root, extra_links=[link])
        org = discover_scope(db, org_root, extra_links=[link])
    assert study is not None and org is not None
    assert org.passes_through(TableRef("trial", "sample"), study)
    assert org.passes_through(TableRef("trial", "protocol"), study)
    assert not org.passes_through(TableRef("trial", "sponsor"), study)
    with SnapshotSession.open(trial_db) as session:
        study_counts = session.scope_counts(study)
        direct = session.scope_counts(org)
        summed = session.scope_counts(org, (study, study_counts))
    assert summed == direct
    assert summed["1"]["tables"]["trial.sample"] == 3

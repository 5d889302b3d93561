"""The audit trail: hash-chained, append-only, safe under concurrency, free of secrets."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from clinvault.catalog import AuditEvent, AuditOutcome, Catalog
from clinvault.catalog.audit import (
    GENESIS_HASH,
    HASHED_FIELDS,
    REDACTED,
    EventDraft,
    append_event,
    document_hash,
    event_document,
)
from clinvault.engine.pgconn import ConnInfo
from clinvault.errors import AuditChainError, DatabaseError, InvalidInputError
from clinvault.services.audit import (
    SYSTEM_ACTOR,
    AuditFilter,
    AuditService,
    ChainHead,
    check_exported_chain,
)

from .conftest import Tamper


@pytest.fixture
def audit(catalog: Catalog) -> AuditService:
    return AuditService(catalog)


@pytest.fixture
def pg_catalog(database: ConnInfo) -> Iterator[Catalog]:
    catalog = Catalog.from_url(database.url())
    catalog.upgrade()
    yield catalog
    catalog.dispose()


def _record_some(audit: AuditService, count: int) -> None:
    for number in range(1, count + 1):
        audit.record(
            f"backup.step{number}",
            actor_id="u-1",
            actor_name="Alice Admin",
            target_type="backup",
            target_id=f"b-{number}",
            reason=f"reason {number}",
            details={"number": number},
        )


def _all_events(catalog: Catalog) -> list[AuditEvent]:
    with catalog.session() as session:
        return list(session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)))


# --- the chain ---------------------------------------------------------------------------------


def test_appended_events_form_a_valid_chain(audit: AuditService, catalog: Catalog) -> None:
    _record_some(audit, 4)

    events = _all_events(catalog)
    assert [event.seq for event in events] == [1, 2, 3, 4]
    assert events[0].prev_hash == GENESIS_HASH
    for previous, event in itertools.pairwise(events):
        assert event.prev_hash == previous.hash
    assert len({event.hash for event in events}) == 4
    assert audit.verify().ok
    assert audit.verify().events_checked == 4
    assert audit.last_seq() == 4


def test_hash_is_sha256_of_the_documented_canonical_json(audit: AuditService) -> None:
    event = audit.record(
        "backup.create",
        actor_id="u-1",
        actor_name="Zoë Müller",
        target_type="backup",
        target_id="b-1",
        reason="nightly",
        details={"b": [1, 2], "a": {"y": True, "x": None}},
        request_id="req-1",
        client_address="10.0.0.7",
    )
    document = {
        "id": str(event.id),
        "seq": 1,
        "occurred_at": event.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor_id": "u-1",
        "actor_name": "Zoë Müller",
        "action": "backup.create",
        "target_type": "backup",
        "target_id": "b-1",
        "outcome": "success",
        "reason": "nightly",
        "request_id": "req-1",
        "client_address": "10.0.0.7",
        "details": {"a": {"x": None, "y": True}, "b": [1, 2]},
        "prev_hash": "0" * 64,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    assert event.hash == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_hashed_fields_are_every_column_but_the_hash() -> None:
    columns = {column.name for column in AuditEvent.__table__.columns}
    assert set(HASHED_FIELDS) == columns - {"hash"}


def test_events_read_back_exactly_as_recorded(audit: AuditService, catalog: Catalog) -> None:
    before = datetime.now(UTC)
    recorded = audit.record(
        "restore.start",
        actor_id=None,
        actor_name="Bob",
        outcome=AuditOutcome.DENIED,
        details={"ratio": 0.1, "big": 1e20, "negative_zero": -0.0, "when": before},
    )

    [stored] = _all_events(catalog)
    assert event_document(stored) == event_document(recorded)
    assert stored.outcome is AuditOutcome.DENIED
    assert stored.occurred_at.tzinfo == UTC
    assert before - timedelta(seconds=5) <= stored.occurred_at <= datetime.now(UTC)
    assert stored.details["when"] == before.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert audit.verify().ok


# --- append-only -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_events SET reason = 'rewritten' WHERE seq = 1", "DELETE FROM audit_events"],
)
def test_the_database_refuses_to_change_audit_events(
    audit: AuditService, catalog: Catalog, statement: str
) -> None:
    _record_some(audit, 2)

    with pytest.raises(DBAPIError, match="append-only"), catalog.session() as session:
        session.execute(sa.text(statement))

    assert [event.reason for event in _all_events(catalog)] == ["reason 1", "reason 2"]


@pytest.mark.pg
def test_postgresql_refuses_to_truncate_audit_events(pg_catalog: Catalog) -> None:
    _record_some(AuditService(pg_catalog), 1)

    with pytest.raises(DBAPIError, match="append-only"), pg_catalog.session() as session:
        session.execute(sa.text("TRUNCATE audit_events"))

    assert len(_all_events(pg_catalog)) == 1


# --- tampering behind the triggers' back -------------------------------------------------------


def test_verify_detects_an_edited_field(audit: AuditService, tamper: Tamper) -> None:
    _record_some(audit, 5)

    tamper("UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 3")

    report = audit.verify()
    assert not report.ok
    assert report.first_bad_seq == 3
    assert report.events_checked == 2
    assert report.problem is not None and "changed" in report.problem


def test_verify_detects_a_deleted_event(audit: AuditService, tamper: Tamper) -> None:
    _record_some(audit, 5)

    tamper("DELETE FROM audit_events WHERE seq = 2")

    report = audit.verify()
    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert report.problem is not None and "missing" in report.problem


def test_verify_detects_reordered_events(audit: AuditService, tamper: Tamper) -> None:
    _record_some(audit, 5)

    tamper(
        "UPDATE audit_events SET seq = -1 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = -1",
    )

    report = audit.verify()
    assert (report.ok, report.first_bad_seq) == (False, 3)


def test_verify_detects_a_broken_link_even_when_the_event_was_rehashed(
    audit: AuditService, catalog: Catalog, tamper: Tamper
) -> None:
    _record_some(audit, 4)
    forged = event_document(_all_events(catalog)[2])
    forged["prev_hash"] = "f" * 64
    forged_hash = document_hash(forged)

    tamper(
        f"UPDATE audit_events SET prev_hash = '{'f' * 64}', hash = '{forged_hash}' WHERE seq = 3"
    )

    report = audit.verify()
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert report.problem is not None and "does not link" in report.problem


def test_anchor_reveals_events_cut_off_the_end(audit: AuditService, tamper: Tamper) -> None:
    _record_some(audit, 5)
    anchor = audit.head()
    assert anchor == ChainHead(seq=5, hash=_hash_of_last(audit))

    tamper("DELETE FROM audit_events WHERE seq >= 4")

    assert audit.verify().ok  # a shorter chain is still a chain...
    report = audit.verify(anchors=[anchor])
    assert (report.ok, report.first_bad_seq) == (False, 5)  # ...but not the anchored one


def _hash_of_last(audit: AuditService) -> str:
    return audit.list(limit=1)[0].hash


# PostgreSQL's column types refuse a malformed timestamp outright: SQLite only.
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_verify_reports_an_unloadable_event_by_seq(audit: AuditService, tamper: Tamper) -> None:
    _record_some(audit, 3)

    tamper("UPDATE audit_events SET occurred_at = 'yesterday' WHERE seq = 2")

    report = audit.verify()
    assert (report.ok, report.first_bad_seq, report.events_checked) == (False, 2, 1)


def test_verify_or_raise_names_the_broken_event(audit: AuditService, tamper: Tamper) -> None:
    _record_some(audit, 3)
    assert audit.verify_or_raise().ok

    tamper("UPDATE audit_events SET actor_name = 'Mallory' WHERE seq = 2")

    with pytest.raises(AuditChainError, match="event 2"):
        audit.verify_or_raise()


# --- concurrency -------------------------------------------------------------------------------


def test_concurrent_appends_from_threads_and_two_instances_form_one_chain(
    catalog_url: str, catalog: Catalog
) -> None:
    second = Catalog.from_url(catalog_url)
    services = [AuditService(catalog), AuditService(second)]
    failures: list[BaseException] = []

    def append(worker: int) -> None:
        try:
            for number in range(25):
                services[worker % 2].record(
                    "test.append", actor_id=f"w{worker}", actor_name="Worker", details={"n": number}
                )
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=append, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.dispose()

    assert failures == []
    events = _all_events(catalog)
    assert [event.seq for event in events] == list(range(1, 201))
    assert len({event.id for event in events}) == 200
    assert [event.occurred_at for event in events] == sorted(event.occurred_at for event in events)
    assert services[0].verify() == services[0].verify_or_raise()
    assert services[0].verify().events_checked == 200


_APPENDER = """
import os
from clinvault.catalog import Catalog
from clinvault.services.audit import AuditService

catalog = Catalog.from_url(os.environ["CATALOG_URL"])
service = AuditService(catalog)
for number in range(int(os.environ["COUNT"])):
    service.record("test.process", actor_id=os.environ["WORKER"], actor_name="P", details={})
catalog.dispose()
"""


@pytest.mark.slow
def test_concurrent_appends_from_processes_form_one_chain(
    catalog_url: str, audit: AuditService
) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER],
            env={**os.environ, "CATALOG_URL": catalog_url, "COUNT": "30", "WORKER": str(worker)},
        )
        for worker in range(3)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0]

    report = audit.verify()
    assert (report.ok, report.events_checked) == (True, 90)
    assert audit.count(AuditFilter(actor_id="2")) == 30


# PostgreSQL appends take an advisory lock in any transaction: SQLite only.
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_appending_on_sqlite_needs_the_writer_lock(catalog: Catalog) -> None:
    draft = EventDraft(action="x", actor_id=None, actor_name="n")
    with pytest.raises(RuntimeError, match="write_lock"), catalog.session() as session:
        append_event(session, draft)


# --- what is recorded --------------------------------------------------------------------------


def test_secrets_are_redacted_before_hashing_and_storing(
    audit: AuditService, catalog: Catalog
) -> None:
    event = audit.record(
        "settings.update",
        actor_id="u-1",
        actor_name="Alice",
        details={
            "Password": "hunter2",
            "new": {"db_password": "s3cret-1", "API-Key": "ak-9", "retries": 3},
            "headers": [{"Authorization": "Bearer tok-7"}, {"accept": "json"}],
            "client_secret": "cs-5",
            "access_token": "at-6",
            "passphrase": "pp-4",
            "database_url": "postgresql://clin:pw-8@db:5432/clinical",
        },
    )

    with catalog.session() as session:
        raw = session.execute(sa.text("SELECT CAST(details AS TEXT) FROM audit_events")).scalar()
    assert raw is not None
    for secret in ("hunter2", "s3cret-1", "ak-9", "tok-7", "cs-5", "at-6", "pp-4", "pw-8"):
        assert secret not in raw
    assert event.details["Password"] == REDACTED
    assert event.details["new"] == {"db_password": REDACTED, "API-Key": REDACTED, "retries": 3}
    assert event.details["headers"] == [{"Authorization": REDACTED}, {"accept": "json"}]
    assert event.details["database_url"] == f"postgresql://clin:{REDACTED}@db:5432/clinical"
    assert audit.verify().ok


def test_system_actor_is_recorded_by_id_and_printed_name(audit: AuditService) -> None:
    actor_id, actor_name = SYSTEM_ACTOR
    event = audit.record("schedule.run", actor_id=actor_id, actor_name=actor_name)
    assert (event.actor_id, event.actor_name) == ("system", "ClinVault system")


def test_a_failed_audit_write_raises(empty_catalog: Catalog) -> None:
    with pytest.raises(DatabaseError, match=r"backup\.create"):
        AuditService(empty_catalog).record("backup.create", actor_id="u", actor_name="U")


@pytest.mark.parametrize(
    ("action", "actor_name", "details"),
    [
        ("", "Alice", {}),
        ("backup.create", "  ", {}),
        ("x" * 129, "Alice", {}),
        ("backup.create", "Alice", {"ratio": float("nan")}),
    ],
)
def test_events_that_cannot_be_stored_are_refused_up_front(
    audit: AuditService, action: str, actor_name: str, details: dict[str, float]
) -> None:
    with pytest.raises(InvalidInputError):
        audit.record(action, actor_id="u", actor_name=actor_name, details=details)
    assert audit.last_seq() == 0


# --- listing and exporting ---------------------------------------------------------------------


def test_list_filters_pages_and_counts(audit: AuditService) -> None:
    audit.record("backup.create", actor_id="a", actor_name="A", target_type="backup", target_id="1")
    audit.record("backup.delete", actor_id="b", actor_name="B", outcome=AuditOutcome.DENIED)
    audit.record("restore.start", actor_id="a", actor_name="A", target_type="backup", target_id="1")
    audit.record("backup_x.create", actor_id="a", actor_name="A")

    def seqs(filters: AuditFilter | None = None) -> list[int]:
        return [event.seq for event in audit.list(filters)]

    assert seqs() == [4, 3, 2, 1]
    assert [e.seq for e in audit.list(newest_first=False, limit=2, offset=1)] == [2, 3]
    assert seqs(AuditFilter(action="backup.*")) == [2, 1]
    assert seqs(AuditFilter(action="backup.delete")) == [2]
    assert seqs(AuditFilter(actor_id="a", target_type="backup", target_id="1")) == [3, 1]
    assert seqs(AuditFilter(outcome=AuditOutcome.DENIED)) == [2]
    assert seqs(AuditFilter(since=datetime.now(UTC) + timedelta(hours=1))) == []
    assert seqs(AuditFilter(until=datetime.now(UTC) + timedelta(hours=1))) == [4, 3, 2, 1]
    assert audit.count() == 4
    assert audit.count(AuditFilter(actor_id="a")) == 3
    with pytest.raises(InvalidInputError):
        audit.list(limit=0)


def test_export_all_yields_json_ready_events_in_seq_order(audit: AuditService) -> None:
    _record_some(audit, 3)

    export = audit.export_all()
    first = next(export)
    audit.record("late.event", actor_id=None, actor_name="Late")  # after the export began
    documents = [first, *export]

    assert [document["seq"] for document in documents] == [1, 2, 3]
    lines = [json.dumps(document) for document in documents]
    parsed = [json.loads(line) for line in lines]
    assert parsed == documents
    assert all(document_hash(document) == document["hash"] for document in parsed)
    assert check_exported_chain(parsed) is None
    assert [d["seq"] for d in audit.export_all(until_seq=2)] == [1, 2]


def test_check_exported_chain_finds_edits_and_gaps(audit: AuditService) -> None:
    _record_some(audit, 4)
    documents = list(audit.export_all())

    edited = [dict(document) for document in documents]
    edited[1]["actor_name"] = "Mallory"
    problem = check_exported_chain(edited)
    assert problem is not None and "event 2" in problem

    gap = documents[:1] + documents[2:]
    problem = check_exported_chain(gap)
    assert problem is not None and "event 2 is missing" in problem


def test_export_of_an_empty_trail_is_empty(audit: AuditService) -> None:
    assert list(audit.export_all()) == []
    assert audit.verify().ok and audit.verify().events_checked == 0
    assert audit.head() is None


def test_exported_documents_survive_a_file_round_trip(audit: AuditService, tmp_path: Path) -> None:
    _record_some(audit, 3)
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in audit.export_all()), encoding="utf-8")

    documents = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    assert check_exported_chain(documents) is None

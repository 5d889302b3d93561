"""The audit trail's storage: an append-only, hash-chained table.

Every event's ``hash`` is the SHA-256 (hex) of its *canonical document*: a JSON object with
the fields in :data:`HASHED_FIELDS` (every column but ``hash``, so ``seq`` and ``prev_hash``
too), keys sorted, no whitespace, UTF-8, timestamps as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC),
UUIDs as strings. The first event's ``prev_hash`` is :data:`GENESIS_HASH`; each later one
holds its predecessor's hash, and ``seq`` counts 1, 2, 3, ... without gaps. Changing,
deleting, inserting or reordering events therefore breaks the chain at the first event
touched. Cutting events off the *end* leaves a shorter valid chain, which only an anchor (a
:class:`ChainHead` recorded elsewhere, e.g. in a backup manifest) reveals.

Appending reads the last event and writes the next, so appends are serialized everywhere:
a transaction-level advisory lock on PostgreSQL (shared by every instance using the catalog),
the SQLite writer lock (``BEGIN IMMEDIATE``) on SQLite. A UNIQUE constraint on ``seq`` is the
backstop. Details are made JSON-ready and stripped of secrets before they are hashed.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinvault.catalog.db import holds_write_lock
from clinvault.catalog.models import AuditEvent, AuditOutcome, utcnow

GENESIS_HASH: Final = "0" * 64

# The advisory lock that serializes appends on PostgreSQL ("ClinVaul" in ASCII).
AUDIT_LOCK_KEY: Final = 0x436C_696E_5661_756C

# Listed, not derived from the table, so that adding a column is a deliberate format change.
HASHED_FIELDS: Final = (
    "id",
    "seq",
    "occurred_at",
    "actor_id",
    "actor_name",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "reason",
    "request_id",
    "client_address",
    "details",
    "prev_hash",
)

REDACTED: Final = "[REDACTED]"

_SECRET_KEY_MARKERS: Final = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "credential",
)

# scheme://user:password@ inside any string value.
_URL_PASSWORD: Final = re.compile(r"([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@]+@", re.IGNORECASE)

# Python writes floats from 1e16 up in exponent form; PostgreSQL's JSONB gives them back as
# integers. Storing such (always integral) floats as integers keeps the hash reproducible.
_EXPONENT_FORM_FLOOR: Final = 1e16

_BATCH_SIZE: Final = 500

# What loading a row whose stored value its column type cannot read raises.
_UNLOADABLE: Final = (LookupError, ValueError, TypeError)


@dataclass(frozen=True, slots=True)
class EventDraft:
    """What a caller says about an event; the chain adds id, seq, time and hashes."""

    action: str
    actor_id: str | None
    actor_name: str
    outcome: AuditOutcome = AuditOutcome.SUCCESS
    target_type: str | None = None
    target_id: str | None = None
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    client_address: str | None = None


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last event of a chain: enough to prove later that nothing was cut off."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of walking the chain; ``first_bad_seq`` names where it first breaks."""

    ok: bool
    events_checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


# --- details: JSON-ready and free of secrets ---------------------------------------------------


def is_secret_key(key: str) -> bool:
    """True for keys that name a secret (``password``, ``X-Api-Key``, ``access_token``...)."""
    normalized = key.lower().replace("-", "_")
    return any(marker in normalized for marker in _SECRET_KEY_MARKERS)


def redact_secrets(value: Any) -> Any:
    """``value`` with the values of secret-named keys and URL passwords replaced, recursively."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if is_secret_key(str(key)) else redact_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_secrets(item) for item in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\1{REDACTED}@", value)
    return value


def json_ready(details: Mapping[str, Any]) -> dict[str, Any]:
    """``details`` as plain JSON values that read back from either database unchanged."""
    text = json.dumps(dict(details), default=_json_default, allow_nan=False)
    document = _stable_numbers(json.loads(text))
    assert isinstance(document, dict)
    return document


def clean_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """The details as stored and hashed: JSON-ready, secrets redacted."""
    cleaned = redact_secrets(json_ready(details))
    assert isinstance(cleaned, dict)
    return cleaned


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)  # UUID, Decimal, Path and the rest print as themselves


def _stable_numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _stable_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stable_numbers(item) for item in value]
    if isinstance(value, float):
        if abs(value) >= _EXPONENT_FORM_FLOOR:
            return int(value)
        return value + 0.0  # -0.0 becomes 0.0, as PostgreSQL's numeric has no negative zero
    return value


# --- the canonical document and its hash -------------------------------------------------------


def format_timestamp(value: datetime) -> str:
    """A timestamp in the chain's form: ISO 8601, UTC, microseconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_document(event: AuditEvent, *, include_hash: bool = True) -> dict[str, Any]:
    """The event as a JSON-ready dict (the hashed fields, plus ``hash`` if asked)."""
    document: dict[str, Any] = {
        "id": str(event.id),
        "seq": event.seq,
        "occurred_at": format_timestamp(event.occurred_at),
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "outcome": AuditOutcome(event.outcome).value,
        "reason": event.reason,
        "request_id": event.request_id,
        "client_address": event.client_address,
        "details": event.details,
        "prev_hash": event.prev_hash,
    }
    if include_hash:
        document["hash"] = event.hash
    return document


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the exact bytes that are hashed."""
    text = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def document_hash(document: Mapping[str, Any]) -> str:
    """The hash an event document must carry: SHA-256 of its hashed fields, canonically."""
    hashed = {name: document.get(name) for name in HASHED_FIELDS}
    return hashlib.sha256(canonical_json(hashed)).hexdigest()


def compute_hash(event: AuditEvent) -> str:
    """The hash ``event`` must carry, computed from its other fields."""
    return document_hash(event_document(event, include_hash=False))


# --- appending ---------------------------------------------------------------------------------


def append_event(session: Session, draft: EventDraft) -> AuditEvent:
    """Append one event to the chain in ``session``'s transaction, and flush it.

    On SQLite the session must come from ``Catalog.session(write_lock=True)``. On PostgreSQL
    the advisory lock is held until the transaction ends, so keep that transaction short.
    """
    _lock_chain(session)
    head = chain_head(session)
    event = AuditEvent(
        id=uuid.uuid4(),
        seq=1 if head is None else head.seq + 1,
        occurred_at=_server_now(session),
        actor_id=draft.actor_id,
        actor_name=draft.actor_name,
        action=draft.action,
        target_type=draft.target_type,
        target_id=draft.target_id,
        outcome=AuditOutcome(draft.outcome),
        reason=draft.reason,
        request_id=draft.request_id,
        client_address=draft.client_address,
        details=clean_details(draft.details),
        prev_hash=GENESIS_HASH if head is None else head.hash,
    )
    event.hash = compute_hash(event)
    session.add(event)
    session.flush()
    return event


def _lock_chain(session: Session) -> None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(AUDIT_LOCK_KEY)))
    elif not holds_write_lock(connection):
        raise RuntimeError("audit events must be appended in a session with write_lock=True")


def _server_now(session: Session) -> datetime:
    """The time of the event: the database server's clock on PostgreSQL.

    Instances sharing a PostgreSQL catalog may run on hosts whose clocks differ; taking the
    time from the database, under the chain lock, keeps ``occurred_at`` in ``seq`` order.
    """
    if session.connection().dialect.name == "postgresql":
        now: datetime = session.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
        return now.astimezone(UTC)
    return utcnow()


def chain_head(session: Session) -> ChainHead | None:
    """The last event's seq and hash, or None for an empty trail."""
    row = session.execute(
        sa.select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    return None if row is None else ChainHead(seq=row.seq, hash=row.hash)


# --- reading and verifying ---------------------------------------------------------------------


def iter_events(
    session: Session, *, after_seq: int = 0, until_seq: int | None = None
) -> Iterator[AuditEvent]:
    """Events in ``seq`` order, read in batches and detached from ``session``.

    Batching by key (``seq > last``) keeps memory flat on long trails.
    """
    last = after_seq
    while True:
        statement = sa.select(AuditEvent).where(AuditEvent.seq > last)
        if until_seq is not None:
            statement = statement.where(AuditEvent.seq <= until_seq)
        batch = session.scalars(statement.order_by(AuditEvent.seq).limit(_BATCH_SIZE)).all()
        for event in batch:
            session.expunge(event)
        yield from batch
        if len(batch) < _BATCH_SIZE:
            return
        last = batch[-1].seq


def verify_chain(session: Session, *, anchors: Iterable[ChainHead] = ()) -> ChainReport:
    """Walk the whole trail in the catalog and report where the chain first breaks.

    ``anchors`` are heads recorded earlier outside the catalog; each must still be in the
    chain with the same hash, which also reveals events cut off the end.
    """
    walk = _ChainWalk(anchors)
    try:
        _walk_stored(session, walk)
    except _UNLOADABLE as exc:
        # A field edited into something its column type cannot load (a malformed timestamp
        # on SQLite...). Find that event, check the ones before it, then report it.
        seq = _first_unreadable_seq(session, after_seq=walk.checked)
        _walk_stored(session, walk, until_seq=seq - 1)
        if walk.failure is None:
            walk.fail(seq, f"event {seq} cannot be read: {exc}")
    return walk.report()


def _walk_stored(session: Session, walk: _ChainWalk, *, until_seq: int | None = None) -> None:
    for event in iter_events(session, after_seq=walk.checked, until_seq=until_seq):
        if not walk.accept(event_document(event)):
            return


def verify_documents(
    documents: Iterable[Mapping[str, Any]], *, anchors: Iterable[ChainHead] = ()
) -> ChainReport:
    """:func:`verify_chain` for exported events (JSON objects, e.g. a bundle's audit part).

    The documents must start at event 1, as exports do.
    """
    walk = _ChainWalk(anchors)
    for document in documents:
        if not walk.accept(document):
            break
    return walk.report()


class _ChainWalk:
    """The state of one walk along the chain: what the next event must look like."""

    def __init__(self, anchors: Iterable[ChainHead]) -> None:
        self.anchored = {anchor.seq: anchor.hash for anchor in anchors}
        self.checked = 0
        self.prev_hash = GENESIS_HASH
        self.failure: tuple[int, str] | None = None

    def accept(self, document: Mapping[str, Any]) -> bool:
        """Check the next event; False (and the failure kept) if the chain breaks there."""
        self.failure = _problem_with(document, self.checked + 1, self.prev_hash, self.anchored)
        if self.failure is None:
            self.checked += 1
            self.prev_hash = str(document["hash"])
        return self.failure is None

    def fail(self, seq: int, problem: str) -> None:
        self.failure = (seq, problem)

    def report(self) -> ChainReport:
        failure = self.failure or self._lost_anchor()
        if failure is None:
            return ChainReport(True, self.checked)
        return ChainReport(False, self.checked, failure[0], failure[1])

    def _lost_anchor(self) -> tuple[int, str] | None:
        lost = [seq for seq in self.anchored if seq > self.checked]
        if not lost:
            return None
        seq = min(lost)
        return seq, f"event {seq} is missing: it was anchored, but the trail ends at {seq - 1}"


def _problem_with(
    document: Mapping[str, Any], expected_seq: int, prev_hash: str, anchored: Mapping[int, str]
) -> tuple[int, str] | None:
    """Why ``document`` cannot be event ``expected_seq`` following ``prev_hash``, if it can't."""
    seq = document.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return expected_seq, f"event {expected_seq} has no valid seq"
    if seq > expected_seq:
        return expected_seq, f"event {expected_seq} is missing (the next event is {seq})"
    if seq != expected_seq:
        return seq, f"event {seq} is out of sequence (expected {expected_seq})"
    if _hash_or_none(document) != document.get("hash"):
        return seq, f"event {seq} does not match its hash: it was changed after being written"
    if document.get("prev_hash") != prev_hash:
        return seq, f"event {seq} does not link to event {seq - 1}: the chain was rewritten"
    if anchored.get(seq, document["hash"]) != document["hash"]:
        return seq, f"event {seq} differs from its anchor: the chain was rewritten"
    return None


def _hash_or_none(document: Mapping[str, Any]) -> str | None:
    try:
        return document_hash(document)
    except (TypeError, ValueError):  # not canonical JSON (NaN, odd types): cannot match
        return None


def _first_unreadable_seq(session: Session, *, after_seq: int) -> int:
    """The first event after ``after_seq`` whose stored fields cannot be loaded."""
    seqs = session.scalars(
        sa.select(AuditEvent.seq).where(AuditEvent.seq > after_seq).order_by(AuditEvent.seq)
    ).all()
    for seq in seqs:
        try:
            event = session.scalars(sa.select(AuditEvent).where(AuditEvent.seq == seq)).one()
        except _UNLOADABLE:
            return seq
        session.expunge(event)
    return after_seq + 1

"""The audit trail as a service: record every action, verify the chain, list and export it.

Part 11 asks, for every action (successes, failures and denials alike), who did it (id and
printed name), what, when (server time, UTC), why, and with what outcome. :meth:`record`
writes one event in its own short transaction, so an event about a failed or denied action is
kept even when the action's own transaction rolls back, and a failed audit write raises, so
the action it describes fails too. Storage, hashing and verification are in
:mod:`clinvault.catalog.audit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import ColumnElement

from clinvault.catalog.audit import (
    ChainHead,
    ChainReport,
    EventDraft,
    append_event,
    chain_head,
    event_document,
    iter_events,
    json_ready,
    redact_secrets,
    verify_chain,
    verify_documents,
)
from clinvault.catalog.db import Catalog
from clinvault.catalog.models import AuditEvent, AuditOutcome
from clinvault.errors import AuditChainError, DatabaseError, InvalidInputError

SYSTEM_ACTOR: Final[tuple[str, str]] = ("system", "ClinVault system")

MAX_PAGE_SIZE: Final = 1000

_EXPORT_BATCH: Final = 500

# Column widths, checked up front: PostgreSQL refuses longer values, SQLite would keep them.
_FIELD_LIMITS: Final = {
    "action": 128,
    "actor_id": 255,
    "actor_name": 255,
    "target_type": 64,
    "target_id": 255,
    "request_id": 128,
    "client_address": 128,
}

__all__ = [
    "SYSTEM_ACTOR",
    "AuditFilter",
    "AuditService",
    "ChainHead",
    "ChainReport",
    "check_exported_chain",
    "redact_secrets",
]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which events to list. ``action`` is exact, or a prefix when it ends in ``*``
    (``"backup.*"``); ``since`` is inclusive and ``until`` exclusive."""

    action: str | None = None
    actor_id: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    outcome: AuditOutcome | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.action is not None:
            clauses.append(_action_clause(self.action))
        for column, value in (
            (AuditEvent.actor_id, self.actor_id),
            (AuditEvent.target_type, self.target_type),
            (AuditEvent.target_id, self.target_id),
            (AuditEvent.outcome, self.outcome),
        ):
            if value is not None:
                clauses.append(column == value)
        if self.since is not None:
            clauses.append(AuditEvent.occurred_at >= self.since)
        if self.until is not None:
            clauses.append(AuditEvent.occurred_at < self.until)
        return clauses


def _action_clause(action: str) -> ColumnElement[bool]:
    if action.endswith("*"):
        return AuditEvent.action.startswith(action[:-1], autoescape=True)
    return AuditEvent.action == action


class AuditService:
    """Records, verifies, lists and exports the audit trail kept in the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def record(
        self,
        action: str,
        *,
        actor_id: str | None,
        actor_name: str,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        target_type: str | None = None,
        target_id: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> AuditEvent:
        """Append one event and commit it; raise if it cannot be stored.

        Secrets in ``details`` (keys such as ``password`` or ``token``, passwords in URLs) are
        redacted before anything is hashed or stored.
        """
        draft = EventDraft(
            action=action,
            actor_id=actor_id,
            actor_name=actor_name,
            outcome=AuditOutcome(outcome),
            target_type=target_type,
            target_id=target_id,
            reason=reason,
            details=details or {},
            request_id=request_id,
            client_address=client_address,
        )
        _check_draft(draft)
        try:
            with self._catalog.session(write_lock=True) as session:
                event = append_event(session, draft)
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"the audit event {action!r} could not be recorded: {_first_line(exc)}"
            ) from exc
        return event

    def head(self) -> ChainHead | None:
        """The last event's seq and hash (an anchor to keep elsewhere), None when empty."""
        with self._catalog.session() as session:
            return chain_head(session)

    def last_seq(self) -> int:
        """The seq of the last event, 0 when the trail is empty."""
        head = self.head()
        return 0 if head is None else head.seq

    def verify(self, *, anchors: Iterable[ChainHead] = ()) -> ChainReport:
        """Check the whole chain (and that each anchor is still in it)."""
        with self._catalog.session() as session:
            return verify_chain(session, anchors=anchors)

    def verify_or_raise(self, *, anchors: Iterable[ChainHead] = ()) -> ChainReport:
        """:meth:`verify`, raising :class:`AuditChainError` when the chain is broken."""
        report = self.verify(anchors=anchors)
        if not report.ok:
            raise AuditChainError(
                f"audit trail broken at event {report.first_bad_seq}: {report.problem}"
            )
        return report

    def list(
        self,
        filters: AuditFilter | None = None,
        *,
        offset: int = 0,
        limit: int = 100,
        newest_first: bool = True,
    ) -> Sequence[AuditEvent]:
        """One page of events matching ``filters``."""
        if offset < 0 or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInputError(f"offset must be >= 0 and limit between 1 and {MAX_PAGE_SIZE}")
        order = AuditEvent.seq.desc() if newest_first else AuditEvent.seq.asc()
        statement = (
            sa.select(AuditEvent)
            .where(*(filters or AuditFilter()).clauses())
            .order_by(order)
            .offset(offset)
            .limit(limit)
        )
        with self._catalog.session() as session:
            return session.scalars(statement).all()

    def count(self, filters: AuditFilter | None = None) -> int:
        """How many events match ``filters`` (for paging)."""
        statement = (
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(*(filters or AuditFilter()).clauses())
        )
        with self._catalog.session() as session:
            return session.execute(statement).scalar_one()

    def export_all(self, *, until_seq: int | None = None) -> Iterator[dict[str, Any]]:
        """Every event up to ``until_seq`` (default: the head when called), in seq order.

        Each is a JSON-ready dict with its hash, one per JSONL line in a backup bundle. Batches
        are read in short transactions, so a slow consumer holds no lock on the catalog.
        """
        if until_seq is None:
            head = self.head()
            until_seq = 0 if head is None else head.seq
        last = 0
        while last < until_seq:
            with self._catalog.session() as session:
                events = iter_events(session, after_seq=last, until_seq=until_seq)
                batch = list(islice(events, _EXPORT_BATCH))
            if not batch:
                return
            for event in batch:
                yield event_document(event)
            last = batch[-1].seq


def check_exported_chain(events: Iterable[Mapping[str, Any]]) -> str | None:
    """The first problem of an exported trail (a bundle's audit part), or None if intact."""
    report = verify_documents(events)
    return None if report.ok else f"audit trail: {report.problem}"


def _check_draft(draft: EventDraft) -> None:
    """Refuse events that could not be stored, before any lock is taken."""
    if not draft.action.strip() or not draft.actor_name.strip():
        raise InvalidInputError("an audit event needs an action and the actor's printed name")
    for name, limit in _FIELD_LIMITS.items():
        value = getattr(draft, name)
        if value is not None and len(value) > limit:
            raise InvalidInputError(f"audit event {name} is longer than {limit} characters")
    try:
        json_ready(draft.details)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"audit event details are not JSON: {exc}") from exc


def _first_line(exc: SQLAlchemyError) -> str:
    """The driver's message without SQLAlchemy's appended statement and parameters."""
    origin = getattr(exc, "orig", None) or exc
    text = str(origin).strip()
    return text.splitlines()[0] if text else type(origin).__name__

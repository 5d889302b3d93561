"""Electronic signatures (21 CFR 11.50, 11.70, 11.100, 11.200).

A signature is the signed-in user re-entering their username and password, choosing a
meaning from :data:`MEANINGS` and giving a reason. It is bound to one exact *operation*: a
JSON object naming at least its ``action`` (``{"action": "restore.execute", "target_type":
"backup", "target_id": "...", ...}``), whose SHA-256 over canonical JSON is stored with the
signature, so a signature cannot be carried over to any other operation.

Two flows:

* :meth:`SignatureService.sign` signs and applies at once (the request carries the
  credentials, the server builds the operation).
* :meth:`SignatureService.presign` signs first and :meth:`SignatureService.consume` applies
  later: a presigned signature is used once, within :data:`PRESIGN_LIFETIME`, by its signer,
  for an operation with the same hash. A stored signature has no target until it is applied,
  which is how a used one is told from an unused one.

A wrong password counts toward lockout exactly like a failed login. Every signature, failure
and refusal is audited; no secret reaches the audit trail.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from clinvault.catalog.audit import canonical_json, format_timestamp, json_ready, redact_secrets
from clinvault.catalog.models import AuditOutcome, Signature, User
from clinvault.errors import InvalidInputError, PermissionDeniedError
from clinvault.services.identity import IdentityStore, Origin, Principal

__all__ = [
    "MEANINGS",
    "PRESIGN_LIFETIME",
    "SignatureService",
    "operation_hash",
    "signature_to_json",
]

MEANINGS: Final = (
    "Approved restore",
    "Approved deletion",
    "Reviewed",
    "Authored",
    "Verified",
    "Responsible",
)
PRESIGN_LIFETIME: Final = timedelta(minutes=5)
MAX_REASON: Final = 2000
REFUSED: Final = "signature refused: wrong username or password, or the account is locked"


def operation_hash(operation: Mapping[str, Any]) -> str:
    """SHA-256 of the operation's canonical JSON (sorted keys, UUIDs and times as text)."""
    return hashlib.sha256(canonical_json(json_ready(operation))).hexdigest()


def signature_to_json(signature: Signature) -> dict[str, Any]:
    """A signature as shown in restore history, backup details and API answers."""
    return {
        "id": str(signature.id),
        "user_id": str(signature.user_id),
        "printed_name": signature.printed_name,
        "meaning": signature.meaning,
        "reason": signature.reason,
        "signed_at": format_timestamp(signature.signed_at),
        "operation_hash": signature.operation_hash,
        "operation": signature.operation,
        "target_type": signature.target_type,
        "target_id": signature.target_id,
    }


class SignatureService(IdentityStore):
    """Signing operations, and applying presigned signatures exactly once."""

    operation_hash = staticmethod(operation_hash)
    to_json = staticmethod(signature_to_json)

    def sign(
        self,
        principal: Principal,
        username: str,
        password: str,
        meaning: str,
        reason: str,
        operation: Mapping[str, Any],
        *,
        required_meaning: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        client_address: str | None = None,
        request_id: str | None = None,
    ) -> Signature:
        """Sign ``operation`` and apply the signature to its target at once.

        The target is ``target_type``/``target_id`` or, when not given, the operation's
        ``target_type`` and ``target_id`` fields.
        """
        return self._sign(
            principal,
            _Credentials(username, password, meaning, reason),
            operation,
            required_meaning=required_meaning,
            target=_target(operation, target_type, target_id),
            origin=Origin(request_id, client_address),
        )

    def presign(
        self,
        principal: Principal,
        username: str,
        password: str,
        meaning: str,
        reason: str,
        operation: Mapping[str, Any],
        *,
        required_meaning: str | None = None,
        client_address: str | None = None,
        request_id: str | None = None,
    ) -> Signature:
        """Sign ``operation`` now, to be applied by :meth:`consume` within five minutes."""
        return self._sign(
            principal,
            _Credentials(username, password, meaning, reason),
            operation,
            required_meaning=required_meaning,
            target=None,
            origin=Origin(request_id, client_address),
        )

    def expires_at(self, signature: Signature) -> datetime:
        """When a presigned signature can no longer be applied."""
        return signature.signed_at + PRESIGN_LIFETIME

    def consume(
        self,
        signature_id: uuid.UUID,
        principal: Principal,
        operation: Mapping[str, Any],
        *,
        required_meaning: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        client_address: str | None = None,
        request_id: str | None = None,
    ) -> Signature:
        """Apply a presigned signature to ``operation``; refused (and audited) unless it
        was made by ``principal`` for an operation with the same hash, is unused, unexpired,
        and has the required meaning."""
        origin = Origin(request_id, client_address)
        target = _target(operation, target_type, target_id)
        digest = operation_hash(_operation_document(operation))
        now = self.now()
        problem: str | None = None
        with self.write() as session:
            signature = session.get(Signature, signature_id, with_for_update=True)
            problem = self._consume_problem(signature, principal, digest, required_meaning, now)
            if signature is not None and problem is None:
                signature.target_type, signature.target_id = target
            self.audit(
                session,
                "signature.consume" if problem is None else "signature.refused",
                principal.actor(),
                origin,
                outcome=AuditOutcome.SUCCESS if problem is None else AuditOutcome.DENIED,
                target_type=target[0],
                target_id=target[1],
                reason=None if signature is None else signature.reason,
                details={
                    "signature_id": str(signature_id),
                    "action": operation.get("action"),
                    "operation_hash": digest,
                    "signed_operation_hash": None
                    if signature is None
                    else signature.operation_hash,
                    "meaning": None if signature is None else signature.meaning,
                    **({} if problem is None else {"problem": problem}),
                },
            )
        if problem is not None or signature is None:
            raise PermissionDeniedError(f"signature refused: {problem}")
        return signature

    def _consume_problem(
        self,
        signature: Signature | None,
        principal: Principal,
        digest: str,
        required_meaning: str | None,
        now: datetime,
    ) -> str | None:
        if signature is None or signature.user_id != principal.user_id:
            return "no such signature by the signed-in user"
        if signature.target_type is not None or signature.target_id is not None:
            return "the signature has already been used"
        if now > self.expires_at(signature):
            return f"the signature expired {PRESIGN_LIFETIME.seconds // 60} minutes after signing"
        if signature.operation_hash != digest:
            return "the signature was given for a different operation"
        if required_meaning is not None and signature.meaning != required_meaning:
            return f"this operation needs the meaning {required_meaning!r}"
        return None

    def for_target(self, target_type: str, target_id: str) -> Sequence[Signature]:
        """The signatures applied to one target, oldest first."""
        with self.read() as session:
            return session.scalars(
                sa.select(Signature)
                .where(Signature.target_type == target_type, Signature.target_id == target_id)
                .order_by(Signature.signed_at)
            ).all()

    def get(self, signature_id: uuid.UUID) -> Signature | None:
        with self.read() as session:
            return session.get(Signature, signature_id)

    # --- signing ------------------------------------------------------------------------------

    def _sign(
        self,
        principal: Principal,
        given: _Credentials,
        operation: Mapping[str, Any],
        *,
        required_meaning: str | None,
        target: tuple[str, str] | None,
        origin: Origin,
    ) -> Signature:
        meaning = given.meaning
        try:
            document = _operation_document(operation)
            text = _checked_reason(given.reason)
            _check_meaning(meaning, required_meaning)
        except InvalidInputError as exc:
            details = {"meaning": meaning[:64], "action": str(operation.get("action"))[:128]}
            self.record_failure(
                "signature.fail", principal.actor(), origin, exc.message, details=details
            )
            raise
        digest = operation_hash(document)
        facts = {"action": document["action"], "operation_hash": digest, "meaning": meaning}
        signer_matches = given.username.strip().lower() == principal.username
        with self.read() as session:
            user = session.get(User, principal.user_id)
        password_ok = (
            signer_matches
            and user is not None
            and self.passwords.verify(user.password_hash, given.password)
        )
        now = self.now()
        signature: Signature | None = None
        with self.write() as session:
            user = session.get(User, principal.user_id, with_for_update=True)
            if user is None:
                raise PermissionDeniedError(REFUSED)
            cause = self._refusal(user, signer_matches, password_ok, now)
            if cause is None:
                self.clear_failures(user)
                signature = Signature(
                    user_id=user.id,
                    printed_name=user.full_name,
                    meaning=meaning,
                    reason=text,
                    signed_at=now,
                    operation_hash=digest,
                    operation=document,
                    target_type=None if target is None else target[0],
                    target_id=None if target is None else target[1],
                )
                session.add(signature)
                session.flush()
                facts |= {"signature_id": str(signature.id), "presigned": target is None}
            else:
                locked_now = cause != "locked" and self.register_failure(session, user, now)
                facts |= {"cause": cause}
                if locked_now:
                    self.audit_lock(session, user, origin, "failed signatures")
            self.audit(
                session,
                "signature.create" if cause is None else "signature.fail",
                principal.actor(),
                origin,
                outcome=AuditOutcome.SUCCESS if cause is None else AuditOutcome.FAILURE,
                target_type=None if target is None else target[0],
                target_id=None if target is None else target[1],
                reason=text,
                details=facts,
            )
        if signature is None:
            if cause == "signer_mismatch":
                raise PermissionDeniedError("the signer must be the signed-in user")
            raise PermissionDeniedError(REFUSED)
        return signature

    def _refusal(
        self, user: User, signer_matches: bool, password_ok: bool, now: datetime
    ) -> str | None:
        if not user.is_active:
            return "inactive"
        if self.is_locked(user, now):
            return "locked"
        if not signer_matches:
            return "signer_mismatch"
        return None if password_ok else "bad_password"


@dataclass(frozen=True, slots=True)
class _Credentials:
    """What the signer typed."""

    username: str
    password: str = field(repr=False)
    meaning: str
    reason: str


def _operation_document(operation: Mapping[str, Any]) -> dict[str, Any]:
    """The operation as stored and hashed; it names its action and carries no secret."""
    try:
        document = json_ready(operation)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the operation to sign is not a JSON object: {exc}") from exc
    action = document.get("action")
    if not isinstance(action, str) or not action.strip():
        raise InvalidInputError("the operation to sign must name its action")
    if redact_secrets(document) != document:
        raise InvalidInputError("the operation to sign must not carry secrets")
    return document


def _target(
    operation: Mapping[str, Any], target_type: str | None, target_id: str | None
) -> tuple[str, str]:
    kind = target_type if target_type is not None else operation.get("target_type")
    key = target_id if target_id is not None else operation.get("target_id")
    if kind is None or key is None or not str(kind).strip() or not str(key).strip():
        raise InvalidInputError("a signed operation must name its target_type and target_id")
    return str(kind)[:64], str(key)[:255]


def _checked_reason(reason: str) -> str:
    text = reason.strip()
    if not text or len(text) > MAX_REASON:
        raise InvalidInputError(f"a signature needs a reason of 1 to {MAX_REASON} characters")
    return text


def _check_meaning(meaning: str, required: str | None) -> None:
    if meaning not in MEANINGS:
        raise InvalidInputError(f"the meaning must be one of: {', '.join(MEANINGS)}")
    if required is not None and meaning != required:
        raise InvalidInputError(f"this operation needs the meaning {required!r}")

"""Electronic signatures: presign an operation, to apply the signature to it within minutes.

Endpoints that need a signature (restore, delete) either take a ``signature`` object with
the request, or the id of a signature made here for exactly the same operation.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from clinvault.api.deps import client_address, request_id
from clinvault.api.schemas.signatures import PresignIn, PresignOut
from clinvault.api.security import AdminDep, SignaturesDep

router = APIRouter(prefix="/signatures", tags=["signatures"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Sign an operation in advance",
    responses={
        403: {"description": "Wrong password, locked account, or signer is not the caller"},
        422: {"description": "Meaning not in the list, no reason, or no action"},
    },
)
def presign(
    body: PresignIn, principal: AdminDep, request: Request, signatures: SignaturesDep
) -> PresignOut:
    """Re-enter your username and password, choose a meaning and give a reason: the
    signature is bound to the SHA-256 of ``operation`` and can be used once, by you, for
    that same operation, within five minutes. A wrong password counts toward lockout."""
    given = body.signature
    signature = signatures.presign(
        principal,
        given.username,
        given.password.get_secret_value(),
        given.meaning,
        given.reason,
        body.operation,
        client_address=client_address(request),
        request_id=request_id(request),
    )
    return PresignOut(
        id=signature.id,
        operation_hash=signature.operation_hash,
        expires_at=signatures.expires_at(signature),
        meaning=signature.meaning,
        printed_name=signature.printed_name,
        signed_at=signature.signed_at,
    )

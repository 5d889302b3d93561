"""Electronic signatures: presigning an operation, and a signature as shown."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clinvault.api.security import SIGNATURE_EXAMPLE, SignatureIn


class PresignIn(BaseModel):
    """Sign an operation now and apply the signature with it within five minutes."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "operation": {
                        "action": "backup.delete",
                        "target_type": "backup",
                        "target_id": "0b6f3c8e-3a1d-4a57-8f5e-2f4f7a1b9c10",
                    },
                    "signature": SIGNATURE_EXAMPLE,
                }
            ]
        }
    )

    operation: dict[str, Any] = Field(
        description="The exact operation, as the endpoint that applies the signature builds "
        "it; it names at least its action. The SHA-256 of its canonical JSON binds the "
        "signature to it."
    )
    signature: SignatureIn


class PresignOut(BaseModel):
    """A presigned signature: pass its id to the operation within ``expires_at``."""

    id: uuid.UUID
    operation_hash: str = Field(description="SHA-256 of the operation's canonical JSON.")
    expires_at: datetime
    meaning: str
    printed_name: str
    signed_at: datetime


class SignatureOut(BaseModel):
    """A signature as kept: who (printed name), when (UTC), meaning, reason, and what."""

    id: uuid.UUID
    user_id: uuid.UUID
    printed_name: str
    meaning: str
    reason: str
    signed_at: str = Field(description="UTC, ISO 8601 with Z.")
    operation_hash: str
    operation: dict[str, Any]
    target_type: str | None
    target_id: str | None

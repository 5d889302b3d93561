"""The one exception tree of ClinVault.

Errors are raised where they happen and translated once: to an exit code in the CLI and to an
HTTP status in the API. Messages are written for an operator and never carry a secret.

    ClinVaultError                      exit 1, HTTP 500
    ├── ConfigError                     exit 2, HTTP 500   settings missing or invalid
    ├── InvalidInputError               exit 2, HTTP 422   a request that cannot be served as given
    ├── NotFoundError                   exit 3, HTTP 404   backup, object, user, ... does not exist
    ├── ConflictError                   exit 4, HTTP 409   name taken, operation already running
    ├── StorageError                    exit 5, HTTP 502   the storage backend failed
    ├── ToolError                       exit 6, HTTP 500   pg_dump / pg_restore / psql failed
    │   └── ToolNotFoundError           exit 6, HTTP 500   no suitable client binary
    ├── DatabaseError                   exit 6, HTTP 502   the platform database refused or failed
    ├── IntegrityError                  exit 7, HTTP 422   a checksum, size or count does not match
    │   └── IncompleteBackupError       exit 7, HTTP 422   the bundle has no manifest
    ├── FormatError                     exit 7, HTTP 422   a bundle ClinVault cannot read
    ├── AuditChainError                 exit 8, HTTP 500   the audit trail fails verification
    ├── CancelledError                  exit 130, HTTP 409 the operation was cancelled
    └── AuthError                       exit 9, HTTP 401   not authenticated
        └── PermissionDeniedError       exit 9, HTTP 403   authenticated but not allowed
"""

from __future__ import annotations


class ClinVaultError(Exception):
    """Base of every error ClinVault raises on purpose."""

    exit_code: int = 1
    http_status: int = 500
    title: str = "ClinVault error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ClinVaultError):
    exit_code = 2
    title = "Configuration error"


class InvalidInputError(ClinVaultError):
    exit_code = 2
    http_status = 422
    title = "Invalid input"


class NotFoundError(ClinVaultError):
    exit_code = 3
    http_status = 404
    title = "Not found"


class ConflictError(ClinVaultError):
    exit_code = 4
    http_status = 409
    title = "Conflict"


class StorageError(ClinVaultError):
    exit_code = 5
    http_status = 502
    title = "Storage error"


class ToolError(ClinVaultError):
    exit_code = 6
    title = "PostgreSQL tool failed"


class ToolNotFoundError(ToolError):
    title = "PostgreSQL tool not found"


class DatabaseError(ClinVaultError):
    exit_code = 6
    http_status = 502
    title = "Database error"


class IntegrityError(ClinVaultError):
    exit_code = 7
    http_status = 422
    title = "Integrity check failed"


class IncompleteBackupError(IntegrityError):
    title = "Backup incomplete"


class FormatError(ClinVaultError):
    exit_code = 7
    http_status = 422
    title = "Unreadable bundle"


class AuditChainError(ClinVaultError):
    exit_code = 8
    title = "Audit trail verification failed"


class CancelledError(ClinVaultError):
    exit_code = 130
    http_status = 409
    title = "Cancelled"


class AuthError(ClinVaultError):
    exit_code = 9
    http_status = 401
    title = "Authentication required"


class PermissionDeniedError(AuthError):
    http_status = 403
    title = "Permission denied"

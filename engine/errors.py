"""The one exception tree of assetsync.

Every error the engine raises is an :class:`EngineError`. Library exceptions (aiohttp, OSError,
sqlite3) are translated where they arise (``raise ... from exc``) so callers never need to know
which library was underneath. Each class says whether trying again can help (``retryable``) and
which process exit code it maps to (``exit_code``)::

    EngineError
    ├── UsageError                  bad input, bad config, bad destination          exit 2
    ├── AuthError                   the platform refused the token                  exit 3
    ├── LockHeldError               another run holds the lock on DEST              exit 4
    ├── Interrupted                 SIGINT / SIGTERM                                exit 130/143
    ├── PlatformError               the platform API answered with an error
    │   ├── NotFoundError           404 (unknown version, asset, data)
    │   ├── AnswerTooLarge          an answer's decoded body passed ``api_max_body``
    │   └── ApiUnavailable          429 / 5xx / connection failure       retryable
    ├── TransferError               one object could not be written to one file
    │   ├── TransientTransferError  connection reset, 5xx, 429, stall    retryable
    │   │   ├── StallError          no byte for the stall timeout
    │   │   │   └── SlowBodyError   a body below the minimum rate over its window
    │   │   ├── UrlExpired          storage said the signed URL expired  (refresh, then retry)
    │   │   └── ObjectChanged       the object changed under a resume    (restart from zero)
    │   └── PermanentTransferError  404/410, 403 on a fresh URL, bad size    not retryable
    │       └── IntegrityError      the bytes do not match what the server announced
    ├── LocalStorageError           the local disk refused a write
    │   └── DiskFullError           ENOSPC: partial files are kept for a later resume
    └── ManifestError               the manifest database is unusable

``retry_after`` carries a server's ``Retry-After`` (seconds) when there was one.

Task groups (anyio) report failures as exception groups; :func:`primary_error` is the one rule
for turning such a group back into the error a caller should see.
Messages never contain tokens or URL signatures: pass URLs through
:func:`engine.signed_urls.redact` before putting them in a message.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AnswerTooLarge",
    "ApiUnavailable",
    "AuthError",
    "DiskFullError",
    "EngineError",
    "IntegrityError",
    "Interrupted",
    "LocalStorageError",
    "LockHeldError",
    "ManifestError",
    "NotFoundError",
    "ObjectChanged",
    "PermanentTransferError",
    "PlatformError",
    "SlowBodyError",
    "StallError",
    "TransferError",
    "TransientTransferError",
    "UrlExpired",
    "UsageError",
    "primary_error",
]


class EngineError(Exception):
    """Base of every error assetsync raises."""

    retryable: ClassVar[bool] = False
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class UsageError(EngineError):
    """Bad command line, bad configuration or bad destination: nothing was attempted."""

    exit_code = 2


class AuthError(EngineError):
    """The platform rejected the token (401/403 on the API)."""

    exit_code = 3


class LockHeldError(EngineError):
    """Another live run holds the lock on the destination."""

    exit_code = 4


class Interrupted(EngineError):
    """The run was stopped by a signal after saving its state."""

    def __init__(self, message: str, *, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number

    @property
    def code(self) -> int:
        """The conventional shell exit code: 128 + signal number (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signal_number


class PlatformError(EngineError):
    """The platform API answered with an error status."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class NotFoundError(PlatformError):
    """The platform has no such object (404)."""


class AnswerTooLarge(PlatformError):
    """An answer's decoded body grew past ``api_max_body``: refused, and not retried (the same
    request gets the same answer; a smaller request, or a larger setting, is what helps)."""


class ApiUnavailable(PlatformError):
    """The API is overloaded or unreachable (429, 5xx, connection failure): try again later."""

    retryable = True


class TransferError(EngineError):
    """An object could not be transferred to its file."""


class TransientTransferError(TransferError):
    """A failure that another attempt can fix (reset, 5xx, 429, timeout)."""

    retryable = True


class StallError(TransientTransferError):
    """No byte arrived for the stall timeout."""


class SlowBodyError(StallError):
    """A body arrived slower than the minimum rate over a whole window (a drip that no stall
    timeout catches). Retried from the bytes kept, but what it kept is not progress."""


class UrlExpired(TransientTransferError):
    """Storage answered that the signed URL expired: get a fresh one and carry on."""


class ObjectChanged(TransientTransferError):
    """The object changed between two requests: the partial bytes must be discarded."""


class PermanentTransferError(TransferError):
    """A failure another attempt will not fix (404/410, 403 on a fresh URL)."""


class IntegrityError(PermanentTransferError):
    """The bytes received do not match the size or validator the server announced."""


class LocalStorageError(EngineError):
    """The local file system refused an operation."""


class DiskFullError(LocalStorageError):
    """No space left on the destination's device; partial files are kept for resume."""


class ManifestError(EngineError):
    """The manifest database could not be opened, migrated or written."""


def _leaves(exc: BaseException) -> list[BaseException]:
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]


def _severity(exc: EngineError) -> int:
    # Lower explains more. The local disk first: nothing else can go on, and the error it stands
    # beside is usually the teardown it caused. Then what no retry fixes (a refused token, a
    # 404, a size that does not match) over what one may: a sibling's connection reset merely
    # came along. Among retryable errors, "the object changed" first: it must discard the bytes
    # kept, where a plain retry would resume onto them.
    if isinstance(exc, LocalStorageError):
        return 0
    if not exc.retryable:
        return 1
    if isinstance(exc, ObjectChanged):
        return 2
    return 3


def primary_error(exc: BaseException) -> BaseException:
    """The error an exception group stands for, or ``exc`` itself when it is not a group.

    Task groups wrap whatever their tasks raised, nested as deep as the task groups were. The
    caller wants the one error that explains the failure:

    1. the :class:`EngineError` among the leaves that explains most (it carries the exit code,
       and the other leaves are errors that merely came along as the group was torn down): a
       local storage error, else one no retry fixes, else an :class:`ObjectChanged`, else any;
       the first of its kind in the group's order;
    2. else, if a leaf is not an :class:`Exception` (a cancellation, ``KeyboardInterrupt``,
       ``SystemExit``, a generator's ``GeneratorExit``), the group unchanged, or that leaf when
       it is the only one: those must propagate as they are;
    3. else the first leaf: a bug, which surfaces as itself with its own traceback.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = _leaves(exc)
    ours = [leaf for leaf in leaves if isinstance(leaf, EngineError)]
    if ours:
        return min(ours, key=_severity)  # min keeps the first of equal severity
    if not leaves:
        return exc
    if any(not isinstance(leaf, Exception) for leaf in leaves):
        return leaves[0] if len(leaves) == 1 else exc
    return leaves[0]

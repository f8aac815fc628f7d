"""One exception hierarchy. Every message says what is wrong and, where it can, what to do;
the CLI prints it on one line and exits with the error's exit code (no traceback)."""

from __future__ import annotations


class PrepIQError(Exception):
    """Base of every error a user of the platform can act on."""

    exit_code: int = 2


class ConfigError(PrepIQError):
    """A setting, a parameter or a command-line value is wrong."""


class UnsupportedURLError(ConfigError):
    """A database URL of a scheme the platform cannot use."""


class SourceUnavailableError(PrepIQError):
    """The source database cannot be reached (names the host and the driver's error)."""


class ContractError(PrepIQError):
    """A database does not follow the PrepIQ data contract (missing table or column)."""


class SourceNotEmptyError(PrepIQError):
    """Seeding would mix synthetic rows into a database that already holds data."""


class DataValidationError(PrepIQError):
    """The data gate stopped a snapshot: names table, column, expectation, failing share."""


class SourceDataError(PrepIQError):
    """A source row holds a value the contract's type cannot take (names table and column)."""


class RegistryError(PrepIQError):
    """The model registry is not in the state an operation needs (a missing alias, a
    version that does not load): names the model, the alias and the version."""


class PromotionLockedError(RegistryError):
    """Another promotion of the same model held its lock for longer than the timeout."""


class HoldoutError(PrepIQError):
    """A frozen hold-out is missing, unreadable or changed since it was frozen."""


class HoldoutTooSmallError(PrepIQError):
    """A model's hold-out is smaller than its `min_holdout` in params.yaml: names the
    model, the size and the knobs that change it."""


class ArchiveError(PrepIQError):
    """Archiving stopped: the archive and the table disagree about a batch (names the file
    and the id range), or another archive run holds the lock."""


class DataVersionError(PrepIQError):
    """A snapshot cannot be pushed to or restored from the DVC remote (names the snapshot
    or its hash and the remote)."""

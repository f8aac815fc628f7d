"""Aliases on registered model versions. A newly trained version becomes `challenger`;
the promotion gate (`registry.promotion`, not this module) decides when a challenger
becomes `champion`, and keeps the champion it replaces as `previous` (for rollback)."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points at, or None."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def mark_challenger(client: MlflowClient, name: str, version: str) -> str | None:
    """Alias a new version `challenger`; returns the current champion's version (None
    before the first promotion: `prepiq promote` decides)."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    return alias_version(client, name, CHAMPION)

"""Aliases on registered model versions. A newly trained version becomes `challenger`;
the promotion gate (not this module) decides when a challenger becomes `champion`."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points at, or None."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def mark_challenger(client: MlflowClient, name: str, version: str) -> bool:
    """Alias a new version `challenger`. Until the promotion gate exists, the first version
    of a model also becomes `champion` (returns True when it did)."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    if alias_version(client, name, CHAMPION) is None:
        client.set_registered_model_alias(name, CHAMPION, version)
        return True
    return False

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


def all_aliases(client: MlflowClient, names: set[str]) -> dict[str, dict[str, str]]:
    """Alias -> version of each registered model in `names` (one registry call per page
    of the models whose names share their prefix)."""
    prefix = min(names, default="")
    for name in names:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    aliases: dict[str, dict[str, str]] = {}
    token = None
    while True:
        page = client.search_registered_models(
            filter_string=f"name LIKE '{prefix}%'", max_results=100, page_token=token
        )
        for model in page:
            if model.name in names:
                aliases[model.name] = {a: str(v) for a, v in (model.aliases or {}).items()}
        token = page.token
        if not token:
            return aliases

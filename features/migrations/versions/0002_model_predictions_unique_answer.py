"""model_predictions: one row per model answer

A unique index on (request_id, model_name, created_at): the service's prediction log
inserts with `ON CONFLICT DO NOTHING` on it, so replaying a crashed worker's spool stores
no prediction twice. Rows already stored twice (same request, model and instant) keep the
lowest id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 08:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_model_predictions_request_id_model_name_created_at"


def upgrade() -> None:
    op.execute(
        "DELETE FROM model_predictions WHERE id NOT IN ("
        " SELECT MIN(id) FROM model_predictions GROUP BY request_id, model_name, created_at)"
    )
    op.create_index(
        op.f(INDEX),
        "model_predictions",
        ["request_id", "model_name", "created_at"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(op.f(INDEX), table_name="model_predictions")

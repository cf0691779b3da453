"""SMTP TLS reports (RFC 8460), one row per report and policy, without addresses

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 10:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backend_tls_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("organization", sa.String(200), nullable=False),
        sa.Column("report_id", sa.String(200), nullable=False),
        sa.Column("policy_domain", sa.String(253), nullable=False, index=True),
        sa.Column("policy_type", sa.String(16), nullable=False),
        sa.Column("start_at", sa.Integer(), nullable=False),
        sa.Column("end_at", sa.Integer(), nullable=False),
        sa.Column("successful", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Text(), nullable=False),
        sa.Column("received_at", sa.Integer(), nullable=False, index=True),
        sa.UniqueConstraint(
            "organization",
            "report_id",
            "policy_domain",
            "policy_type",
            name="uq_backend_tls_reports",
        ),
    )


def downgrade() -> None:
    op.drop_table("backend_tls_reports")

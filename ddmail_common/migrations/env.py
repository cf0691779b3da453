"""Alembic environment: one schema for the deployment, each table prefixed by its owner."""

from __future__ import annotations

from alembic import context

import ddmail_backend.models
import ddmail_keyhandler.models  # noqa: F401 - registers the keyhandler's tables
import ddmail_keyhandler.openpgp_models as keyhandler_openpgp  # noqa: F401 - OpenPGP tables
import ddmail_web.audit
import ddmail_web.funds_models
import ddmail_web.models
from ddmail_common.db import Base, make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""
engine = make_engine(url)
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
# The model modules are imported for their tables.
assert ddmail_backend.models and ddmail_web.models and ddmail_web.audit and ddmail_web.funds_models

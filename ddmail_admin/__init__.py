"""The operator's commands (`ddmail admin ...`): production code, independent of the local stack."""

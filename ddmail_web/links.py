"""Links to the panel's own pages, built once per app: a page has about twenty of them and
`url_for` was a tenth of a settings page's cost (docs/performance-panel.md)."""

from __future__ import annotations

from typing import Any

from flask import current_app, request, url_for


def path(endpoint: str, **values: Any) -> str:
    """`url_for(endpoint, **values)`, remembered (for links whose values are constants)."""
    cache: dict[tuple[object, ...], str] = current_app.extensions.setdefault("ddmail_links", {})
    key = (request.script_root, endpoint, *sorted(values.items()))
    found = cache.get(key)
    if found is None:
        found = cache[key] = url_for(endpoint, **values)
    return found

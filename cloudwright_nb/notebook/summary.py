"""The text face of a widget, for outputs that no widget front end renders."""

from __future__ import annotations

from typing import Any


class TextSummary:
    """Mix into an ipywidgets widget that has `summary()`: its text/plain becomes that text.

    nbconvert, a terminal, or a notebook reopened without its kernel show text/plain.
    """

    def summary(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        if isinstance(bundle, tuple):
            bundle = bundle[0]
        bundle["text/plain"] = self.summary()
        return bundle

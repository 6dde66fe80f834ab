"""`%state`: a browser of the application's stored values, built from standard ipywidgets."""

from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as widgets

from ..state.module import StateModule
from .summary import TextSummary

MAX_ROWS = 200
FOLD_CHARACTERS = 160


class StateBrowser(TextSummary, widgets.VBox):
    """Keys, values (pretty JSON, long ones folded) and expiries, with filter, refresh, delete."""

    def __init__(self, state: StateModule) -> None:
        self.state = state
        self._filter = widgets.Text(placeholder="filter keys", continuous_update=True)
        self._filter.add_class("cw-filter")
        self._refresh = widgets.Button(description="Refresh", icon="refresh")
        self._refresh.add_class("cw-refresh")
        self._status = widgets.HTML()
        self._rows = widgets.VBox()
        self._filter.observe(lambda _: self.refresh(), names="value")
        self._refresh.on_click(lambda _: self.refresh())
        super().__init__([widgets.HBox([self._filter, self._refresh]), self._status, self._rows])
        self.add_class("cw-state-browser")
        self.refresh()

    def _entries(self) -> list[tuple[str, Any]]:
        needle = self._filter.value.strip().lower()
        return sorted((key, value) for key, value in self.state.items() if needle in key.lower())

    def summary(self) -> str:
        entries = self._entries()
        lines = [f"state of application {self.state.app!r}: {len(entries)} key(s)"]
        for key, value in entries[:MAX_ROWS]:
            lines.append(f"  {key} = {_short(json.dumps(value, ensure_ascii=False))}")
        return "\n".join(lines)

    def refresh(self) -> None:
        """Read every key again from the store and redraw the rows."""
        entries = self._entries()
        rows = [self._row(key, value) for key, value in entries[:MAX_ROWS]]
        shown = f"{len(rows)} of {len(entries)}" if len(entries) > MAX_ROWS else f"{len(rows)}"
        self._status.value = (
            f"<b>{html.escape(self.state.app)}</b>: {shown} key(s)"
            if entries
            else f"<b>{html.escape(self.state.app)}</b>: no keys"
        )
        self._rows.children = rows

    def _row(self, key: str, value: Any) -> widgets.HBox:
        expires_at = self.state.expires_at(key)
        expiry = expires_at.strftime("%Y-%m-%d %H:%M UTC") if expires_at else "-"
        key_cell = widgets.HTML(f"<code>{html.escape(key)}</code>")
        key_cell.add_class("cw-state-key")
        value_cell = widgets.HTML(_value_html(value), layout=widgets.Layout(flex="1"))
        value_cell.add_class("cw-state-value")
        delete = widgets.Button(description="Delete", icon="trash", button_style="danger")
        delete.add_class("cw-delete")
        delete.on_click(lambda _: self._delete(key))
        row = widgets.HBox([key_cell, value_cell, widgets.HTML(expiry), delete])
        row.add_class("cw-state-row")
        return row

    def _delete(self, key: str) -> None:
        self.state.delete(key)
        self.refresh()


def _value_html(value: Any) -> str:
    pretty = json.dumps(value, indent=2, ensure_ascii=False)
    if len(pretty) <= FOLD_CHARACTERS and pretty.count("\n") < 6:
        return f"<pre>{html.escape(pretty)}</pre>"
    compact = json.dumps(value, ensure_ascii=False)
    return (
        f"<details><summary><code>{html.escape(_short(compact))}</code></summary>"
        f"<pre>{html.escape(pretty)}</pre></details>"
    )


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."

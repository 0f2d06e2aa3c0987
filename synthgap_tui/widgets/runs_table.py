"""A DataTable for thousands of rows with fixed-width columns.

DataTable measures every new or updated cell to size auto-width columns: at
5,000 runs that is 45,000 measurements, over a second, on every launch. With
all widths fixed there is nothing to learn from them, so this table skips the
measuring and only sets the scrollable size. (It overrides two private
methods of Textual's DataTable; textual is pinned in pyproject.toml and the
snapshot tests would show a change.)
"""

from __future__ import annotations

from textual.binding import Binding
from textual.geometry import Size
from textual.widgets import DataTable


class RunsTable(DataTable):
    # DataTable keeps enter out of the footer; here it is the key that opens a run.
    BINDINGS = [Binding("enter", "select_cursor", "Open", key_display="⏎")]

    def _all_fixed(self) -> bool:
        return all(not column.auto_width for column in self.columns.values())

    def _update_dimensions(self, new_rows) -> None:
        if not self._all_fixed():
            return super()._update_dimensions(new_rows)
        width = sum(column.get_render_width(self) for column in self.columns.values())
        header = self.header_height if self.show_header else 0
        self.virtual_size = Size(width + self._row_label_column_width, self._total_row_height + header)

    def _update_column_widths(self, updated_cells) -> None:
        if not self._all_fixed():
            super()._update_column_widths(updated_cells)

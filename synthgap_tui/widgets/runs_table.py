"""The runs table: a virtual table that renders only the rows on screen.

Textual's DataTable keeps a row object per row and measures cells as they are
added: 15 s to open at 50,000 runs. This table holds only the ordered run ids
(the screen filters and sorts off the UI thread) and asks the screen for the
cells of the rows it draws, through Textual's line API; a live update
repaints the lines of the runs that changed, when they are on screen.
"""

from __future__ import annotations

from typing import Callable, Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cells = Callable[[str], Sequence["Text | str"]]


class _TableMessage(Message):
    def __init__(self, table: "RunsTable") -> None:
        super().__init__()
        self.table = table

    @property
    def control(self) -> "RunsTable":  # what @on(..., "#runs") matches
        return self.table


class RunsTable(ScrollView, can_focus=True):
    BINDINGS = [
        Binding("enter", "select_cursor", "Open", key_display="⏎"),
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
    ]
    COMPONENT_CLASSES = {"runs-table--header", "runs-table--cursor", "runs-table--even-row"}

    cursor_row: reactive[int] = reactive(0, always_update=True)

    class RowSelected(_TableMessage):
        def __init__(self, table: "RunsTable", run_id: str) -> None:
            super().__init__(table)
            self.run_id = run_id

    class HeaderSelected(_TableMessage):
        def __init__(self, table: "RunsTable", column_key: str) -> None:
            super().__init__(table)
            self.column_key = column_key

    def __init__(self, cells: Cells, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cells = cells
        self.columns: dict[str, tuple[str, int]] = {}  # key -> title, width
        self.rows: list[str] = []  # run ids, in display order
        self._index: dict[str, int] = {}

    # -- model -------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self.rows)

    def set_columns(self, columns: list[tuple[str, str, int]]) -> None:
        self.columns = {key: (title, width) for key, title, width in columns}
        self._resize()
        self.refresh()

    def set_rows(self, run_ids: list[str]) -> None:
        """A new order; the cursor stays on its run when that run is still shown."""
        current = self.cursor_run_id()
        self.rows = run_ids
        self._index = {run_id: i for i, run_id in enumerate(run_ids)}
        self._resize()
        at = self._index.get(current, min(self.cursor_row, max(len(run_ids) - 1, 0)))
        self.cursor_row = at
        self.refresh()

    def refresh_runs(self, run_ids) -> None:
        """Repaint the lines of these runs that are on screen."""
        top = self.scroll_offset.y
        for run_id in run_ids:
            i = self._index.get(run_id)
            if i is not None and top <= i < top + self._body_height():
                self.refresh_line(1 + i - top)

    def shows(self, run_id: str) -> bool:
        return run_id in self._index

    def get_row_at(self, row: int) -> list:
        return self.get_row(self.rows[row])

    def get_row(self, run_id: str) -> list:
        return list(self.cells(run_id))

    def get_cell(self, run_id: str, column_key: str):
        return self.get_row(run_id)[list(self.columns).index(column_key)]

    def cursor_run_id(self) -> str | None:
        return self.rows[self.cursor_row] if 0 <= self.cursor_row < len(self.rows) else None

    def _body_height(self) -> int:
        return max(self.size.height - 1, 1)

    def _width(self) -> int:
        return sum(w + 2 for _, w in self.columns.values())

    def _resize(self) -> None:
        self.virtual_size = Size(self._width(), len(self.rows) + 1)

    # -- cursor ------------------------------------------------------------------
    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, len(self.rows) - 1))

    def watch_cursor_row(self, old: int, new: int) -> None:
        top = self.scroll_offset.y
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new >= top + self._body_height():
            self.scroll_to(y=new - self._body_height() + 1, animate=False)
        for row in (old, new):
            if self.scroll_offset.y <= row < self.scroll_offset.y + self._body_height():
                self.refresh_line(1 + row - self.scroll_offset.y)

    def action_cursor(self, step: int) -> None:
        self.cursor_row += step

    def action_page(self, direction: int) -> None:
        self.cursor_row += direction * self._body_height()

    def action_cursor_to(self, row: int) -> None:
        self.cursor_row = row if row >= 0 else len(self.rows) - 1

    def action_select_cursor(self) -> None:
        run_id = self.cursor_run_id()
        if run_id is not None:
            self.post_message(self.RowSelected(self, run_id))

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = event.x + self.scroll_offset.x
            for key, (_, width) in self.columns.items():
                if x < width + 2:
                    self.post_message(self.HeaderSelected(self, key))
                    return
                x -= width + 2
            return
        row = self.scroll_offset.y + event.y - 1
        if 0 <= row < len(self.rows):
            if row == self.cursor_row:
                self.action_select_cursor()
            self.cursor_row = row

    # -- rendering ---------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            style = self.get_component_rich_style("runs-table--header")
            return self._strip([title for title, _ in self.columns.values()], style, width)
        row = self.scroll_offset.y + y - 1
        if row >= len(self.rows):
            return Strip.blank(width, self.rich_style)
        if row == self.cursor_row:
            style = self.get_component_rich_style("runs-table--cursor")
        elif row % 2:
            style = self.get_component_rich_style("runs-table--even-row")
        else:
            style = self.rich_style
        return self._strip(self.cells(self.rows[row]), style, width)

    def _strip(self, cells: Sequence, style: Style, width: int) -> Strip:
        line = Text(no_wrap=True, overflow="ellipsis")
        for (_, w), cell in zip(self.columns.values(), cells):
            text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
            text.truncate(w, overflow="ellipsis", pad=True)
            line.append(" ")
            line.append_text(text)
            line.append(" ")
        segments = list(Segment.apply_style(line.render(self.app.console), post_style=None, style=style))
        return Strip(segments, line.cell_len).crop_extend(self.scroll_offset.x, self.scroll_offset.x + width, style)


"""A calm notice when the run index cannot be read, with the fix one key away."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class IndexProblemScreen(ModalScreen[bool]):
    """Dismissed with True when the user asks for `synthgap db rebuild`."""

    BINDINGS = [
        Binding("r", "rebuild", "Rebuild the index"),
        Binding("escape", "later", "Not now"),
    ]

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(id="index-problem"):
            yield Static("[b]The run index cannot be read[/b]", id="index-problem-title")
            yield Static(escape(self.message))
            yield Static("Runs keep going and nothing in the run folders is lost: `synthgap db rebuild` "
                         "recreates the index from them. The app carries on once the index reads again.")
            with Horizontal(id="index-problem-buttons"):
                yield Button("Rebuild now (r)", id="rebuild", variant="primary")
                yield Button("Not now (esc)", id="later")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "rebuild")

    def action_rebuild(self) -> None:
        self.dismiss(True)

    def action_later(self) -> None:
        self.dismiss(False)

"""A yes/no question in a modal: y confirms, escape does not (not n: on the screens below
n writes a note, and a key means one thing)."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Dismissed with True when the user confirms."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, body: str, yes: str = "Yes (y)", no: str = "No (esc)") -> None:
        super().__init__()
        self.title_text, self.body, self.yes, self.no = title, body, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="confirm"):
            yield Static(f"[b]{escape(self.title_text)}[/b]", classes="confirm-title")
            yield Static(escape(self.body), classes="confirm-body")
            with Horizontal(classes="confirm-buttons"):
                yield Button(self.yes, id="yes", variant="primary")
                yield Button(self.no, id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

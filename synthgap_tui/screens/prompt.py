"""Ask for a line (tags) or a text (a note) in a modal: ctrl+s applies, escape leaves."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static, TextArea


class PromptScreen(ModalScreen[str | None]):
    """Dismissed with the text, or None when left with escape."""

    BINDINGS = [
        Binding("ctrl+s", "apply", "Apply"),
        Binding("escape", "leave", "Cancel"),
    ]

    def __init__(self, title: str, text: str = "", multiline: bool = False, hint: str = "") -> None:
        super().__init__()
        self.title_text, self.text, self.multiline, self.hint = title, text, multiline, hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="confirm"):
            yield Static(f"[b]{escape(self.title_text)}[/b]", classes="confirm-title")
            if self.multiline:
                yield TextArea(self.text, id="prompt-text")
            else:
                yield Input(self.text, id="prompt-text")
            yield Static(escape(self.hint or "ctrl+s applies, escape cancels"), classes="confirm-body")

    def on_input_submitted(self) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        field = self.query_one("#prompt-text")
        self.dismiss(field.text if isinstance(field, TextArea) else field.value)

    def action_leave(self) -> None:
        self.dismiss(None)

"""A calm notice when the run index cannot be read, with the fix one key away."""

from __future__ import annotations

from textual.binding import Binding

from synthgap_tui.screens.confirm import ConfirmScreen


class IndexProblemScreen(ConfirmScreen):
    """Dismissed with True when the user asks for `synthgap db rebuild`."""

    BINDINGS = [Binding("r", "answer(True)", "Rebuild the index")]

    def __init__(self, message: str) -> None:
        super().__init__(
            "The run index cannot be read",
            f"{message}\n\nRuns keep going and nothing in the run folders is lost: r rebuilds the index "
            "from them. The app carries on once the index reads again.",
            yes="Rebuild now (r)", no="Not now (esc)")
        self.message = message

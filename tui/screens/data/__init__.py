"""Data: every stored pair in a table, with who judged it; search, views, view/edit, delete, swap, overrule,
move, import, export, and a "review" view of the likely mislabels.

`screen.py` is the screen; `review.py` holds the review view's rows (plain Python, no Textual).
"""

from tui.screens.data.screen import DataScreen

__all__ = ["DataScreen"]

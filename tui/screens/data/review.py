"""The Data screen's "review" view: the pairs the trained model disagrees with most, worst first, and the
contradictions among the labels. Plain Python, no Textual: the screen draws what this holds.

A review (`mlx_dpo.training.review.review_pairs`, run on the app's model thread: it needs the model) gives
each pair's implicit reward margin under the latest trained version; the most negative margins are the
likely mislabels. Fixing one in the view must not need a new review: a swap (or an overrule, which swaps)
exchanges the two answers' rewards, so its margin is the same number negated, exactly; an edit makes the
margin stale (shown as such until the next review); a delete removes the row. Contradictions (the same
answers judged both ways, or a cycle) need no model, so they are found again from the store after every
change (`mlx_dpo.data.contradictions`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mlx_dpo.api import find_contradictions


@dataclass(frozen=True)
class ReviewRow:
    pair_id: int
    margin: float | None  # None: no trained version to measure it (a contradicted pair shown alone)
    state: str = ""  # "", "swapped" or "edited" (its margin measured before the edit)


class ReviewList:
    def __init__(self, report) -> None:
        """`report`: a ReviewReport (items worst first, contradictions, version)."""
        self.version: str | None = report.version
        self.rows: list[ReviewRow] = [ReviewRow(item.pair_id, item.margin) for item in report.items]
        self.contradictions = list(report.contradictions)
        self.skipped = len(report.skipped)  # pairs the model could not read (too long...): not ranked
        reviewed = {row.pair_id for row in self.rows}
        # A contradicted pair the review did not measure (no finished round yet) is still listed, last.
        for contradiction in self.contradictions:
            for pair_id in contradiction.pair_ids:
                if pair_id not in reviewed:
                    reviewed.add(pair_id)
                    self.rows.append(ReviewRow(pair_id, None))

    # --- what the screen shows ---

    def flags(self) -> dict[int, str]:
        """For each pair in a contradiction, its kind ("reversed" or "cycle")."""
        out: dict[int, str] = {}
        for contradiction in self.contradictions:
            for pair_id in contradiction.pair_ids:
                out.setdefault(pair_id, contradiction.kind)
        return out

    def margin_text(self, row: ReviewRow) -> str:
        if row.margin is None:
            return "–"
        return f"{row.margin:+.2f}" + ("?" if row.state == "edited" else "")

    def summary(self) -> str:
        flagged = len(self.flags())
        head = (
            f"review by {self.version}: {len(self.rows)} pairs, worst first"
            if self.version
            else "no trained version yet: contradictions only"
        )
        head += f" · {self.skipped} not scored (data review lists why)" if self.skipped else ""
        return head + (f" · {len(self.contradictions)} contradiction(s) over {flagged} pairs" if flagged else "")

    # --- changes made in the view ---

    def swapped(self, pair_id: int) -> None:
        self._change(
            pair_id,
            lambda row: replace(
                row,
                margin=None if row.margin is None else -row.margin,
                state="" if row.state == "swapped" else "swapped",
            ),
        )

    def edited(self, pair_id: int) -> None:
        self._change(pair_id, lambda row: replace(row, state="edited"))

    def deleted(self, pair_id: int) -> None:
        self.rows = [row for row in self.rows if row.pair_id != pair_id]

    def recheck(self, pairs) -> None:
        """The store's pairs now: contradictions found again, rows of vanished pairs dropped."""
        present = {p.id for p in pairs}
        self.rows = [row for row in self.rows if row.pair_id in present]
        self.contradictions = list(find_contradictions(pairs))

    def _change(self, pair_id: int, change) -> None:
        self.rows = [change(row) if row.pair_id == pair_id else row for row in self.rows]

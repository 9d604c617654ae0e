"""Answers shown on the Label screen and not judged yet, kept in the store so a quit loses nothing.

One is kept at a time: keeping new answers forgets the old ones, and older ones found at start are
leftovers of a crash. Saving a label deletes the candidate in the same transaction (`add_pair(...,
candidate_id=)`), so after a label the screen only lets go of the id (`judged`). Keeping is a
convenience: failures never stop labeling (the caller shows a warning at most).
"""

from __future__ import annotations

from mlx_dpo.api import Candidate, PreferenceStore


class KeptCandidate:
    def __init__(self, store: PreferenceStore) -> None:
        self.store = store
        self.id: int | None = None  # the candidate of the shown answers, if kept

    def restore(self) -> Candidate | None:
        """The newest candidate of an earlier session, now the kept one; None if there is none."""
        try:
            candidates = self.store.list_candidates()
        except Exception:  # noqa: BLE001 - restoring is a convenience; the app must start regardless
            return None
        if not candidates:
            return None
        for old in candidates[:-1]:
            self._forget(old.id)
        self.id = candidates[-1].id
        return candidates[-1]

    def keep(self, messages: list[dict], answers: tuple[str, str], sampler: str | None) -> str | None:
        """Keep these answers instead of any kept before; returns the error if the store refused."""
        self.drop()
        try:
            self.id = self.store.add_candidate(messages, list(answers), sampler=sampler).id
        except Exception as e:  # noqa: BLE001 - a convenience: labeling goes on without it
            return str(e)
        return None

    def drop(self) -> None:
        """The answers were replaced or skipped unjudged: a restart must not bring them back."""
        if self.id is not None:
            candidate_id, self.id = self.id, None
            self._forget(candidate_id)

    def judged(self) -> None:
        """A label was saved with `candidate_id=self.id`: the store deleted the candidate with it."""
        self.id = None

    def _forget(self, candidate_id: int) -> None:
        try:
            self.store.delete_candidate(candidate_id)
        except Exception:  # noqa: BLE001 - already gone, or the store is closing: nothing to undo
            pass

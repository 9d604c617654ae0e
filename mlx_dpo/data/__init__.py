"""Preference data: the rules a pair must meet, reading and writing JSONL, and the workspace's SQLite store.

  pairs.py          the pair rules (`check_pair`, the one place they are stated), JSONL read/write
  store.py          PreferenceStore: pairs, ties/skips, sampled candidates, undo, import/export, stats
  round_records.py  training-round records (RoundRecord) and which pairs a finished round has trained
  records.py        the frozen records the store returns, and the values its columns may hold
  database.py       the SQLite file: opening it, its lock, one committed transaction per call
  thread_records.py conversations as trees: which labelled turn each pair continues
  schema.py         the tables, their migrations and the schema version check

Nothing here uses MLX or a model, so the app's screens may import it freely.
"""

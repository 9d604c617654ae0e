"""The names of the numbers that runs, rounds and held-out measurements report: one place for the keys the
library writes and the command line, the app, the trackers and the model card read.

A training step's numbers are named as TRL's trainers log them (DPO's rewards/* and logps/*, ORPO's
nll_loss, KTO's kl), so a tracker's plots line up with TRL's; an evaluation during a run prefixes them
with `eval_`. A round's record adds the reference cache's hits and misses, how many pairs were new, and
its held-out numbers (`heldout/...`, training/heldout.py), with the base's beside them (`heldout_base/...`).
"""

# --- a training step (training/methods.py per example, training/trainer.py over the logging window) ---
LOSS = "loss"
REWARD_CHOSEN = "rewards/chosen"
REWARD_REJECTED = "rewards/rejected"
MARGIN = "rewards/margins"
ACCURACY = "rewards/accuracies"
LOGPS_CHOSEN = "logps/chosen"
LOGPS_REJECTED = "logps/rejected"
NLL_LOSS = "nll_loss"  # ORPO's and RPO's negative log-likelihood of the chosen answer
KTO_KL = "kl"  # KTO's batch estimate of KL(policy || reference), not the held-out KL below
LEARNING_RATE = "learning_rate"
TOKENS_PER_SECOND = "tokens_per_second"
PEAK_MEMORY_GB = "peak_memory_gb"
EVAL = "eval_"  # prefix: an evaluation's numbers during a run (eval_loss, eval_rewards/accuracies, ...)

# --- a run's reference pass and a round's record (training/run.py, training/rounds.py) ---
REF_HITS = "ref_cache/hits"
REF_MISSES = "ref_cache/misses"
NEW_PAIRS = "new_pairs"
REPLAYED_PAIRS = "replayed_pairs"
NEW_FEEDBACK = "new_feedback"

# --- held out (training/heldout.py, whose docstring says what each one measures) ---
HELDOUT = "heldout/"  # prefix
HELDOUT_BASE = "heldout_base/"  # prefix: the base's number, copied into every round's record
HELDOUT_ACCURACY = "heldout/accuracy"
HELDOUT_MARGIN = "heldout/margin"
HELDOUT_KL = "heldout/kl"
HELDOUT_SCORE = "heldout/score"
HELDOUT_WIN_VS_PREVIOUS = "heldout/win_vs_previous"
HELDOUT_WIN_VS_BASE = "heldout/win_vs_base"
HELDOUT_REPETITION = "heldout/repetition"
HELDOUT_UNFINISHED = "heldout/unfinished"
HELDOUT_SAMPLES = "heldout/samples"
HELDOUT_COMPARED_PREVIOUS = "heldout/compared_previous"
HELDOUT_COMPARED_BASE = "heldout/compared_base"
HELDOUT_ERROR = "heldout/error"  # why a round could not be measured


def base_key(key: str) -> str:
    """A held-out number's name for the base's value: `heldout/kl` -> `heldout_base/kl`."""
    return HELDOUT_BASE + key.removeprefix(HELDOUT)

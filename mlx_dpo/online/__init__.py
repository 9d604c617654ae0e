"""Online rounds: sample answers from the latest version, judge them, store the judged pairs, train a round.

- `sampling`: many prompts' answers at once with mlx-lm's batched generation (`sample_answers`).
- `judges`: who judges a pair: a Python score or preference function, a local LLM asked in both orders,
  or a person (`load_judge(spec)`); `verdict` holds the Judge interface and its Verdict, `llm_judge` the
  LLM judge (next-token log-probs of "1" vs "2", both orders).
- `loop`: the rounds themselves (`run_online`): next prompts -> sample -> judge -> store -> train -> measure;
  a restart goes on where it stopped.
- `demo_judges`: small judges shipped with the package whose preference anyone can see.
"""

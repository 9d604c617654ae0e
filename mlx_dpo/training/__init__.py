"""Training: pairs to tokens, batches, log-probs, losses, the cached reference pass, the loop, rounds."""

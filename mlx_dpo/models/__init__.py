"""Models: resolve a `--model` value and load it, import GGUF files, put a LoRA adapter on, generate."""

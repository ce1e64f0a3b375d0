"""tinygpt: GPT-2 on the `tensor` framework — model, tokenizers, data, training, CLI."""
__version__ = "0.1.0"

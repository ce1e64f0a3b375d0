"""tinygpt: GPT-2 on the `tensor` framework — model, tokenizers, data, training, CLI.

    import tinygpt
    model, tok, description = tinygpt.load("gpt2")     # or a Hugging Face directory, or a run
    ids = model.generate(tok.encode("Hello"), 20, temperature=0.8, top_k=40, seed=0)
    print(tok.decode(ids.tolist()))
"""
import os as _os

__version__ = "0.1.0"

# OpenBLAS's idle threads sleep after 2^24 cycles instead of 2^28: set before any tinygpt module
# imports NumPy. Why, and the value: tensor/__init__.py (tensor.OPENBLAS_THREAD_TIMEOUT).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "24")


def load(name_or_dir, **options):
    """(model in eval mode, tokenizer, description) from a released GPT-2 name ("gpt2",
    "gpt2-medium", ...), a Hugging Face GPT-2 directory, or a `tinygpt train` run. The same call
    as tinygpt.loading.load_model, whose options it takes: which="best" or "latest" (a run's
    checkpoint), dtype=np.float32, log (a function for a run's warnings).

    The loader is imported here, on call, so that `import tinygpt` stays cheap."""
    from .loading import load_model
    return load_model(name_or_dir, **options)

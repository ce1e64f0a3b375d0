"""Reading a training run the way the tests need it: through the one loader, plus the config.json
of the checkpoint it chose (the iteration, val loss and options the tests check)."""
from tinygpt import checkpoint as ckpt
from tinygpt.loading import load_model


def load_run(path, which="best", log=None, weight_dtype="float32"):
    """(model, tokenizer, config) of a run's best or latest checkpoint, loaded by
    tinygpt.loading.load_model; config is that checkpoint's config.json, with "source" set to
    the loader's description and "checkpoint_dir" to the directory it read. A directory that holds no run raises the checkpoint module's own
    error (what is missing or damaged in it), as `tinygpt sample` would report it."""
    if not ckpt.is_checkpoint(path):
        ckpt.open_source(path, which, log)          # raises the reason it is not a run
    model, tok, description = load_model(path, which=which, log=log, weight_dtype=weight_dtype)
    chosen, config = ckpt.find_checkpoint(path, which)
    return model, tok, {**config, "source": description, "checkpoint_dir": str(chosen.path)}

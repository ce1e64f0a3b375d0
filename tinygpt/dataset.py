"""Text -> token ids -> random training batches.

The bundled corpus is tiny Shakespeare (1,115,394 characters, public domain), in tinygpt/data/.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
SHAKESPEARE = DATA_DIR / "tinyshakespeare.txt"


def read_text(path: str | Path | None = None) -> str:
    """The text of a UTF-8 file (the bundled Shakespeare when path is None)."""
    path = Path(path) if path is not None else SHAKESPEARE
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); "
                         f"convert it to UTF-8 first") from None


@dataclass
class Dataset:
    """Token ids split 90/10 into train and val, and seeded random batches from them."""
    train: np.ndarray    # (N_train,) int64
    val: np.ndarray      # (N_val,)   int64

    @classmethod
    def from_ids(cls, ids: np.ndarray, block_size: int, val_fraction: float = 0.1,
                 source: str = "the text") -> "Dataset":
        ids = np.asarray(ids, dtype=np.int64)
        n_train = int(len(ids) * (1 - val_fraction))
        train, val = ids[:n_train], ids[n_train:]
        for name, part in (("training", train), ("validation", val)):
            if len(part) < block_size + 1:
                raise ValueError(
                    f"{source} is too short: its {name} part has {len(part)} tokens, but one "
                    f"training example needs block_size + 1 = {block_size + 1}. Use a longer "
                    f"text (at least {int((block_size + 1) / min(val_fraction, 1 - val_fraction)) + 1}"
                    f" tokens) or a smaller --block-size.")
        return cls(train, val)

    def batch(self, split: str, batch_size: int, block_size: int, rng: np.random.Generator):
        """x, y of shape (B, T): y is x shifted one token to the left (the next-token targets)."""
        data = self.train if split == "train" else self.val
        starts = rng.integers(0, len(data) - block_size, size=batch_size)      # (B,)
        offsets = starts[:, None] + np.arange(block_size)                      # (B, T)
        return data[offsets], data[offsets + 1]

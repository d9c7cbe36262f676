"""The token table of the CLIP4DM jobs: every caption they score, tokenized once per model (template +
caption, the token -> word map, whether it was cut to the context), and the ragged-array helpers that store
it in the pack. Its own module so that the attribution code and the pack code (pipeline) both use it without
importing each other.
"""

from __future__ import annotations

import json
import logging
from typing import Sequence

import numpy as np

from ..common.errors import InputError
from .words import Tokenized, template_words, tokenize_caption

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- ragged arrays

def flatten(rows: Sequence[Sequence]) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets [n + 1]) of ragged rows."""
    offsets = np.zeros(len(rows) + 1, np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    values = np.concatenate([np.asarray(r) for r in rows]) if offsets[-1] else np.zeros(0)
    return values, offsets


def unflatten(values: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [values[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


# ----------------------------------------------------------------------------- token table

class TokenTable:
    """Tokenized captions by text; texts it lacks are tokenized with `tokenizer`, by default open_clip's
    tokenizer of `arch` (loaded when first needed)."""

    def __init__(self, template: str, context: int, arch: str, truncate: bool = False,
                 rows: dict[str, Tokenized] | None = None, tokenizer=None, words: str = "original"):
        self.template, self.context, self.arch, self.truncate = template, context, arch, truncate
        self.words = words                      # the word rule (clip4dm.words; words.py)
        self.rows: dict[str, Tokenized] = dict(rows or {})
        self._tokenizer = tokenizer
        self._n_template: int | None = None     # template_words of the tokenizer, once it is loaded

    @classmethod
    def for_model(cls, settings: dict, context: int, arch: str) -> "TokenTable":
        """An empty table with the clip4dm settings' template and long-caption rule, for a model of `arch`
        with text context `context`."""
        return cls(settings["template"], context, arch, settings["long_captions"] == "truncate",
                   words=settings.get("words", "original"))

    def tokenizer(self):
        if self._tokenizer is None:
            from ..models.clip import get_tokenizer

            self._tokenizer = get_tokenizer(self.arch)
        return self._tokenizer

    def items(self, captions: Sequence[str], where: Sequence[str] | None = None) -> list[Tokenized]:
        """The tokenized captions. Captions longer than the context are cut (clip4dm.long_captions
        truncate: each one logged) or, with long_captions error, stop the job with every one of them
        listed, not only the first."""
        out, long = [], []
        for i, caption in enumerate(captions):
            item = self.rows.get(caption)
            if item is None:
                if self._n_template is None:    # checks the tokenizer too
                    self._n_template = template_words(self.tokenizer(), self.template, self.words)
                item = tokenize_caption(self.tokenizer(), caption, self.template, self.context, True,
                                        where[i] if where else f"caption {i}", self._n_template, self.words)
                if item.truncated:
                    long.append(f"{where[i] if where else f'caption {i}'}: {caption!r} (words kept: "
                                f"{len(item.words)})")
                self.rows[caption] = item
            out.append(item)
        if long and not self.truncate:
            raise InputError(f"{len(long)} caption(s) longer than the model's context of {self.context} tokens with "
                             f"the template {self.template!r}; set clip4dm.long_captions: truncate to cut them "
                             "(as open_clip's tokenizer cuts them):\n" + "\n".join(long))
        for line in long:
            log.warning("truncated to the context of %d tokens: %s", self.context, line)
        return out

    def truncated(self) -> list[str]:
        """The texts of the table that were cut to the context."""
        return [text for text, item in self.rows.items() if item.truncated]

    def to_arrays(self, prefix: str = "table.") -> dict[str, np.ndarray]:
        items = list(self.rows.values())
        words, offsets = flatten([t.words for t in items])
        meta = {"template": self.template, "context": self.context, "arch": self.arch, "truncate": self.truncate,
                "words": self.words}
        return {f"{prefix}texts": np.asarray(list(self.rows), dtype=str),
                f"{prefix}tokens": np.stack([t.tokens for t in items]),
                f"{prefix}word_of_token": np.stack([t.word_of_token for t in items]),
                f"{prefix}eot": np.asarray([t.eot for t in items]),
                f"{prefix}truncated": np.asarray([t.truncated for t in items]),
                f"{prefix}words": np.asarray(words, dtype=str), f"{prefix}word_offsets": offsets,
                f"{prefix}meta": np.asarray(json.dumps(meta))}

    @classmethod
    def from_arrays(cls, arrays: dict, where: str, prefix: str = "table.") -> "TokenTable":
        try:
            meta = json.loads(str(arrays[f"{prefix}meta"]))
            words = unflatten(arrays[f"{prefix}words"], arrays[f"{prefix}word_offsets"])
            rows = {str(text): Tokenized(arrays[f"{prefix}tokens"][i], int(arrays[f"{prefix}eot"][i]),
                                         [str(w) for w in words[i]], arrays[f"{prefix}word_of_token"][i],
                                         bool(arrays[f"{prefix}truncated"][i]))
                    for i, text in enumerate(arrays[f"{prefix}texts"])}
        except (KeyError, ValueError, IndexError) as exc:
            raise InputError(f"{where}: no usable token table ({type(exc).__name__}: {exc})") from None
        # a pack written before clip4dm.words existed was tokenized by the cleaned rule
        return cls(meta["template"], int(meta["context"]), meta["arch"], bool(meta["truncate"]), rows,
                   words=meta.get("words", "cleaned"))

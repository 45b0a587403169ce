"""Per-row text streaming out of one batched `generate` call.

transformers hands a streamer (`generate(streamer=...)`) the whole batch's tokens: first the
input ids (a causal model's left-padded prompts, an encoder-decoder's decoder start ids), then
one token per row at each step (a finished row gets padding). `RowStreamer` splits each step
per row, decodes every streamed row incrementally and calls that row's callback with the text
that is new and settled.

The pieces of a row join to exactly what decoding all its new tokens gives at the end,
`decode(tokens, skip_special_tokens=True).strip()` (tasks.generate's answer):
- the text is decoded whole each step and only what extends the text sent so far is sent;
- a trailing replacement character (half of a multi-token character) is held back, as is
  trailing whitespace (the answer is stripped) and leading whitespace;
- tokenizers that clean up spaces around punctuation when decoding (which can change text
  already decoded) hold back the last word;
- `end()` sends whatever is left of the final text.

`RowStop` ends single rows early (a streaming caller that went away) without touching the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

REPLACEMENT = "\ufffd"  # what a character cut between tokens decodes to


class RowStreamer:
    """A `generate` streamer that calls `callbacks[row](text)` with each row's new text.

    Rows without a callback are not decoded. The first `put` (the input ids) is skipped."""

    def __init__(self, tokenizer, callbacks: dict[int, Callable[[str], None]]):
        self.tokenizer = tokenizer
        self.callbacks = dict(callbacks)
        self.tokens: dict[int, list[int]] = {row: [] for row in self.callbacks}
        self.sent: dict[int, str] = {row: "" for row in self.callbacks}
        self._prompt_seen = False
        self._hold_word = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))

    def put(self, value) -> None:
        if not self._prompt_seen:  # the prompts (or decoder start ids), not new text
            self._prompt_seen = True
            return
        step = value.reshape(value.shape[0], -1).tolist()
        for row in self.callbacks:
            if row < len(step):
                self.tokens[row].extend(step[row])
                self._send(row, self._settled(self._text(row)))

    def end(self) -> None:
        for row in self.callbacks:
            self._send(row, self._text(row).strip(), final=True)

    def _text(self, row: int) -> str:
        return self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)

    def _settled(self, text: str) -> str:
        text = text.lstrip()
        while text.endswith(REPLACEMENT):
            text = text[:-1]
        if self._hold_word:
            cut = max(text.rfind(" "), text.rfind("\n"))
            text = text[:cut] if cut >= 0 else ""
        return text.rstrip()

    def _send(self, row: int, text: str, final: bool = False) -> None:
        sent = self.sent[row]
        if len(text) <= len(sent):
            return
        if not text.startswith(sent):
            if final:
                logger.warning("row %d decoded differently at the end than while streaming", row)
            return  # decoding changed text already sent: wait for it to settle again
        self.sent[row] = text
        self.callbacks[row](text[len(sent) :])


class RowStop:
    """A `generate` stopping criterion that ends the rows whose `stops[row]()` is true (their
    caller went away): transformers pads a finished row from then on, and the whole call ends
    as soon as every row is finished, so a batch of abandoned rows stops early."""

    def __init__(self, stops: dict[int, Callable[[], bool]]):
        self.stops = dict(stops)

    def __call__(self, input_ids, scores, **kwargs):
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row, stop in self.stops.items():
            if row < len(done) and stop():
                done[row] = True
        return done

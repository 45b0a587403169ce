"""What each task computes from rows of text: batches, the loss, class scores and generations.

Encoder classification (a new head), T-Few classification (labels as answer choices) and
generation share one small interface, used by the training loop, evaluation and the Predictor.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ia3engine.training.losses import (
    IGNORE,
    causal_alignment,
    causal_choice_batch,
    choice_scores,
    pad_rows,
    pair_loss,
    seq2seq_choice_targets,
    tfew_losses,
    token_logprobs,
)
from ia3engine.training.pooling import DEFAULT as DEFAULT_POOLING
from ia3engine.training.pooling import sentence_embedding
from ia3engine.training.streamer import RowStop, RowStreamer

EMBED_BATCH = 32  # rows per no-grad forward when reading features outside training


def readable_length(tokenizer, wanted: int) -> int:
    """`wanted` tokens, or fewer when the tokenizer knows its model reads fewer at once (a
    longer input would overflow the model's position table); the loader teaches it that."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < wanted:
        return limit
    return wanted


@contextlib.contextmanager
def evaluating(model):
    """The model in eval mode (no dropout) inside the block, then back to how it was."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# Listing the options helps instruction-tuned models and costs nothing for the others.
DEFAULT_CHOICE_PROMPT = "{text}\nOptions: {options}.\nAnswer:"
GENERATE_MAX_NEW_TOKENS = 64


class Task:
    """Shared plumbing: tokenizer, device, autocast and the rows -> tensors helpers."""

    task = "classify"
    kind = "encoder"
    metric = "accuracy"  # what early stopping and the best checkpoint follow
    higher_is_better = True

    def __init__(self, tokenizer, labels: list[str], max_length: int, device=None):
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.max_length = readable_length(tokenizer, max_length)
        self.device = torch.device(device or "cpu")
        self.autocast = contextlib.nullcontext  # the trainer swaps in accelerate's autocast

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def batch(self, rows: dict) -> dict:
        raise NotImplementedError

    def loss(self, model, batch: dict) -> torch.Tensor:
        raise NotImplementedError


class EncoderClassify(Task):
    """An encoder with a classification head: cross-entropy on the head's logits, plus (with a
    `pair_weight`) SetFit's pair objective on the body's own sentence embedding (its last
    hidden states pooled as its pre-training pooled them, `pooling.sentence_pooling`), so the
    vectors shape the representation the body already organises by meaning."""

    pair_weight = 0.0
    pooling = DEFAULT_POOLING  # set with pair_weight by the trainer

    def batch(self, rows: dict) -> dict:
        encoded = self._encode(rows["text"])
        encoded["labels"] = torch.tensor(rows["label"], dtype=torch.long)
        return encoded

    def use_pairs(self, weight: float | None, pooling: tuple[str, ...] = DEFAULT_POOLING) -> None:
        """Add the pair objective with this weight, on embeddings pooled with these modes."""
        self.pair_weight = float(weight or 0.0)
        self.pooling = tuple(pooling)

    def _encode(self, texts: list[str]) -> dict:
        return dict(
            self.tokenizer(
                list(texts),
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
        )

    def loss(self, model, batch: dict) -> torch.Tensor:
        cross_entropy, embedding, labels = self.loss_parts(model, batch)
        if embedding is None:
            return cross_entropy
        return cross_entropy + self.pair_weight * pair_loss(embedding, labels)

    def loss_parts(self, model, batch: dict):
        """One forward: the rows' mean cross-entropy, their sentence embeddings (None without
        the pair objective) and their labels. The loop pairs the embeddings of a whole global
        batch itself when the batch is split (`loop.pairs_over_split_batch`)."""
        batch = self.to_device(batch)
        labels = batch.pop("labels")
        pairs = self.pair_weight > 0
        with self.autocast():
            out = model(**batch, output_hidden_states=pairs)
        cross_entropy = F.cross_entropy(out.logits.float(), labels)  # logits (B, num_labels)
        embedding = self._sentence(out, batch) if pairs else None
        return cross_entropy, embedding, labels

    def _sentence(self, out, batch: dict) -> torch.Tensor:
        """The body's sentence embedding: its last hidden states pooled with `pooling`."""
        return sentence_embedding(
            out.hidden_states[-1].float(), batch.get("attention_mask"), self.pooling
        )

    @torch.no_grad()
    def embed(self, model, texts: list[str]) -> torch.Tensor:
        """Sentence embeddings (N, d) of these texts, as the pair objective reads them (call
        inside `evaluating(model)` for no dropout)."""
        parts = []
        for i in range(0, len(texts), EMBED_BATCH):
            batch = self.to_device(self._encode(texts[i : i + EMBED_BATCH]))
            with self.autocast():
                out = model(**batch, output_hidden_states=True)
            parts.append(self._sentence(out, batch).cpu())
        return torch.cat(parts)

    @torch.no_grad()
    def probs(self, model, texts: list[str], adapter_names=None) -> torch.Tensor:
        """Class probabilities (B, num_labels)."""
        inputs = self.to_device(self._encode(texts))
        if adapter_names is not None:
            inputs["adapter_names"] = adapter_names
        with self.autocast():
            logits = model(**inputs).logits
        return torch.softmax(logits.float(), dim=-1).cpu()


class ChoiceClassify(Task):
    """T-Few: every label is an answer choice scored as the continuation of the prompt."""

    def __init__(self, tokenizer, labels, max_length, device=None, kind="causal", prompt=None):
        super().__init__(tokenizer, labels, max_length, device)
        self.kind = kind
        self.prompt = prompt  # None when the data's own template already made the prompt
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        if kind == "causal":
            # a leading space: answers follow "Answer:" as separate words in BPE vocabularies
            self.choices = [
                tokenizer(" " + label, add_special_tokens=False)["input_ids"] + eos
                for label in self.labels
            ]
        else:
            self.choices = [tokenizer(text_target=label)["input_ids"] for label in self.labels]
            self.choices = [c if c[-1:] == eos else c + eos for c in self.choices]

    def prompts(self, texts: list[str]) -> list[str]:
        if self.prompt is None:
            return list(texts)
        options = ", ".join(self.labels)
        return [self.prompt.format(text=t, options=options) for t in texts]

    def batch(self, rows: dict) -> dict:
        return {"text": list(rows["text"]), "label": torch.tensor(rows["label"], dtype=torch.long)}

    def _choice_logits(self, model, texts, adapter_names=None):
        """Aligned logits and targets for every (text, choice) pair: (B*C, T, V), (B*C, T)."""
        count = len(self.choices)
        routed = {}
        if adapter_names is not None:
            routed["adapter_names"] = [n for n in adapter_names for _ in range(count)]
        prompts = self.prompts(texts)
        if self.kind == "causal":
            ids = [self.tokenizer(p)["input_ids"] for p in prompts]
            pad = self.tokenizer.pad_token_id or 0
            batch = self.to_device(causal_choice_batch(ids, self.choices, pad, self.max_length))
            with self.autocast():
                out = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **routed
                )
            return causal_alignment(out.logits, batch["labels"])
        enc = self.tokenizer(
            prompts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        targets = seq2seq_choice_targets(len(texts), self.choices)
        inputs = self.to_device(
            {
                "input_ids": enc["input_ids"].repeat_interleave(count, dim=0),
                "attention_mask": enc["attention_mask"].repeat_interleave(count, dim=0),
                "labels": targets,
            }
        )
        with self.autocast():
            out = model(**inputs, **routed)
        return out.logits, inputs["labels"]

    def loss(self, model, batch: dict) -> torch.Tensor:
        logits, targets = self._choice_logits(model, batch["text"])
        correct = batch["label"].to(logits.device)
        return tfew_losses(logits, targets, len(self.choices), correct).total

    @torch.no_grad()
    def probs(self, model, texts: list[str], adapter_names=None) -> torch.Tensor:
        """Softmax of the negated length-normalised NLLs: rank classification as probabilities."""
        logits, targets = self._choice_logits(model, texts, adapter_names)
        scores = choice_scores(logits, targets, len(self.choices))
        return torch.softmax(-scores, dim=-1).cpu()


class Generate(Task):
    """Prompt -> response: token cross-entropy on the response; exact match by greedy decoding."""

    task = "generate"
    metric = "loss"
    higher_is_better = False

    def __init__(self, tokenizer, max_length, device=None, kind="causal"):
        super().__init__(tokenizer, [], max_length, device)
        self.kind = kind

    def batch(self, rows: dict) -> dict:
        prompts, responses = list(rows["prompt"]), list(rows["response"])
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        if self.kind == "causal":
            prompt_ids = [self.tokenizer(p)["input_ids"] if p else [] for p in prompts]
            answers = [self.tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
            answers = [(a + eos)[: max(1, self.max_length - 1)] for a in answers]
            pad = self.tokenizer.pad_token_id or 0
            rows_ids, rows_labels = [], []
            for p, a in zip(prompt_ids, answers, strict=True):
                keep = max(1, self.max_length - len(a))
                head = p[-keep:] if p else ([self.tokenizer.bos_token_id or pad])
                rows_ids.append(head + a)
                rows_labels.append([IGNORE] * len(head) + a)
            return pad_rows(rows_ids, rows_labels, pad)
        enc = self.tokenizer(
            prompts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        targets = self.tokenizer(
            text_target=responses,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )["input_ids"]
        targets[targets == self.tokenizer.pad_token_id] = IGNORE
        return {**dict(enc), "labels": targets}

    def token_nll(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL of the response tokens and their count."""
        batch = self.to_device(batch)
        with self.autocast():
            out = (
                model(**batch)
                if self.kind == "seq2seq"
                else model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            )
        logits, targets = out.logits, batch["labels"]
        if self.kind == "causal":
            logits, targets = causal_alignment(logits, targets)
        picked, mask = token_logprobs(logits, targets)
        return -picked.sum(), mask.sum()

    def loss(self, model, batch: dict) -> torch.Tensor:
        nll, count = self.token_nll(model, batch)
        return nll / count.clamp(min=1)

    @torch.no_grad()
    def generate(
        self,
        model,
        prompts: list[str],
        adapter_names=None,
        max_new_tokens=None,
        on_piece=None,
        should_stop=None,
    ):
        """Greedy continuations of the prompts, as text.

        on_piece: {row: callback(text)} streams those rows' text as it is generated; the
        pieces of a row join to its answer (streamer.RowStreamer). should_stop: {row:
        callable() -> bool}: a row whose callable turns true stops there (streamer.RowStop);
        its answer is the text so far."""
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        rows = [
            tok(p)["input_ids"][-self.max_length :] if p else [tok.bos_token_id or pad]
            for p in prompts
        ]
        width = max(len(r) for r in rows)
        left = self.kind == "causal"  # a causal model continues from the last real token
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span], mask[i, span] = torch.tensor(row), 1
        extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
        if on_piece:
            extra["streamer"] = RowStreamer(tok, on_piece)
        if should_stop:
            from transformers import StoppingCriteriaList

            extra["stopping_criteria"] = StoppingCriteriaList([RowStop(should_stop)])
        with self.autocast():
            out = model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens or GENERATE_MAX_NEW_TOKENS,
                do_sample=False,
                pad_token_id=pad,
                **extra,
            )
        if left:
            out = out[:, width:]
        return [tok.decode(row, skip_special_tokens=True).strip() for row in out]


EXACT_MATCH_ROWS = 200  # greedy decoding is slow on a CPU; exact match looks at this many rows


@torch.no_grad()
def evaluate(task: Task, model, data, batch_size: int, final: bool = True) -> dict:
    """Metrics on a dataset: accuracy, macro F1 and loss (classify); loss, exact match (generate)."""
    if task.task == "generate":
        return _evaluate_generate(task, model, data, batch_size, final)
    texts, labels = list(data["text"]), list(data["label"])
    if not texts:
        return {}
    probs = torch.cat(
        [task.probs(model, texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    )
    truth = torch.tensor(labels, dtype=torch.long)
    predicted = probs.argmax(dim=-1)
    picked = probs.gather(1, truth.unsqueeze(1)).squeeze(1).clamp(min=1e-12)
    return {
        "accuracy": (predicted == truth).float().mean().item(),
        "f1": macro_f1(predicted, truth, len(task.labels)),
        "loss": -picked.log().mean().item(),
    }


def macro_f1(predicted: torch.Tensor, truth: torch.Tensor, num_labels: int) -> float:
    """F1 averaged over the classes present in the truth or the predictions."""
    scores = []
    for c in range(num_labels):
        tp = ((predicted == c) & (truth == c)).sum().item()
        fp = ((predicted == c) & (truth != c)).sum().item()
        fn = ((predicted != c) & (truth == c)).sum().item()
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def _evaluate_generate(task: Generate, model, data, batch_size: int, final: bool) -> dict:
    prompts, responses = list(data["prompt"]), list(data["response"])
    if not prompts:
        return {}
    nll, count = 0.0, 0
    for i in range(0, len(prompts), batch_size):
        rows = {"prompt": prompts[i : i + batch_size], "response": responses[i : i + batch_size]}
        part, tokens = task.token_nll(model, task.batch(rows))
        nll, count = nll + part.item(), count + int(tokens.item())
    loss = nll / max(count, 1)
    metrics = {"loss": loss, "perplexity": float(torch.tensor(loss).exp().clamp(max=1e6))}
    if final:
        rows = range(min(len(prompts), EXACT_MATCH_ROWS))
        hits = 0
        for i in range(0, len(rows), batch_size):
            chunk = list(rows[i : i + batch_size])
            longest = max(len(task.tokenizer(responses[j])["input_ids"]) for j in chunk)
            outs = task.generate(model, [prompts[j] for j in chunk], max_new_tokens=longest + 2)
            hits += sum(o == responses[j].strip() for o, j in zip(outs, chunk, strict=True))
        metrics["exact_match"] = hits / max(len(rows), 1)
    return metrics


def make_task(
    task: str, kind: str, tokenizer, labels, max_length, device=None, prompt=None
) -> Task:
    """The Task for a task name and base kind: generation, an encoder's head, or answer choices
    (`prompt` is the choice prompt; None leaves the text as the data's template made it)."""
    if task == "generate":
        return Generate(tokenizer, max_length, device, kind=kind)
    if kind == "encoder":
        return EncoderClassify(tokenizer, labels, max_length, device)
    return ChoiceClassify(tokenizer, labels, max_length, device, kind=kind, prompt=prompt)

"""Fine-tuning data: task rows -> token ids + labels, padded batches, and a resumable length-grouped sampler.

enc = encode_examples(read_task_file("sst2/train.tsv", "classification", "sentence", "label"), tok, max_length=128)
batches = FinetuneBatches(enc.examples, batch_size=32, pad_id=tok.pad_id, task="classification", seed=0)
batch = batches.next_batch()  # {"input_ids", "attention_mask", "token_type_ids", "labels"}
for rows, batch in iterate_in_order(enc.examples, 64, tok.pad_id, "classification"): ...

What one example holds, per task (lists have one entry per token):

* classification / regression: input_ids and token_type_ids (BERT-style tokenizers only) of `[CLS] a [SEP] b [SEP]`
  (`a <eos> b` otherwise); labels: the class id (int) or the score (float).
* token-classification: input_ids, token_type_ids (BERT-style); labels: the tag id on the first sub-token of each
  word, -100 on its other pieces and on [CLS]/[SEP] (Hugging Face run_ner with label_all_tokens=False);
  word_starts: the word index of each labelled position, in order, to map predictions back onto words. A word
  the normalizer deletes entirely (a lone zero-width space) has no position and no entry.
* text-to-text: input_ids = prompt + target + [eos]; labels are already shifted for the causal-LM loss
  (labels[t] is the token after input_ids[t]): labels[t] = input_ids[t + 1] where t + 1 is a target position,
  else -100, so the loss falls on target + eos only; prompt_len: input_ids[:prompt_len] is the prompt that
  generation starts from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lmforge.data.batches import IGNORE_INDEX, _StepSampler
from lmforge.data.tasks import TASKS, TaskData
from lmforge.errors import ConfigError, DataError

# Hugging Face's LengthGroupedSampler (trainer_pt_utils.get_length_grouped_indices) sorts within 50 batches:
# enough rows for similar lengths to meet, few enough that the epoch order stays random.
MEGA_BATCH_MULT = 50

TEMPLATES = {
    "summarization": "Dialogue:\n{source}\nSummary: {target}",
    "translation": "English: {source}\nGerman: {target}",
    "default": "{source}\n=> {target}",
}


@dataclass(frozen=True)
class PromptTemplate:
    """A text-to-text prompt: `{source}` once, then `{target}` at the very end (see TEMPLATES).

    The prompt is the text before `{target}` with `{source}` filled in. Spaces that end it move to the front
    of the target ("Summary:" + " The man ..."), so that byte-level BPE sees " The" as it would in running
    text rather than a lone space token.
    """

    template: str

    def __post_init__(self) -> None:
        t, problems = self.template, []
        if t.count("{source}") != 1:
            problems.append("it needs exactly one {source}")
        if t.count("{target}") != 1:
            problems.append("it needs exactly one {target}")
        elif not t.endswith("{target}") or t.find("{source}") > t.find("{target}"):
            problems.append("{target} must come last, after {source} (the model learns to stop at EOS)")
        if problems:
            raise ConfigError(f"prompt template {t!r}: {'; '.join(problems)}; e.g. {TEMPLATES['default']!r}")

    @property
    def parts(self) -> tuple[str, str, str]:
        """(text before {source}, text after it up to the prompt's end, the spaces that lead the target)."""
        prefix, rest = self.template[: -len("{target}")].split("{source}")
        middle = rest.rstrip(" ")
        return prefix, middle, rest[len(middle) :]

    def prompt(self, source: str) -> str:
        prefix, middle, _ = self.parts
        return prefix + source + middle


@dataclass
class Encoded:
    """The encoded rows of a TaskData; examples[i] comes from row source_rows[i] of it."""

    task: str
    examples: list[dict[str, Any]] = field(default_factory=list)
    source_rows: list[int] = field(default_factory=list)
    truncated: int = 0  # examples longer than max_length before cutting
    skipped_empty: int = 0  # rows with an empty text (or pair, or target), left out of examples

    def __len__(self) -> int:
        return len(self.examples)

    def add(self, row: int, example: dict[str, Any]) -> None:
        self.examples.append(example)
        self.source_rows.append(row)


def encode_examples(
    data: TaskData, tokenizer: Any, max_length: int, *, template: PromptTemplate | str | None = None
) -> Encoded:
    """Token ids and labels of every non-empty row of `data`, each at most `max_length` tokens (see module doc).

    Args:
        template: text-to-text only; a PromptTemplate, a template string or a TEMPLATES key. None: "default".
    """
    if data.task not in TASKS:
        raise DataError(f"task {data.task!r} is unknown; use one of {list(TASKS)}")
    if max_length < 1:
        raise ConfigError(f"max_length={max_length} must be at least 1")
    if data.task == "token-classification":
        return _encode_tokens(data, tokenizer, max_length)
    if data.task == "text-to-text":
        template = "default" if template is None else template
        if isinstance(template, str):
            template = PromptTemplate(TEMPLATES.get(template, template))
        return _encode_text_to_text(data, tokenizer, max_length, template)
    out, bert = Encoded(data.task), _is_bert(tokenizer)
    for row, (text, label) in enumerate(zip(data.texts, data.labels)):
        pair = data.text_pairs[row] if data.text_pairs is not None else None
        if not text.strip() or (pair is not None and not pair.strip()):
            out.skipped_empty += 1
            continue
        ids, types = tokenizer.encode_pair(text, pair)
        if len(ids) > max_length:
            out.truncated += 1
            ids, types = tokenizer.encode_pair(text, pair, max_length)
        example = {"input_ids": ids, "labels": int(label) if data.task == "classification" else float(label)}
        if bert:
            example["token_type_ids"] = types
        out.add(row, example)
    return out


def _is_bert(tokenizer: Any) -> bool:
    return tokenizer.cls_id is not None and tokenizer.sep_id is not None


def _encode_tokens(data: TaskData, tokenizer: Any, max_length: int) -> Encoded:
    out, bert = Encoded(data.task), _is_bert(tokenizer)
    budget = max_length - 2 if bert else max_length
    if budget < 1:
        raise ConfigError(f"max_length={max_length} leaves no room for a word between [CLS] and [SEP]")
    words = [[str(w) for w in ws] for ws in data.texts]
    # is_pretokenized keeps our word split: the pre-tokenizer may still cut a word ("don't"), word_ids() joins it
    encodings = tokenizer.backend.encode_batch(words, is_pretokenized=True, add_special_tokens=False)
    for row, (enc, tags) in enumerate(zip(encodings, data.labels)):
        ids, word_ids = enc.ids, enc.word_ids
        if not ids:
            out.skipped_empty += 1
            continue
        if len(ids) > budget:  # cut pieces, not words, as Hugging Face's truncation does; cut words lose labels
            out.truncated += 1
            ids, word_ids = ids[:budget], word_ids[:budget]
        labels, starts = [], []
        for i, w in enumerate(word_ids):
            first = i == 0 or w != word_ids[i - 1]
            labels.append(tags[w] if first else IGNORE_INDEX)
            starts += [w] if first else []
        if bert:
            ids, labels = [tokenizer.cls_id, *ids, tokenizer.sep_id], [IGNORE_INDEX, *labels, IGNORE_INDEX]
        example = {"input_ids": ids, "labels": labels, "word_starts": starts}
        if bert:
            example["token_type_ids"] = [0] * len(ids)
        out.add(row, example)
    return out


def encode_prompt(
    tokenizer: Any, source: str, template: PromptTemplate, max_source_tokens: int | None = None
) -> list[int]:
    """The prompt ids encode_examples builds for `source` (template text + source ids cut to max_source_tokens)."""
    prefix, middle, _ = template.parts
    # piecewise, so that cutting the source never re-tokenizes the template text around it
    return tokenizer.encode(prefix) + tokenizer.encode(source)[:max_source_tokens] + tokenizer.encode(middle)


def _encode_text_to_text(data: TaskData, tokenizer: Any, max_length: int, template: PromptTemplate) -> Encoded:
    if tokenizer.eos_id is None:
        raise DataError(
            f"text-to-text needs a tokenizer with an end-of-sequence token to end each target; this {tokenizer.kind} "
            "tokenizer has none (use a GPT-style bpe or char tokenizer)"
        )
    prefix, middle, lead = template.parts
    before, after = tokenizer.encode(prefix), tokenizer.encode(middle)
    fixed = len(before) + len(after)
    min_source = 0 if fixed else 1  # the prompt needs a token: the first target token is predicted from it
    if fixed + min_source + 2 > max_length:
        raise ConfigError(
            f"max_length={max_length} cannot hold prompt template {template.template!r} ({fixed} tokens) "
            "plus one target token and EOS; raise max_length or shorten the template"
        )
    out = Encoded(data.task)
    for row, (source, target) in enumerate(zip(data.texts, data.labels)):
        if not source.strip() or not target.strip():
            out.skipped_empty += 1
            continue
        src, tgt = tokenizer.encode(source), tokenizer.encode(lead + target)
        over = fixed + len(src) + len(tgt) + 1 - max_length
        if over > 0:  # the source gives way first, then the target
            out.truncated += 1
            cut = min(over, len(src) - min_source)
            src, tgt = src[: len(src) - cut], tgt[: len(tgt) - (over - cut)]
        prompt = before + src + after  # as encode_prompt builds it
        ids = prompt + tgt + [tokenizer.eos_id]
        # shifted: position t predicts ids[t + 1]; the last prompt token predicts the first target token
        labels = [IGNORE_INDEX] * (len(prompt) - 1) + tgt + [tokenizer.eos_id, IGNORE_INDEX]
        out.add(row, {"input_ids": ids, "labels": labels, "prompt_len": len(prompt)})
    return out


def collate(examples: list[dict[str, Any]], pad_id: int, task: str) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask (1 = real token), token_type_ids, labels.

    Each is (B, T) long, except labels: (B,) long for classification, (B,) float32 for regression, (B, T) long
    padded with -100 for token-classification and text-to-text.
    """
    if not examples:
        raise DataError("cannot collate an empty batch")
    T = max(len(e["input_ids"]) for e in examples)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([e[key] + [value] * (T - len(e[key])) for e in examples], dtype=torch.long)

    if "pair_ids" in examples[0]:  # a bi-encoder: the B first sentences, then the B second ones, each alone
        return _collate_pairs_apart(examples, pad_id)
    lengths = torch.tensor([len(e["input_ids"]) for e in examples])
    batch = {"input_ids": pad("input_ids", pad_id), "attention_mask": (torch.arange(T) < lengths[:, None]).long()}
    if "token_type_ids" in examples[0]:
        batch["token_type_ids"] = pad("token_type_ids", 0)
    if task == "classification":
        batch["labels"] = torch.tensor([e["labels"] for e in examples], dtype=torch.long)
    elif task == "regression":
        batch["labels"] = torch.tensor([e["labels"] for e in examples], dtype=torch.float32)
    elif task in ("token-classification", "text-to-text"):
        batch["labels"] = pad("labels", IGNORE_INDEX)
    else:
        raise DataError(f"task {task!r} is unknown; use one of {list(TASKS)}")
    return batch


def _collate_pairs_apart(examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask (2B, T): rows 0..B-1 the first sentences, B..2B-1 the second; labels (B,)."""
    rows = [e["input_ids"] for e in examples] + [e["pair_ids"] for e in examples]
    T = max(len(r) for r in rows)
    lengths = torch.tensor([len(r) for r in rows])
    return {
        "input_ids": torch.tensor([r + [pad_id] * (T - len(r)) for r in rows], dtype=torch.long),
        "attention_mask": (torch.arange(T) < lengths[:, None]).long(),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.float32),
    }


def encode_pairs_apart(data: TaskData, tokenizer: Any, max_length: int) -> Encoded:
    """Regression over sentence pairs for a bi-encoder: each sentence encoded alone ([CLS] a [SEP], [CLS] b [SEP]).

    Each example holds input_ids (the first sentence), pair_ids (the second) and a float label; collate stacks
    the two halves of a batch, and the cosine head (tasks/heads.py) compares them.
    """
    if data.text_pairs is None:
        raise DataError(f"{data.path}: a bi-encoder compares two sentences; name the second with --text-pair-column")
    out = Encoded(data.task)
    for row, (text, pair, label) in enumerate(zip(data.texts, data.text_pairs, data.labels)):
        if not text.strip() or not pair.strip():
            out.skipped_empty += 1
            continue
        a, _ = tokenizer.encode_pair(text, None)
        b, _ = tokenizer.encode_pair(pair, None)
        if len(a) > max_length or len(b) > max_length:
            out.truncated += 1
            a, b = tokenizer.encode_pair(text, None, max_length)[0], tokenizer.encode_pair(pair, None, max_length)[0]
        out.add(row, {"input_ids": a, "pair_ids": b, "labels": float(label)})
    return out


class FinetuneBatches(_StepSampler):
    """Shuffled, length-grouped training batches over encoded examples, epoch after epoch; resumable.

    Epoch e: the rows in a permutation drawn from numpy default_rng([seed, e]); cut into mega-batches of
    MEGA_BATCH_MULT global batches, each sorted by length (longest first) and cut into batches, so similar
    lengths share a batch and padding shrinks; then the batch order is shuffled with the same rng, and the
    batch holding the longest example goes first (as Hugging Face does: an out-of-memory shows at step 0).
    The last batch of an epoch may be partial (drop_last=False).
    Measured on SST-2 train (MiniLM tokenizer, batch 32): padding falls from 66% of the tokens to 3%.

    A step's global batch holds batch_size * world_size rows and rank r takes the r-th of world_size equal
    slices, so the global batch (and the learning rate that goes with it) is the same at every world size,
    and a run can resume on another one. A partial batch with fewer rows than ranks repeats rows so that no
    rank is empty. Batches are a pure function of (seed, step): state_dict() is the step plus the settings.
    """

    kind = "finetune"

    def __init__(
        self,
        examples: list[dict[str, Any]],
        batch_size: int,
        pad_id: int,
        task: str,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        group_by_length: bool = True,
    ) -> None:
        if not examples:
            raise DataError("no examples to fine-tune on: the data is empty or every row was skipped as empty")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1")
        if not 0 <= rank < world_size:
            raise DataError(f"rank={rank} is outside world_size={world_size}")
        self.examples, self.pad_id, self.task, self.seed = examples, pad_id, task, seed
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.group_by_length = group_by_length
        self.global_batch_size = batch_size * world_size
        self.steps_per_epoch = -(-len(examples) // self.global_batch_size)
        self.step = 0
        self._lengths = np.array([len(e["input_ids"]) for e in examples])
        self._plan_epoch, self._plan = -1, []

    def _fixed(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "n_examples": len(self.examples),
            "group_by_length": self.group_by_length,
        }

    @property
    def epoch(self) -> float:
        """Epochs covered so far."""
        return self.step / self.steps_per_epoch

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of `epoch`, in order, as row indexes into `examples`."""
        G, rng = self.global_batch_size, np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.examples))
        if not self.group_by_length:
            return [order[i : i + G] for i in range(0, len(order), G)]
        mega = [order[i : i + MEGA_BATCH_MULT * G] for i in range(0, len(order), MEGA_BATCH_MULT * G)]
        order = np.concatenate([m[np.argsort(-self._lengths[m], kind="stable")] for m in mega])
        batches = [order[i : i + G] for i in range(0, len(order), G)]  # a mega-batch holds whole batches
        batches = [batches[i] for i in rng.permutation(len(batches))]
        longest = max(range(len(batches)), key=lambda i: self._lengths[batches[i]].max())
        batches.insert(0, batches.pop(longest))
        return batches

    def next_batch(self) -> dict[str, torch.Tensor]:
        """This rank's part of the next global batch, collated (see `collate`)."""
        epoch, k = divmod(self.step, self.steps_per_epoch)
        if epoch != self._plan_epoch:
            self._plan, self._plan_epoch = self.epoch_batches(epoch), epoch
        rows = self._plan[k]
        if len(rows) < self.world_size:
            rows = np.resize(rows, self.world_size)  # repeats rows cyclically
        mine = np.array_split(rows, self.world_size)[self.rank]
        self.step += 1
        return collate([self.examples[i] for i in mine], self.pad_id, self.task)

    def __iter__(self) -> FinetuneBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self.next_batch()


def iterate_in_order(
    examples: list[dict[str, Any]], batch_size: int, pad_id: int, task: str
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Evaluation batches: every example once, longest first (less padding, an out-of-memory shows at once).

    Yields (indices, batch): batch row j is examples[indices[j]], so results go back with out[indices[j]] = ...
    """
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        yield indices, collate([examples[i] for i in indices], pad_id, task)

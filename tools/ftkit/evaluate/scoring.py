"""Sum of negative log-likelihoods of the scored tokens of many sequences: batched, no grad, float32."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ftkit.evaluate.spans import Encoded

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SequenceScore:
    nll: float  # sum over the scored tokens, in nats
    tokens: int

    @property
    def logprob(self) -> float:
        return -self.nll


def _pad_id(model: Any) -> int:
    pad = getattr(model.config, "pad_token_id", None)
    return pad if isinstance(pad, int) else 0  # padded positions are masked out; any valid id will do


def score_sequences(
    model: Any,
    sequences: Sequence[Encoded],
    *,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> list[SequenceScore]:
    """Score each sequence's masked tokens, in order. Sequences are batched by length and right-padded."""
    import torch

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].input_ids))
    out: list[SequenceScore | None] = [None] * len(sequences)
    device = next(model.parameters()).device
    pad = _pad_id(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for done in range(0, len(order), batch_size):
                batch = [sequences[i] for i in order[done : done + batch_size]]
                width = max(len(s.input_ids) for s in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                scored = torch.zeros((len(batch), width), dtype=torch.bool)
                for row, seq in enumerate(batch):
                    n = len(seq.input_ids)
                    ids[row, :n] = torch.tensor(seq.input_ids)
                    attention[row, :n] = 1
                    scored[row, :n] = torch.tensor(seq.score_mask)
                logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
                # the token at t is predicted by the logits at t - 1
                targets, keep = ids[:, 1:].to(device), scored[:, 1:].to(device)
                picked = logits[:, :-1][keep].float()
                nll = torch.nn.functional.cross_entropy(picked, targets[keep], reduction="none")
                per_row = torch.zeros(len(batch), dtype=torch.float64, device=device)
                per_row.index_add_(0, keep.nonzero()[:, 0], nll.double())
                for row, index in enumerate(order[done : done + batch_size]):
                    out[index] = SequenceScore(float(per_row[row]), int(keep[row].sum()))
                if progress:
                    progress(min(done + batch_size, len(order)), len(order))
    finally:
        model.train(was_training)
    return [s for s in out if s is not None]

"""Per-sequence scoring: the mean token loss of every row under a reference model.

Each row is scored on its own, as ``<|endoftext|> + tokens`` (the way packing presents a
document: after an EOS), truncated to ``max_length`` tokens; its score is the mean
cross-entropy of predicting each of its tokens. Rows are batched by length (sorted, so padding
is small; right-padded, so the causal mask alone keeps pads out of every real token's view),
run under ``torch.inference_mode`` and the per-token losses reduced in bulk;
:func:`score_texts_reference` is the plain one-row-at-a-time computation the fast path is
tested against. Empty rows get NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from dataforge.slm.tokenizer import encode_batch


_VOCAB_SLICE = 2048  # positions projected onto the vocabulary at a time


def _device_of(model):
    return next(model.parameters()).device


def _ids_for(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    eos = tokenizer.eos_token_id
    return [([eos] + ids)[:max_length] for ids in encode_batch(tokenizer, texts)]


def score_ids(model, ids: list[list[int]], batch_size: int = 32, on_batch: Callable[[int, int], None] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(mean token loss, scored tokens) per sequence of ``ids`` (each starting with EOS).
    ``on_batch(rows, tokens)`` is called after each batch."""
    import torch
    import torch.nn.functional as F

    n = len(ids)
    losses = np.full(n, np.nan, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    device = _device_of(model)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    was_training = model.training
    model.eval()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    try:
        with torch.inference_mode(), autocast:
            for start in range(0, n, batch_size):
                rows = order[start:start + batch_size]
                rows = rows[lengths[rows] >= 2]
                if len(rows) == 0:
                    continue
                width = int(lengths[rows].max())
                batch = np.full((len(rows), width), pad, dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for j, r in enumerate(rows):
                    batch[j, : lengths[r]] = ids[r]
                    mask[j, : lengths[r]] = 1
                x = torch.from_numpy(batch).to(device)
                m = torch.from_numpy(mask).to(device)
                # right padding under a causal mask: no real token can see a pad, so no padding
                # mask is needed, and attention keeps its fast is_causal path
                hidden = decoder(input_ids=x, use_cache=False).last_hidden_state[:, :-1]
                valid = m[:, 1:].bool()
                # the vocabulary projection only for real positions, in slices: a [B, T, V] logits
                # tensor of a whole batch is hundreds of MB of memory traffic for nothing
                h = hidden[valid]
                target = x[:, 1:][valid]
                row = torch.arange(len(rows), device=device).unsqueeze(1).expand_as(valid)[valid]
                tok_loss = torch.empty(len(target), dtype=torch.float32, device=device)
                for lo in range(0, len(target), _VOCAB_SLICE):
                    logits = head(h[lo:lo + _VOCAB_SLICE]).float()
                    tok_loss[lo:lo + _VOCAB_SLICE] = F.cross_entropy(logits, target[lo:lo + _VOCAB_SLICE],
                                                                     reduction="none")
                n_tok = valid.sum(1)
                mean = torch.zeros(len(rows), dtype=torch.float32, device=device).index_add_(0, row, tok_loss) / n_tok
                losses[rows] = mean.cpu().double().numpy()
                counts[rows] = n_tok.cpu().long().numpy()
                if on_batch is not None:
                    on_batch(len(rows), int(n_tok.sum().item()))
    finally:
        model.train(was_training)
    return losses, counts


def score_texts(model, tokenizer, texts: list[str], batch_size: int = 32, max_length: int | None = None,
                on_batch: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean token loss, scored tokens) for each text; NaN / 0 for an empty text."""
    max_length = max_length or model.config.max_position_embeddings
    return score_ids(model, _ids_for(tokenizer, texts, max_length), batch_size, on_batch)


def score_batches(model, tokenizer, batches: Iterable[list[str]], batch_size: int = 32,
                  max_length: int | None = None, on_batch: Callable[[int, int], None] | None = None
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Streamed :func:`score_texts` over batches of texts (e.g. a Parquet shard's row groups)."""
    for texts in batches:
        yield score_texts(model, tokenizer, texts, batch_size, max_length, on_batch)


def score_texts_reference(model, tokenizer, texts: list[str], max_length: int | None = None) -> np.ndarray:
    """The readable reference: each text on its own through the model's own loss."""
    import torch

    max_length = max_length or model.config.max_position_embeddings
    eos = tokenizer.eos_token_id
    out = []
    model.eval()
    with torch.inference_mode():
        for t in texts:
            ids = ([eos] + tokenizer(t, add_special_tokens=False)["input_ids"])[:max_length]
            if len(ids) < 2:
                out.append(float("nan"))
                continue
            x = torch.tensor([ids], device=_device_of(model))
            out.append(float(model(input_ids=x, labels=x).loss))
    return np.array(out)


def heldout_loss(model, tokenizer, texts: list[str], batch_size: int = 32, max_length: int | None = None) -> dict:
    """Token-weighted mean loss and perplexity of ``texts`` (each scored on its own)."""
    losses, counts = score_texts(model, tokenizer, texts, batch_size, max_length)
    ok = counts > 0
    total = int(counts[ok].sum())
    if total == 0:
        raise ValueError("the held-out set has no tokens to score")
    loss = float((losses[ok] * counts[ok]).sum() / total)
    return {"loss": loss, "perplexity": float(np.exp(loss)), "tokens": total, "rows": int(ok.sum())}

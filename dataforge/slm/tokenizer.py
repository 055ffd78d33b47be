"""Byte-level BPE for the reference SLM, trained with ``tokenizers`` (Rust) and saved as a
transformers fast tokenizer, so ``AutoTokenizer.from_pretrained(folder)`` loads it as it is.

One special token, ``<|endoftext|>``, serves as BOS, EOS, padding and unknown (GPT-2's habit):
packing puts it between documents and scoring puts it before each row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

EOS = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str] | Iterable[list[str]], vocab_size: int = 8192, min_frequency: int = 2,
                    max_chars: int | None = 50_000_000):
    """Train a byte-level BPE on ``texts`` (strings, or batches of strings as the Parquet
    streamers yield them), reading at most ``max_chars`` characters. Returns a
    ``PreTrainedTokenizerFast``. On a small corpus the vocabulary may stop short of
    ``vocab_size``: the model takes ``len(tokenizer)``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size {vocab_size} is too small for byte-level BPE (256 bytes + merges); use >= 300")

    def batches() -> Iterator[list[str]]:
        seen = 0
        for item in texts:
            batch = [item] if isinstance(item, str) else list(item)
            if max_chars is not None:
                out = []
                for t in batch:
                    if seen >= max_chars:
                        break
                    out.append(t)
                    seen += len(t)
                if out:
                    yield out
                if seen >= max_chars:
                    return
            else:
                yield batch

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(batches(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS,
                                   model_max_length=1_000_000, clean_up_tokenization_spaces=False)


def encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens, through the Rust batch encoder (parallel,
    no offsets computed) rather than one Python call per text."""
    backend = tokenizer.backend_tokenizer
    enc = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [e.ids for e in enc(texts, add_special_tokens=False)]

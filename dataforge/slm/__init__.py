"""The reference SLM: a byte-level BPE tokenizer, Llama presets, packing from shards, a plain
PyTorch training loop with resumable checkpoints, and per-row scoring (mean token loss).

``dataforge slm train | eval | score`` drive it from the command line; CoLoR-Filter
(``dataforge.select.color``) and the ablation (``dataforge.ablate``) build on it. torch and
transformers are imported by the functions that need them, so importing the package is cheap.
"""

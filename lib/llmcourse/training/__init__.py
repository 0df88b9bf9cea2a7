"""Training (chapter 05): batches, the loop (AdamW, warm-up + cosine, clipping, evaluation,
atomic checkpoints, resuming), presets and the command ``python -m llmcourse.training``.
"""

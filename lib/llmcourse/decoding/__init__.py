"""From a model to text (chapter 08): logits processors, greedy / sampling / beam search, the
decode loop over a KV cache, and metrics of generated text.
"""

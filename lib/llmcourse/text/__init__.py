"""From text to token ids and back (chapter 04): byte-level BPE (fast and teaching versions), the
character tokenizer, and the corpus with its split by work.
"""

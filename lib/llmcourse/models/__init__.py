"""Whole models built from :mod:`llmcourse.nn`: the GPT (GPT-2's shape, converted to and from
``transformers``), and their checkpoint format.
"""

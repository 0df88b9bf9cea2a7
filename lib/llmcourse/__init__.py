"""llmcourse: the tested reference implementations behind the course notebooks.

The package follows the course's parts; imports go one way, down this list (``make lint``
checks it with import-linter, contracts in pyproject.toml):

    checks      exercise checkers, one module per chapter
    course      loading GPT-2 with its tokenizer, envcheck, exercises, plotting
    training    batches, the loop, presets, the command
    text | decoding     tokenizers and the corpus | logits processors, search, beam, metrics
    models      the GPT and its checkpoint format
    nn          attention, positions, norms, feed-forward, block, KV cache
    core        input checks, atomic files, assets

Each module is one idea, small enough to read in one sitting. Notebooks show the idea inline,
then import the reference from here and check that both agree.
"""

__version__ = "0.1.0"

"""``python -m llmcourse.training PRESET --out DIR``: the course's training command."""

from llmcourse.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""A small real translation task: English number words → German number words.

The pairs come from ``num2words`` (a pinned dependency, no download): 23 gives
("twenty-three", "dreiundzwanzig"). German says the units before the tens ("drei-und-zwanzig",
three-and-twenty) and writes the whole number as one word, so a translator must read the end of
the English phrase to write the start of the German one: the alignment crosses, which is what
cross-attention has to learn.

The split is by *number*: a held-out number is never seen in training, in any form, so the
held-out score measures translating numbers the model never met, not remembering them.

Characters are the tokens, with three ASCII control characters as the special tokens, for what
ASCII made them: NUL (padding, id 0), STX "start of text" (the decoder's start token, id 1)
and ETX "end of text" (id 2). :class:`~llmcourse.text.chars.CharTokenizer` does the rest.

Example:
    >>> pairs = number_pairs([23, 97])
    >>> pairs
    [('twenty-three', 'dreiundzwanzig'), ('ninety-seven', 'siebenundneunzig')]
    >>> tok = pair_tokenizer(pairs)
    >>> batch = encode_pairs(pairs, tok)
    >>> batch.src.shape, batch.tgt_in[0, 0].item(), tok.decode(batch.tgt_in[0, 1:5])
    (torch.Size([2, 12]), 1, 'drei')
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from num2words import num2words

from llmcourse.text.chars import CharTokenizer

__all__ = ["PAD", "BOS", "EOS", "NumberSplit", "PairBatch", "number_pairs", "split_numbers",
           "pair_tokenizer", "encode_pairs", "decode_target"]

PAD, BOS, EOS = "\x00", "\x02", "\x03"  # ASCII NUL, STX (start of text), ETX (end of text)
SPECIALS = (PAD, BOS, EOS)  # ids 0, 1, 2 of every pair tokenizer


def number_pairs(numbers: Iterable[int], target: str = "de") -> list[tuple[str, str]]:
    """(English words, ``target``-language words) for each number, from ``num2words``.

    Example:
        >>> number_pairs([71], target="fr")
        [('seventy-one', 'soixante et onze')]
    """
    if not isinstance(target, str):
        raise TypeError(f"target must be a language code such as 'de', got "
                        f"{type(target).__name__}")
    try:
        num2words(0, lang=target)
    except NotImplementedError:
        raise ValueError(f"target={target!r} is not a language num2words knows (e.g. 'de', "
                         "'fr')") from None
    pairs = []
    for n in numbers:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"numbers must be non-negative integers, got {n!r}")
        pairs.append((num2words(n, lang="en"), num2words(n, lang=target)))
    return pairs


@dataclass(frozen=True)
class NumberSplit:
    """Disjoint sets of numbers: ``train`` to learn from, ``val`` to watch while training,
    ``test`` held out until the end."""

    train: list[int]
    val: list[int]
    test: list[int]


def split_numbers(n: int, *, test_fraction: float = 0.1, val_fraction: float = 0.05,
                  seed: int = 0) -> NumberSplit:
    """Split the numbers 0..n-1 at random (fixed ``seed``) into train / val / test.

    Example:
        >>> s = split_numbers(100)
        >>> len(s.train), len(s.val), len(s.test), set(s.train) & set(s.test)
        (85, 5, 10, set())
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"n must be an integer ≥ 3 (three non-empty sets), got {n!r}")
    for name, f in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if isinstance(f, bool) or not isinstance(f, (int, float)):
            raise TypeError(f"{name} must be a number in (0, 1), got {f!r}")
        if not 0 < f < 1:
            raise ValueError(f"{name} must be in (0, 1), got {f!r}")
    if test_fraction + val_fraction >= 1:
        raise ValueError("test_fraction + val_fraction must leave numbers to train on")
    numbers = list(range(n))
    random.Random(seed).shuffle(numbers)
    n_test, n_val = max(1, round(n * test_fraction)), max(1, round(n * val_fraction))
    if n_test + n_val >= n:
        raise ValueError(f"no number left to train on: n={n} gives {n_test} test and {n_val} "
                         "validation numbers; lower the fractions or raise n")
    return NumberSplit(train=sorted(numbers[n_test + n_val:]),
                       val=sorted(numbers[n_test:n_test + n_val]), test=sorted(numbers[:n_test]))


def pair_tokenizer(pairs: Iterable[tuple[str, str]]) -> CharTokenizer:
    """One character vocabulary for both languages: the special tokens (ids 0, 1, 2), then
    every character of the pairs, sorted."""
    chars = set()
    for src, tgt in pairs:
        chars.update(src)
        chars.update(tgt)
    clash = chars & set(SPECIALS)
    if clash:
        raise ValueError(f"the text holds the control character(s) {sorted(clash)} reserved for "
                         "padding/start/end")
    return CharTokenizer([*SPECIALS, *sorted(chars)])


@dataclass(frozen=True)
class PairBatch:
    """Padded tensors of translation pairs, all (N, ·) int64.

    ``src`` (N, S) and ``src_mask`` (1 = token, 0 = padding); ``tgt_in`` (N, T) = BOS then the
    target (teacher forcing: the decoder reads the true target shifted right by one); and
    ``targets`` (N, T) = the target then EOS, -100 under the padding (not scored).
    """

    src: torch.Tensor
    src_mask: torch.Tensor
    tgt_in: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.src.shape[0]

    def rows(self, index: torch.Tensor) -> PairBatch:
        """The pairs ``index``, trimmed to their longest source and target."""
        src_mask = self.src_mask[index]
        s = int(src_mask.sum(dim=1).max())
        targets = self.targets[index]
        t = int((targets != -100).sum(dim=1).max())
        return PairBatch(self.src[index, :s], src_mask[:, :s], self.tgt_in[index, :t],
                         targets[:, :t])


def encode_pairs(pairs: Sequence[tuple[str, str]], tokenizer: CharTokenizer) -> PairBatch:
    """Encode and pad ``pairs`` for teacher-forced training and scoring (see :class:`PairBatch`).

    Example:
        >>> tok = pair_tokenizer([("ab", "ba")])
        >>> b = encode_pairs([("ab", "ba")], tok)
        >>> b.tgt_in.tolist(), b.targets.tolist()           # BOS b a  →  b a EOS
        ([[1, 4, 3]], [[4, 3, 2]])
    """
    if not pairs:
        raise ValueError("pairs is empty; give at least one (source, target) pair")
    stoi = getattr(tokenizer, "stoi", {})
    if [stoi.get(c) for c in SPECIALS] != [0, 1, 2]:
        raise ValueError("tokenizer must have NUL, STX, ETX at ids 0, 1, 2 (padding, start, "
                         "end): build it with pair_tokenizer")
    pad, bos, eos = 0, 1, 2
    for i, (src, tgt) in enumerate(pairs):
        for side, text in (("source", src), ("target", tgt)):
            if not isinstance(text, str) or not text:
                raise ValueError(f"pair {i}: the {side} is empty or not a str, got {text!r}")
            clash = sorted(set(text) & set(SPECIALS))
            if clash:
                raise ValueError(f"pair {i}: the {side} holds the control character(s) "
                                 f"{clash} reserved for padding/start/end")
    src_ids = [tokenizer.encode(s) for s, _ in pairs]
    tgt_ids = [tokenizer.encode(t) for _, t in pairs]
    n, s, t = len(pairs), max(map(len, src_ids)), max(map(len, tgt_ids)) + 1
    src = torch.full((n, s), pad, dtype=torch.long)
    tgt_in = torch.full((n, t), pad, dtype=torch.long)
    targets = torch.full((n, t), -100, dtype=torch.long)
    for i, (a, b) in enumerate(zip(src_ids, tgt_ids, strict=True)):
        src[i, :len(a)] = torch.tensor(a)
        tgt_in[i, :len(b) + 1] = torch.tensor([bos, *b])  # shifted right: BOS first
        targets[i, :len(b) + 1] = torch.tensor([*b, eos])  # what each position must predict
    return PairBatch(src, (src != pad).long(), tgt_in, targets)


def decode_target(ids: Iterable[int], tokenizer: CharTokenizer) -> str:
    """The text of generated (or teacher-forcing) target ids: after the start token, up to
    the first EOS or padding, neither of which is ever part of a target's text.

    Example:
        >>> tok = pair_tokenizer([("one", "eins")])
        >>> decode_target([1, *tok.encode("eins"), 2, 0, 0], tok), decode_target([1, 4, 0, 5], tok)
        ('eins', 'i')
    """
    ids = [int(i) for i in ids]
    bos = tokenizer.stoi[BOS]
    if ids and ids[0] == bos:
        ids = ids[1:]
    stop = {tokenizer.stoi[EOS], tokenizer.stoi[PAD]}
    end = next((j for j, i in enumerate(ids) if i in stop), len(ids))
    return tokenizer.decode(ids[:end])

"""What GPT-2's byte-level BPE is built on: its pre-tokenization regex, its byte-to-character
map, and the cutting of a text into pre-tokens (shared by the trainer and the encoder).

Example:
    >>> pretokenize("Hi  there<|endoftext|>you", special_tokens=(EOT,))
    ['Hi', ' ', ' there', 'you']
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

__all__ = ["GPT2_SPLIT_PATTERN", "EOT", "bytes_to_unicode", "pretokenize", "surrogate_error"]

# GPT-2's pre-tokenization regex, exactly as OpenAI and Hugging Face use it. In order: common
# English contractions; an optional space then letters; an optional space then digits; an
# optional space then other symbols; whitespace not followed by non-space (so the last space
# of a run is left to glue onto the next word: "a   b" -> "a", "  ", " b"); any other
# whitespace. \p{L} and \p{N} are Unicode letters and numbers, hence the `regex` module.
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
EOT = "<|endoftext|>"
SPLIT = regex.compile(GPT2_SPLIT_PATTERN)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte value 0..255 to one printable Unicode character.

    Why it exists: ``vocab.json`` and ``merges.txt`` are text files, and ``merges.txt`` separates
    the two halves of a merge with a space. A token is a byte string, and raw bytes such as
    ``0x20`` (space), ``0x0A`` (newline) or ``0x00`` cannot be written there readably or
    unambiguously. So every byte gets a visible stand-in character: the 188 bytes that are
    already printable Latin-1 characters stand for themselves, and the other 68 (control
    characters, space, DEL, no-break space, soft hyphen) are shifted to U+0100 onwards. That is
    why GPT-2's vocabulary is full of ``Ġ`` (a space) and ``Ċ`` (a newline).

    The dict's order is also the order of GPT-2's token ids 0..255, which is the order of the
    stand-in characters' code points.

    Example:
        >>> b2u = bytes_to_unicode()
        >>> b2u[ord("a")], b2u[ord(" ")], b2u[ord("\\n")]
        ('a', 'Ġ', 'Ċ')
        >>> list(b2u)[:3]   # token 0 is "!", the first printable byte
        [33, 34, 35]
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
# GPT-2's id of each byte value (byte 33 "!" is id 0, byte 32 " " is id 220).
GPT2_BYTE_ID = {b: i for i, b in enumerate(BYTE_TO_CHAR)}


def token_str(token: bytes) -> str:
    """A token's bytes as GPT-2 writes them in vocab.json (``b" the"`` -> ``"Ġthe"``)."""
    return "".join(BYTE_TO_CHAR[b] for b in token)


def check_text(text: object, name: str = "text") -> str:
    """Require a ``str``."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    return text


def surrogate_error(text: str) -> ValueError:
    """The error for ``text`` holding a lone surrogate (a str can, UTF-8 cannot): it names the
    first one and where it is. Call it when ``text.encode("utf-8")`` has failed.

    Example:
        >>> print(surrogate_error("ab\\ud800"))
        text holds a lone surrogate '\\ud800' at position 2, which has no UTF-8 bytes; ...
    """
    pos, ch = next(((i, c) for i, c in enumerate(text) if "\ud800" <= c <= "\udfff"),
                   (-1, ""))
    return ValueError(f"text holds a lone surrogate {ch!r} at position {pos}, which has no "
                      "UTF-8 bytes; expected valid Unicode text")


def special_split_pattern(special_tokens: Sequence[str]) -> regex.Pattern | None:
    """A regex matching any of ``special_tokens`` (longest first, so that of two starting at
    the same place the longer wins), with one capturing group; None when there are none."""
    alts = sorted(special_tokens, key=len, reverse=True)
    return regex.compile("(" + "|".join(regex.escape(s) for s in alts) + ")") if alts else None


def pretokenize(text: str, special_tokens: Sequence[str] = ()) -> list[str]:
    """Cut ``text`` into GPT-2's pre-tokens, dropping the special tokens (no pre-token spans
    one): what training counts.

    Example:
        >>> pretokenize("a   b's")
        ['a', '  ', ' b', "'s"]
    """
    pat = special_split_pattern(special_tokens)
    parts = pat.split(text)[::2] if pat is not None else [text]
    return [w for part in parts for w in SPLIT.findall(part)]

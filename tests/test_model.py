"""The GPT against ``transformers.GPT2LMHeadModel`` holding the same random weights, in both
directions, on several configurations including GPT-2 124M's shape; with padding, with a KV
cache, the loss, its gradients, and the parameter count."""

from __future__ import annotations

import pytest
import torch
from model_helpers import hf_positions, random_ids

from llmcourse.models.gpt import GPT, GPTConfig, parameter_count
from llmcourse.models.llama import Llama, LlamaConfig

pytestmark = pytest.mark.usefixtures("quiet_transformers")

ATOL = 1e-5  # absolute, on logits (fp32)

CONFIGS = {
    "tiny": GPTConfig(vocab_size=101, block_size=16, n_layer=1, n_head=1, n_embd=8),
    "small": GPTConfig(vocab_size=257, block_size=32, n_layer=2, n_head=4, n_embd=32),
    "wide-heads": GPTConfig(vocab_size=300, block_size=24, n_layer=3, n_head=2, n_embd=64,
                            layer_norm_epsilon=1e-6),
}


def _hf_model(cfg: GPTConfig, seed: int):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg.to_hf()).eval()


def _ours(cfg: GPTConfig, seed: int) -> GPT:
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():  # random biases and LayerNorm gains, so copying each one matters
        for name, p in model.named_parameters():
            if name.endswith(("bias", "ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    return model


def _hf_from_ours(ours: GPT):
    """The route a reader takes: our state dict in HF's names, loaded by a fresh HF model."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel(ours.config.to_hf())
    result = hf.load_state_dict(ours.to_hf_state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith((".attn.bias", ".attn.masked_bias")) for k in result.missing_keys)
    return hf.eval()


# ------------------------------------------------------------------------------ both directions


@pytest.mark.parametrize("name", list(CONFIGS))
def test_oracle_gpt_to_hf_state_dict_logits_match(name):
    cfg = CONFIGS[name]
    ours = _ours(cfg, seed=0)
    hf = _hf_from_ours(ours)
    idx = random_ids(cfg, 3, cfg.block_size, seed=1)  # the full context
    with torch.no_grad():
        logits, _ = ours(idx)
        theirs = hf(idx).logits
    assert logits.shape == theirs.shape == (3, cfg.block_size, cfg.vocab_size)
    torch.testing.assert_close(logits, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_oracle_hf_random_init_to_gpt_logits_match(name):
    cfg = CONFIGS[name]
    hf = _hf_model(cfg, seed=2)
    ours = GPT.from_hf(hf).eval()
    assert ours.config == cfg
    idx = random_ids(cfg, 2, 11, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=ATOL, rtol=0)


def test_oracle_gpt_to_hf_method_logits_match():
    cfg = CONFIGS["small"]
    ours = _ours(cfg, seed=4)
    hf = ours.to_hf()
    idx = random_ids(cfg, 2, 9, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=ATOL, rtol=0)
    assert not hf.training


def test_oracle_from_hf_state_dict_infers_config():
    cfg = CONFIGS["wide-heads"]  # width 64: n_head = 64 / 64 can be read off the shapes
    cfg = GPTConfig(vocab_size=cfg.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                    n_head=1, n_embd=64)
    hf = _hf_model(cfg, seed=5)
    ours = GPT.from_hf_state_dict(hf.state_dict()).eval()
    assert ours.config == cfg
    idx = random_ids(cfg, 1, 7, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=ATOL, rtol=0)


def test_state_dict_round_trip_is_exact_and_keys_match_hf():
    cfg = CONFIGS["small"]
    ours = _ours(cfg, seed=6)
    hf_sd = _hf_model(cfg, seed=6).state_dict()
    sd = ours.to_hf_state_dict()
    assert set(sd) == {k for k in hf_sd if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    for k, v in sd.items():
        assert v.shape == hf_sd[k].shape, k
    back = GPT.from_hf_state_dict(sd, cfg)
    for (k, a), (k2, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    assert back.lm_head.weight is back.transformer.wte.weight  # still tied


# ------------------------------------------------------------------------------ GPT-2 124M


@pytest.fixture(scope="module")
def gpt2_124m(quiet_transformers):
    """GPT-2 small's shape, built once: ours (own init) with its HF copy, and an HF model
    (HF's init) with its copy in ours."""
    cfg = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    ours = _ours(cfg, seed=7)
    hf_of_ours = _hf_from_ours(ours)
    hf = _hf_model(cfg, seed=8)
    ours_of_hf = GPT.from_hf(hf).eval()
    return cfg, ours, hf_of_ours, hf, ours_of_hf


def test_oracle_gpt2_124m_shape_ours_to_hf(gpt2_124m):
    cfg, ours, hf_of_ours, _, _ = gpt2_124m
    idx = random_ids(cfg, 2, 8, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf_of_ours(idx).logits, atol=ATOL, rtol=0)


def test_oracle_gpt2_124m_shape_hf_to_ours(gpt2_124m):
    cfg, _, _, hf, ours_of_hf = gpt2_124m
    idx = random_ids(cfg, 2, 8, seed=10)
    idx[0, 0] = cfg.vocab_size - 1  # the last id of the vocabulary (<|endoftext|>)
    with torch.no_grad():
        torch.testing.assert_close(ours_of_hf(idx)[0], hf(idx).logits, atol=ATOL, rtol=0)


def test_oracle_gpt2_124m_parameter_count(gpt2_124m):
    cfg, ours, hf_of_ours, hf, _ = gpt2_124m
    assert ours.num_parameters() == hf.num_parameters() == parameter_count(cfg) == 124_439_808
    assert hf_of_ours.num_parameters() == parameter_count(cfg)


# ------------------------------------------------------------------------------ padding, cache


@pytest.mark.parametrize("side", ["left", "right"])
def test_oracle_padded_batch_matches_hf_on_real_positions(side):
    cfg = CONFIGS["small"]
    ours = _ours(cfg, seed=11)
    hf = _hf_from_ours(ours)
    lengths = [9, 4, 6]
    t = max(lengths)
    idx = random_ids(cfg, len(lengths), t, seed=11)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for i, n in enumerate(lengths):
        if side == "left":
            mask[i, t - n:] = 1
        else:
            mask[i, :n] = 1
    idx = idx.masked_fill(mask == 0, cfg.vocab_size - 1)  # pad with <|endoftext|>
    pos = hf_positions(mask)
    with torch.no_grad():
        logits, _ = ours(idx, attention_mask=mask, position_ids=pos)
        theirs = hf(idx, attention_mask=mask, position_ids=pos).logits
        real = mask.bool()
        torch.testing.assert_close(logits[real], theirs[real], atol=ATOL, rtol=0)
        # Each sequence alone, unpadded, gives the same logits on its real tokens.
        for i in range(len(lengths)):
            alone, _ = ours(idx[i][real[i]][None])  # (1, n)
            torch.testing.assert_close(logits[i][real[i]], alone[0], atol=ATOL, rtol=0)


def test_oracle_kv_cache_prefix_then_suffix_matches_full_and_hf():
    cfg = CONFIGS["small"]
    ours = _ours(cfg, seed=12)
    hf = _hf_from_ours(ours)
    idx = random_ids(cfg, 2, 12, seed=12)
    cache = ours.new_cache(batch_size=2)
    with torch.no_grad():
        full, _ = ours(idx)
        a, _ = ours(idx[:, :7], cache=cache)
        b, _ = ours(idx[:, 7:], cache=cache)
        out = hf(idx[:, :7], use_cache=True)
        hf_b = hf(idx[:, 7:], cache=out.cache, use_cache=True).logits
    assert cache.length == 12
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, atol=ATOL, rtol=0)
    torch.testing.assert_close(b, hf_b, atol=ATOL, rtol=0)


def test_oracle_kv_cache_with_left_padding_matches_hf():
    cfg = CONFIGS["small"]
    ours = _ours(cfg, seed=13)
    hf = _hf_from_ours(ours)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    prompt = random_ids(cfg, 2, 5, seed=13).masked_fill(prompt_mask == 0, 0)
    step = random_ids(cfg, 2, 3, seed=14)
    mask = torch.cat([prompt_mask, torch.ones(2, 3, dtype=torch.long)], dim=1)  # (B, 8)
    pos = hf_positions(mask)
    cache = ours.new_cache(batch_size=2, max_len=8)
    with torch.no_grad():
        ours(prompt, attention_mask=prompt_mask, position_ids=pos[:, :5], cache=cache)
        b, _ = ours(step, attention_mask=mask, position_ids=pos[:, 5:], cache=cache)
        full, _ = ours(torch.cat([prompt, step], dim=1), attention_mask=mask, position_ids=pos)
        out = hf(prompt, attention_mask=prompt_mask, position_ids=pos[:, :5], use_cache=True)
        hf_b = hf(step, attention_mask=mask, position_ids=pos[:, 5:],
                  cache=out.cache, use_cache=True).logits
    torch.testing.assert_close(b, full[:, 5:], atol=ATOL, rtol=0)
    torch.testing.assert_close(b, hf_b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("threads", [2, 3])
def test_oracle_one_token_steps_match_hf_with_threads(threads):
    """Decoding one token at a time takes the thread-sliced matrix-vector product (2 threads
    cut every matrix evenly here, 3 cut none): each step's logits equal HF's full forward."""
    cfg = CONFIGS["small"]
    ours = _ours(cfg, seed=22)
    hf = _hf_from_ours(ours)
    idx = random_ids(cfg, 1, 10, seed=22)
    cache = ours.new_cache(batch_size=1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            steps = [ours(idx[:, i:i + 1], cache=cache)[0] for i in range(10)]
    finally:
        torch.set_num_threads(before)
    with torch.no_grad():
        theirs = hf(idx).logits
    torch.testing.assert_close(torch.cat(steps, dim=1), theirs, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------ loss


def _shifted(idx: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token targets: position i predicts token i + 1; the last predicts nothing."""
    labels = idx if labels is None else labels
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)


def test_oracle_loss_matches_hf_labels():
    cfg = CONFIGS["small"]
    ours = _ours(cfg, seed=15)
    hf = _hf_from_ours(ours)
    idx = random_ids(cfg, 3, 10, seed=15)
    with torch.no_grad():
        _, loss = ours(idx, _shifted(idx))  # ours takes targets already shifted
        theirs = hf(idx, labels=idx).loss  # HF shifts labels inside
    torch.testing.assert_close(loss, theirs, atol=1e-6, rtol=1e-6)


def test_oracle_loss_with_ignored_labels_matches_hf():
    cfg = CONFIGS["tiny"]
    ours = _ours(cfg, seed=16)
    hf = _hf_from_ours(ours)
    idx = random_ids(cfg, 2, 8, seed=16)
    labels = idx.clone()
    labels[0, 5:] = -100
    labels[1, :2] = -100
    with torch.no_grad():
        _, loss = ours(idx, _shifted(idx, labels))
        theirs = hf(idx, labels=labels).loss
    torch.testing.assert_close(loss, theirs, atol=1e-6, rtol=1e-6)


def test_oracle_loss_gradients_match_hf():
    cfg = CONFIGS["small"]
    ours = _ours(cfg, seed=17)
    hf = _hf_from_ours(ours)
    idx = random_ids(cfg, 2, 9, seed=17)
    ours(idx, _shifted(idx))[1].backward()
    hf(idx, labels=idx).loss.backward()
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        g = theirs[name].grad
        g = g.t() if name.endswith(GPT._CONV1D) else g
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-4, msg=name)


def test_oracle_adamw_steps_match_hf_and_keep_the_layout():
    """Three AdamW steps (with weight decay) on our input-major parameters and on HF's copy
    end at the same weights: the optimizer state follows the parameters' layout, and the
    stored layout (what decoding reads fast) survives training."""
    cfg = CONFIGS["small"]
    ours = _ours(cfg, seed=21).train()
    hf = _hf_from_ours(ours).train()
    layouts = {name: p.stride() for name, p in ours.named_parameters()}
    assert layouts["transformer.wte.weight"] == (1, cfg.vocab_size)  # (V, C) stored (C, V)
    assert layouts["transformer.h.0.attn.c_attn.weight"] == (1, 3 * cfg.n_embd)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1) for m in (ours, hf)]
    for step in range(3):
        idx = random_ids(cfg, 2, 9, seed=30 + step)
        for model, opt in zip((ours, hf), opts, strict=True):
            opt.zero_grad()
            loss = model(idx, _shifted(idx))[1] if model is ours else model(idx, labels=idx).loss
            loss.backward()
            opt.step()
    theirs = hf.state_dict()
    for name, tensor in ours.to_hf_state_dict().items():
        torch.testing.assert_close(tensor, theirs[name], atol=1e-5, rtol=1e-4, msg=name)
    assert {name: p.stride() for name, p in ours.named_parameters()} == layouts


def test_loss_is_cross_entropy_of_the_logits():
    cfg = CONFIGS["tiny"]
    ours = _ours(cfg, seed=18)
    idx = random_ids(cfg, 2, 6, seed=18)
    targets = random_ids(cfg, 2, 6, seed=19)
    with torch.no_grad():
        logits, loss = ours(idx, targets)
    logp = torch.log_softmax(logits.double(), dim=-1)
    expected = -logp.gather(-1, targets[..., None]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------------------ parameter count


@pytest.mark.parametrize("name", list(CONFIGS))
def test_oracle_parameter_count_matches_hf(name):
    cfg = CONFIGS[name]
    hf = _hf_model(cfg, seed=20)
    ours = GPT(cfg)
    assert ours.num_parameters() == hf.num_parameters() == parameter_count(cfg)
    assert ours.num_parameters(exclude_embeddings=True) == hf.num_parameters(
        exclude_embeddings=True)


@pytest.mark.parametrize("bias, norm_first", [(False, True), (True, False), (False, False)])
def test_parameter_count_formula_without_bias_or_post_ln(bias, norm_first):
    cfg = GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=12, bias=bias,
                    norm_first=norm_first)
    n_tensors = sum(p.numel() for p in {id(p): p for p in GPT(cfg).parameters()}.values())
    assert parameter_count(cfg) == GPT(cfg).num_parameters() == n_tensors


def test_last_only_gives_the_last_positions_logits():
    cfg = CONFIGS["small"]
    ours = _ours(cfg, seed=21)
    idx = random_ids(cfg, 2, 7, seed=21)
    with torch.no_grad():
        full, _ = ours(idx)
        last, loss = ours(idx, last_only=True)
    assert last.shape == (2, 1, cfg.vocab_size) and loss is None
    torch.testing.assert_close(last, full[:, -1:], atol=ATOL, rtol=0)


def test_embeddings_are_tied():
    model = GPT(CONFIGS["tiny"])
    assert model.lm_head.weight is model.transformer.wte.weight


def test_config_round_trips_through_hf_config():
    for cfg in CONFIGS.values():
        assert GPTConfig.from_hf(cfg.to_hf()) == cfg


# ------------------------------------------------------------------------------ docstrings


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_gpt2_initialisation_scales_the_residual_projections(kind):
    # GPT-2 (Radford et al. 2019, §2.3): every matrix N(0, 0.02²), biases zero, and the
    # projections writing into the residual stream N(0, (0.02/√(2L))²); L = 8 gives 0.005.
    torch.manual_seed(0)
    if kind == "gpt":
        model = GPT(GPTConfig(vocab_size=512, block_size=64, n_layer=8, n_head=4, n_embd=128))
        residual = ("attn.c_proj.weight", "mlp.c_proj.weight")
    else:
        model = Llama(LlamaConfig(vocab_size=512, block_size=64, n_layer=8, n_head=4,
                                  n_kv_head=2, n_embd=128, d_ff=384))
        residual = ("o_proj.weight", "down_proj.weight")
    matrices = {n: p for n, p in model.named_parameters() if p.dim() == 2}
    scaled = [p for n, p in matrices.items() if n.endswith(residual)]
    plain = [p for n, p in matrices.items() if not n.endswith(residual)]
    assert len(scaled) == 2 * 8 and plain
    std = lambda ps: torch.cat([p.detach().flatten() for p in ps]).std().item()  # noqa: E731
    assert std(scaled) == pytest.approx(0.005, rel=0.03)
    assert std(plain) == pytest.approx(0.02, rel=0.03)
    biases = [p for n, p in model.named_parameters() if n.endswith(".bias") and "ln" not in n]
    assert all(torch.count_nonzero(b) == 0 for b in biases)

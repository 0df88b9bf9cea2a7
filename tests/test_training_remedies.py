"""Memory remedies of the training loop: gradient accumulation (the update of the whole batch,
from micro-batches) and activation checkpointing (the same gradients, a lower peak), and the
peak-memory measurement they are judged by.

The oracle for accumulation is plain autograd on the whole batch; for checkpointing, the
plain forward's gradients; for the memory helper, tensors of known sizes (and, on a GPU,
``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from training_helpers import assert_same_weights, train_keeping_optimizer

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig
from llmcourse.text.number_words import encode_pairs, number_pairs, pair_tokenizer
from llmcourse.training import cli
from llmcourse.training.batches import draw_batch
from llmcourse.training.loop import TrainConfig, train
from llmcourse.training.memory import peak_memory_bytes

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
CFG = TrainConfig(max_steps=1, batch_size=8, block_size=16, learning_rate=1e-2, min_lr=1e-3,
                  warmup_steps=1, eval_interval=1, eval_batches=1, log_interval=1,
                  grad_clip=0.0, progress=False)


@pytest.fixture(scope="module")
def stream():
    g = torch.Generator().manual_seed(0)
    base = torch.arange(4000) % 40  # mostly i -> i+1 (mod 40), with noise
    noise = torch.randint(0, 40, (4000,), generator=g)
    return torch.where(torch.rand(4000, generator=g) < 0.8, base, noise)


@pytest.fixture(scope="module")
def pairs():
    tok = pair_tokenizer(number_pairs(range(200)))
    return encode_pairs(number_pairs(range(80)), tok), tok.vocab_size


def gpt(seed: int = 0, config: GPTConfig = TINY) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


def seq2seq(vocab: int, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, max_len=40,
                                 n_encoder_layer=1, n_decoder_layer=1, n_head=2, n_embd=16,
                                 ffn_hidden=32))


def grads_at_the_step(model, data, cfg) -> dict[str, torch.Tensor]:
    """Train one step; the gradients the optimizer stepped with, by parameter name."""
    names = {id(p): n for n, p in model.named_parameters()}
    seen = {}

    def hook(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                seen[names[id(p)]] = p.grad.clone()

    handle = register_optimizer_step_pre_hook(hook)
    try:
        train(model, data, data, cfg)
    finally:
        handle.remove()
    return seen


def whole_batch_grads(model, data, cfg) -> dict[str, torch.Tensor]:
    """The oracle: plain autograd on the first batch the run draws, all at once."""
    args, kwargs = draw_batch(data, cfg.batch_size, cfg.block_size,
                              torch.Generator().manual_seed(cfg.seed))
    model.train()
    model(*args, **kwargs)[1].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_close_dicts(a, b, atol):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


# ---------------------------------------------------------------- gradient accumulation


@pytest.mark.parametrize("k", [2, 4, 8])
def test_accumulation_gives_the_gradient_and_step_of_the_whole_batch_gpt(stream, k):
    oracle = whole_batch_grads(gpt(), stream, CFG)
    accum = gpt()
    g_accum = grads_at_the_step(accum, stream, replace(CFG, grad_accum_steps=k))
    assert_close_dicts(g_accum, oracle, atol=1e-6)  # a sum of k means would be k× too big
    whole = gpt()
    _, optimizer = train_keeping_optimizer(whole, stream, stream, CFG)
    assert_same_weights(whole, optimizer, accum.state_dict(), atol=1e-6)


@pytest.mark.parametrize("k", [2, 4])
def test_accumulation_weights_pairs_of_unequal_length_by_their_tokens(pairs, k):
    data, vocab = pairs
    cfg = replace(CFG, block_size=1)  # unused by pairs
    oracle = whole_batch_grads(seq2seq(vocab), data, cfg)
    accum = seq2seq(vocab)
    g_accum = grads_at_the_step(accum, data, replace(cfg, grad_accum_steps=k))
    assert_close_dicts(g_accum, oracle, atol=1e-6)
    whole = seq2seq(vocab)
    _, optimizer = train_keeping_optimizer(whole, data, data, cfg)
    assert_same_weights(whole, optimizer, accum.state_dict(), atol=1e-6)


def test_a_plain_average_of_micro_batch_losses_would_be_wrong_for_pairs(pairs):
    """Why the loop weights each micro-batch by its scored tokens: with targets of unequal
    length, the mean of the micro-batches' means is not the batch's mean."""
    data, vocab = pairs
    args, kwargs = draw_batch(data, 8, 1, torch.Generator().manual_seed(CFG.seed))
    model = seq2seq(vocab)
    whole = model(*args, **kwargs)[1]
    halves = [model(args[0][s], args[1][s], src_mask=kwargs["src_mask"][s],
                    targets=kwargs["targets"][s])[1] for s in (slice(0, 4), slice(4, 8))]
    assert abs((halves[0] + halves[1]).item() / 2 - whole.item()) > 1e-4


def test_accumulation_over_several_steps_and_its_logged_loss(stream):
    cfg = replace(CFG, max_steps=5, grad_clip=1.0, eval_interval=5)
    whole, accum = gpt(), gpt()
    h_whole, optimizer = train_keeping_optimizer(whole, stream, stream, cfg)
    h_accum = train(accum, stream, stream, replace(cfg, grad_accum_steps=4))
    assert h_accum.log_loss == pytest.approx(h_whole.log_loss, abs=1e-6)  # the batch's loss
    assert_same_weights(whole, optimizer, accum.state_dict(), atol=1e-5)


def test_resume_with_accumulation_is_exact(stream, tmp_path):
    """Dropout on: the micro-batches' dropout draws are restored too."""
    config = replace(TINY, dropout=0.1)
    cfg = replace(CFG, max_steps=6, eval_interval=3, grad_accum_steps=2)
    straight = gpt(config=config)
    h_straight = train(straight, stream, stream, cfg)
    train(gpt(config=config), stream, stream, cfg, checkpoint_dir=tmp_path / "c", stop_at=3)
    torch.manual_seed(999)  # a new "process"
    resumed = gpt(seed=5, config=config)
    h_resumed = train(resumed, stream, stream, cfg, checkpoint_dir=tmp_path / "c", resume=True)
    assert h_resumed.log_loss == h_straight.log_loss
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("fields, exc, match", [
    ({"grad_accum_steps": 0}, ValueError, "grad_accum_steps must be a positive integer, got 0"),
    ({"grad_accum_steps": 2.0}, TypeError, "TrainConfig.grad_accum_steps must be an int"),
    ({"batch_size": 30, "grad_accum_steps": 4}, ValueError,
     r"batch_size=30 \(the whole batch of one step\) does not split into grad_accum_steps=4"),
    ({"activation_checkpointing": 1}, TypeError,
     "TrainConfig.activation_checkpointing must be True or False"),
])
def test_bad_remedy_settings_are_refused(fields, exc, match):
    with pytest.raises(exc, match=match):
        replace(CFG, **fields)


# ---------------------------------------------------------------- activation checkpointing


def loss_and_grads(model: GPT, x: torch.Tensor, recompute: bool):
    model.zero_grad(set_to_none=True)
    model.activation_checkpointing = recompute
    torch.manual_seed(7)  # the same dropout draws in both runs
    loss = model(x, x)[1]
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("norm_first", [True, False])
def test_checkpointing_gives_the_same_gradients(norm_first):
    """Dropout on: torch.utils.checkpoint replays the random draws when it recomputes."""
    model = gpt(config=replace(TINY, dropout=0.2, norm_first=norm_first)).train()
    x = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(1))
    loss_plain, plain = loss_and_grads(model, x, recompute=False)
    loss_ckpt, ckpt = loss_and_grads(model, x, recompute=True)
    assert loss_ckpt == loss_plain
    assert_close_dicts(ckpt, plain, atol=1e-6)


def test_checkpointing_only_where_a_backward_pass_follows(monkeypatch):
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    model = gpt()
    model.activation_checkpointing = True
    x = torch.randint(0, 40, (2, 8))
    model.train()(x)
    assert len(calls) == TINY.n_layer  # once per block
    calls.clear()
    with torch.no_grad():
        model(x)  # no backward pass to feed
    model(x, cache=model.new_cache(2))  # cached decoding
    model.eval()(x)  # evaluation
    assert calls == []


def test_checkpointing_lowers_the_peak_memory_of_a_training_step():
    """Activations dominate this shape (B·T·C per tensor ≫ the weights): with checkpointing
    only each block's input is kept between forward and backward."""
    model = gpt(config=GPTConfig(vocab_size=64, block_size=128, n_layer=4, n_head=2,
                                 n_embd=32)).train()
    x = torch.randint(0, 64, (8, 128), generator=torch.Generator().manual_seed(0))

    def step():
        model.zero_grad(set_to_none=True)
        model(x, x)[1].backward()

    peaks = {}
    for recompute in (False, True):
        model.activation_checkpointing = recompute
        peaks[recompute] = peak_memory_bytes(step)
    assert peaks[True] < peaks[False], peaks
    assert peaks[False] > 10 * model.num_parameters() * 4  # activations dominate: a fair test


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_checkpointing_lowers_the_peak_memory_on_cuda():
    model = gpt(config=GPTConfig(vocab_size=64, block_size=256, n_layer=4, n_head=2,
                                 n_embd=64)).cuda().train()
    x = torch.randint(0, 64, (16, 256), device="cuda")

    def step():
        model.zero_grad(set_to_none=True)
        model(x, x)[1].backward()

    peaks = {}
    for recompute in (False, True):
        model.activation_checkpointing = recompute
        peaks[recompute] = peak_memory_bytes(step, "cuda")
    assert peaks[True] < peaks[False], peaks


def test_training_with_checkpointing_takes_the_same_steps(stream):
    cfg = replace(CFG, max_steps=4, eval_interval=4, grad_clip=1.0)
    config = replace(TINY, dropout=0.1)
    plain, ckpt = gpt(config=config), gpt(config=config)
    h_plain, optimizer = train_keeping_optimizer(plain, stream, stream, cfg)
    h_ckpt = train(ckpt, stream, stream, replace(cfg, activation_checkpointing=True))
    assert h_ckpt.log_loss == pytest.approx(h_plain.log_loss, abs=1e-6)
    assert_same_weights(plain, optimizer, ckpt.state_dict(), atol=1e-5)
    assert ckpt.activation_checkpointing is False  # the run's setting, put back afterwards


def test_checkpointing_is_refused_for_the_encoder_decoder(pairs):
    data, vocab = pairs
    with pytest.raises(ValueError, match="activation_checkpointing is implemented in the "
                                         "GPT's and the Llama's forward only; got a Seq2Seq"):
        train(seq2seq(vocab), data, data, replace(CFG, activation_checkpointing=True))


# ---------------------------------------------------------------- measuring peak memory


def test_peak_memory_counts_what_is_alive_at_once():
    mb = 1 << 20
    before = torch.ones(mb // 4)  # 1 MiB that exists before: not counted

    def work():
        a = torch.empty(2 * mb, dtype=torch.uint8)
        b = torch.empty(3 * mb, dtype=torch.uint8)  # peak: a + b = 5 MiB
        del a, b
        c = torch.empty(4 * mb, dtype=torch.uint8)  # alone: 4 MiB
        del c
        del before_list[0]  # frees the 1 MiB of before: the level drops below the start

    before_list = [before]
    del before
    assert peak_memory_bytes(work) == 5 * mb


def test_peak_memory_refuses_bad_arguments():
    with pytest.raises(TypeError, match="fn must be a callable"):
        peak_memory_bytes(42)
    with pytest.raises(ValueError, match="is not a torch device"):
        peak_memory_bytes(lambda: None, "gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            peak_memory_bytes(lambda: None, "cuda")


# ---------------------------------------------------------------- the command's flags


def test_command_passes_the_remedies_to_the_loop(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_train(model, train_ids, val_ids, cfg, **kwargs):
        seen["cfg"] = cfg
        raise SystemExit(3)  # only the config matters here

    monkeypatch.setattr(cli, "train", fake_train)
    base = ["tiny", "--out", str(tmp_path / "o"), "--work-dir", str(tmp_path / "w"),
            "--no-progress"]
    with pytest.raises(SystemExit):
        cli.main([*base, "--batch-size", "16", "--grad-accum-steps", "4",
                  "--activation-checkpointing"])
    cfg = seen["cfg"]
    assert (cfg.batch_size, cfg.grad_accum_steps, cfg.activation_checkpointing) == (16, 4, True)
    with pytest.raises(SystemExit):
        cli.main(base)
    assert (seen["cfg"].grad_accum_steps, seen["cfg"].activation_checkpointing) == (1, False)
    with pytest.raises(SystemExit) as bad:
        cli.main([*base, "--batch-size", "10", "--grad-accum-steps", "4"])
    assert bad.value.code == 2
    assert "batch_size=10 (the whole batch of one step) does not split into " \
           "grad_accum_steps=4" in capsys.readouterr().err

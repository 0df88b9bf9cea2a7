"""Knowledge distillation (llmcourse.training.distill): the loss against a hand computation with
torch's own F.kl_div / F.cross_entropy, the frozen teacher, the temperature's T² factor, bad
inputs, training through the unchanged loop, and the committed measurement's consistency."""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.training import distill
from llmcourse.training.distill import Distillation, distillation_loss
from llmcourse.training.loop import TrainConfig, train

RESULT = Path(__file__).resolve().parents[1] / "data" / "results" / "distillation.json"
V = 16


def _models(seed: int = 0) -> tuple[GPT, GPT]:
    torch.manual_seed(seed)
    student = GPT(GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=1, n_embd=8))
    teacher = GPT(GPTConfig(vocab_size=V, block_size=8, n_layer=2, n_head=2, n_embd=16,
                            dropout=0.3))
    return student, teacher


def _by_hand(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temp: float, alpha: float
             ) -> torch.Tensor:
    """The formula from its definition: sum over the vocabulary, mean over tokens."""
    s, t, y = s.reshape(-1, V), t.reshape(-1, V), y.reshape(-1)
    ce = F.cross_entropy(s, y)
    p = torch.softmax(t / temp, -1)
    kl = (p * (torch.log(p) - torch.log_softmax(s / temp, -1))).sum(-1).mean()
    kl_torch = F.kl_div(torch.log_softmax(s / temp, -1), p, reduction="batchmean")
    assert torch.allclose(kl, kl_torch, atol=1e-6)
    return alpha * ce + (1 - alpha) * temp ** 2 * kl


@pytest.mark.parametrize("temp,alpha", [(1.0, 0.5), (2.0, 0.3), (4.0, 0.0), (0.5, 0.9)])
def test_loss_equals_hand_computation(temp, alpha):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 5, V, generator=g), 3 * torch.randn(3, 5, V, generator=g)
    y = torch.randint(0, V, (3, 5), generator=g)
    got = distillation_loss(s, t, y, temperature=temp, alpha=alpha)
    assert torch.allclose(got, _by_hand(s, t, y, temp, alpha), atol=1e-5)


def test_worked_example_of_the_docstring():
    s, t = torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[2.0, 0.0]]])
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    kl = (p * torch.log(p / 0.5)).sum()
    expect = 0.5 * math.log(2) + 0.5 * 4 * kl.item()
    got = distillation_loss(s, t, torch.tensor([[0]]), temperature=2.0, alpha=0.5).item()
    assert got == pytest.approx(expect, abs=1e-6)
    assert round(expect, 4) == 0.5685


def test_model_loss_matches_hand_computation_and_alpha_one_is_plain_ce():
    student, teacher = _models()
    x = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(2))
    y = torch.roll(x, -1, 1)
    d = Distillation(student, teacher, temperature=2.0, alpha=0.25).eval()
    logits, loss = d(x, y)
    with torch.no_grad():
        t_logits = teacher(x)[0]
    assert torch.equal(logits, student(x)[0])
    assert torch.allclose(loss, _by_hand(logits, t_logits, y, 2.0, 0.25), atol=1e-5)
    plain = Distillation(student, teacher, temperature=2.0, alpha=1.0).eval()
    assert torch.allclose(plain(x, y)[1], student(x, y)[1], atol=1e-6)
    assert plain(x)[1] is None


def test_temperature_squared_scaling():
    """With α = 0 the loss is T² · KL; the KL itself is what torch computes at that T."""
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(4, 3, V, generator=g), torch.randn(4, 3, V, generator=g)
    y = torch.zeros(4, 3, dtype=torch.long)
    for temp in (0.5, 1.0, 3.0):
        kl = F.kl_div(torch.log_softmax(s / temp, -1).reshape(-1, V),
                      torch.log_softmax(t / temp, -1).reshape(-1, V), log_target=True,
                      reduction="batchmean")
        got = distillation_loss(s, t, y, temperature=temp, alpha=0.0)
        assert got.item() == pytest.approx(temp ** 2 * kl.item(), rel=1e-5)
    # identical logits: no KL at any temperature, so α = 0 gives 0
    assert distillation_loss(s, s, y, temperature=2.0, alpha=0.0).item() == pytest.approx(
        0.0, abs=1e-6)


def test_teacher_gets_no_gradient_and_is_unchanged_by_training():
    student, teacher = _models()
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    d = Distillation(student, teacher, temperature=2.0, alpha=0.5)
    stream = torch.arange(200) % V
    cfg = TrainConfig(max_steps=3, batch_size=4, block_size=8, warmup_steps=1, eval_interval=3,
                      eval_batches=1, progress=False)
    train(d, stream, stream, cfg)  # the course's loop, unchanged
    assert not d.teacher.training, "the teacher must stay in eval mode (no dropout)"
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before_t[k]), f"teacher's {k} changed"
    assert any(not torch.equal(v, before_s[k]) for k, v in student.state_dict().items()), \
        "the student did not learn"


def test_bad_inputs():
    student, teacher = _models()
    for kw in ({"temperature": 0.0}, {"temperature": -1.0}, {"alpha": 1.5}, {"alpha": -0.1}):
        with pytest.raises(ValueError):
            Distillation(student, teacher, **kw)
    with pytest.raises(TypeError):
        Distillation(student, teacher, temperature=float("nan"))
    other = GPT(GPTConfig(vocab_size=V + 1, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="vocab_size"):
        Distillation(student, other)
    with pytest.raises(TypeError):
        Distillation(student, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="shape"):
        distillation_loss(torch.zeros(1, 2, V), torch.zeros(1, 2, V + 1),
                          torch.zeros(1, 2, dtype=torch.long), temperature=1.0, alpha=0.5)


def test_committed_measurement_is_consistent():
    r = json.loads(RESULT.read_text())
    args = shlex.split(r["command"])
    assert args[:3] == ["python", "-m", "llmcourse.training.distill"]
    opts = dict(zip(args[3::2], args[4::2], strict=True))
    steps = int(opts.get("--steps", distill.DEFAULT_STEPS))
    assert opts.get("--out") == "data/results/distillation.json"
    assert float(opts.get("--temperature", distill.DEFAULT_TEMPERATURE)) == r["temperature"]
    alpha = float(opts.get("--alpha", distill.DEFAULT_ALPHA))
    assert Path(opts.get("--teacher", distill.DEFAULT_TEACHER)).name == r["teacher"]
    model_cfg, cfg = distill.student_setup(r["student_model"]["vocab_size"], steps)
    assert r["student_model"] == asdict(model_cfg)
    assert r["train"] == {k: v for k, v in asdict(cfg).items()
                          if k not in ("device", "progress")}
    assert r["student_preset"] == distill.STUDENT_PRESET
    assert r["student_parameters"] == GPT(model_cfg).num_parameters()
    assert r["student_parameters"] < r["teacher_parameters"]
    runs = r["runs"]
    assert set(runs) == {"data_only", "distilled"}
    assert runs["data_only"]["alpha"] == 1.0 and runs["distilled"]["alpha"] == alpha
    for run in runs.values():
        per_char = run["val_nats_per_char"]
        assert math.isfinite(per_char) and 1.0 < per_char < 4.0, per_char
        assert run["val_nats_per_token"] == pytest.approx(
            per_char * r["held_out"]["chars"] / r["held_out"]["tokens"], rel=1e-9)
    # above the course checkpoint's 1.37 nats/char and below a uniform guess over the vocabulary
    uniform = math.log(r["student_model"]["vocab_size"]) * r["held_out"]["tokens"] \
        / r["held_out"]["chars"]
    assert all(run["val_nats_per_char"] < uniform for run in runs.values())

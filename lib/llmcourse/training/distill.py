"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a small student learns from a frozen
teacher's soft targets as well as from the data.

The teacher's full distribution over the next token says more than the one token the text
has: which other tokens were plausible, and how much. The student is trained on a mix of the
two losses, per predicted token:

    L = α · CE(y, q)  +  (1 − α) · T² · KL(p_T ‖ q_T)

    q   = softmax(z_s)          the student's distribution (z_s its logits)
    p_T = softmax(z_t / T)      the teacher's, softened by the temperature T
    q_T = softmax(z_s / T)      the student's, softened the same way
    KL(p ‖ q) = Σ_v p_v (log p_v − log q_v)

Both terms are averaged over the predicted tokens. The gradient of the KL term with respect to
the student's logits is (q_T − p_T) / T, so the T² keeps its size comparable to the data term's
as T changes (Hinton et al. 2015, section 2). α = 1 is plain training on the data.

:class:`Distillation` is a :class:`~llmcourse.models.gpt.GPT` (so that
:func:`llmcourse.training.loop.train`, which accepts only the course's models, trains it
unchanged): its parameters are the student's, with the teacher held inside it frozen
(``requires_grad=False``, so the optimizer never sees it; always in eval mode; run under
``torch.no_grad``). Its ``forward(idx, targets)`` returns ``(student_logits, L)``. Pass no
``checkpoint_dir`` to ``train``: a checkpoint of the wrapper would hold the teacher too; save
``distillation.student`` afterwards instead. The evaluation losses that ``train`` records are
the distillation loss L; measure the student alone with
:func:`~llmcourse.training.loop.evaluate_stream` (on ``distillation.student`` or the wrapper,
whose logits are the student's).

Worked example: one position, a vocabulary of 2, T = 2, α = 0.5, student logits (0, 0),
teacher logits (2, 0), target token 0. Then CE = ln 2 = 0.6931; p_T = softmax(1, 0) =
(0.7311, 0.2689), q_T = (0.5, 0.5), KL = 0.7311 ln(0.7311/0.5) + 0.2689 ln(0.2689/0.5) =
0.1110, and L = 0.5 · 0.6931 + 0.5 · 4 · 0.1110 = 0.5685.

    >>> import torch
    >>> s, t = torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[2.0, 0.0]]])   # (B=1, T=1, V=2)
    >>> round(distillation_loss(s, t, torch.tensor([[0]]), temperature=2.0, alpha=0.5).item(), 4)
    0.5685

The command (two runs of the same student from the same seed on the same batches, one on the
data alone, one distilled from the course checkpoint; held-out nats/char of both):

    python -m llmcourse.training.distill --steps 800 --out data/results/distillation.json
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.models.checkpoint import load_checkpoint
from llmcourse.models.gpt import GPT
from llmcourse.text.bpe import EOT
from llmcourse.text.corpus import load_works, nats_per_char, split_works, token_stream
from llmcourse.text.load import load_tokenizer
from llmcourse.training.cli import PRESETS
from llmcourse.training.loop import evaluate_stream, train
from llmcourse.training.results import command_line, write_result

__all__ = ["Distillation", "distillation_loss", "main"]


def _check(temperature: float, alpha: float) -> None:
    for name, v in (("temperature", temperature), ("alpha", alpha)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise TypeError(f"{name} must be a finite number, got {v!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the data's loss), got {alpha!r}")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      targets: torch.Tensor, *, temperature: float, alpha: float,
                      ignore_index: int = -100) -> torch.Tensor:
    """α · CE(targets, student) + (1 − α) · T² · KL(softmax(teacher/T) ‖ softmax(student/T)),
    each averaged over the scored tokens (targets ≠ ``ignore_index``). See the module docstring
    for the formula and a worked example.

    Args:
        student_logits, teacher_logits: (B, T, V) logits of the same positions.
        targets: (B, T) the next tokens.
    """
    _check(temperature, alpha)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    v = student_logits.shape[-1]
    s = student_logits.reshape(-1, v).float()  # (N, V)
    t = teacher_logits.reshape(-1, v).float()  # (N, V)
    y = targets.reshape(-1)  # (N,)
    keep = y != ignore_index  # (N,)
    ce = F.cross_entropy(s, y, ignore_index=ignore_index)  # () mean over scored tokens
    if alpha == 1:
        return ce
    log_q = F.log_softmax(s[keep] / temperature, dim=-1)  # (n, V)
    log_p = F.log_softmax(t[keep] / temperature, dim=-1)  # (n, V)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")  # () mean over tokens
    return alpha * ce + (1 - alpha) * temperature ** 2 * kl


class Distillation(GPT):
    """A student GPT trained against a frozen teacher GPT of the same vocabulary.

    ``forward(idx, targets)`` returns ``(student_logits, loss)`` with the loss of
    :func:`distillation_loss` (or ``(student_logits, None)`` without targets). A
    :class:`GPT` subclass only so that :func:`~llmcourse.training.loop.train` accepts it; its
    modules are ``student`` and ``teacher``, not a GPT's own.

    Example:
        >>> from llmcourse.models.gpt import GPTConfig
        >>> torch.manual_seed(0) and None
        >>> student = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))
        >>> teacher = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=16))
        >>> d = Distillation(student, teacher, temperature=2.0, alpha=0.5)
        >>> x = torch.randint(0, 16, (2, 8))
        >>> logits, loss = d(x, x)
        >>> logits.shape, loss.requires_grad, any(p.requires_grad for p in teacher.parameters())
        (torch.Size([2, 8, 16]), True, False)
    """

    def __init__(self, student: GPT, teacher: GPT, *, temperature: float = 2.0,
                 alpha: float = 0.5) -> None:
        nn.Module.__init__(self)  # not GPT.__init__: the wrapper builds no layers of its own
        for name, m in (("student", student), ("teacher", teacher)):
            if not isinstance(m, GPT) or isinstance(m, Distillation):
                raise TypeError(f"{name} must be a llmcourse GPT, got {type(m).__name__}")
        if student is teacher:
            raise ValueError("the student and the teacher must be two models")
        _check(temperature, alpha)
        if student.config.vocab_size != teacher.config.vocab_size:
            raise ValueError(f"the student's vocab_size={student.config.vocab_size} differs "
                             f"from the teacher's {teacher.config.vocab_size}: distillation "
                             "compares their distributions token by token (one tokenizer)")
        if teacher.config.block_size < student.config.block_size:
            raise ValueError(f"the teacher's context block_size={teacher.config.block_size} is "
                             f"below the student's {student.config.block_size}")
        self.config = student.config  # what train() checks the data and batches against
        self.student = student
        self.teacher = teacher.float().requires_grad_(False).eval()
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    @property
    def activation_checkpointing(self) -> bool:  # type: ignore[override]
        """The student's setting (the teacher runs without a backward pass)."""
        return self.student.activation_checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, value: bool) -> None:
        self.student.activation_checkpointing = value

    def train(self, mode: bool = True) -> Distillation:
        """Set the student's mode; the teacher stays in eval mode (no dropout) always."""
        super().train(mode)
        self.teacher.eval()
        return self

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """The student's parameter count (the teacher's are not trained)."""
        return self.student.num_parameters(exclude_embeddings)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, **kwargs: Any
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(student logits (B, T, V), distillation loss or None)``."""
        logits, _ = self.student(idx, **kwargs)  # (B, T, V)
        if targets is None:
            return logits, None
        with torch.no_grad():
            teacher_logits, _ = self.teacher(idx, **kwargs)  # (B, T, V)
        loss = distillation_loss(logits, teacher_logits, targets, temperature=self.temperature,
                                 alpha=self.alpha)
        return logits, loss


# ---------------------------------------------------------------------------------------------
# The measurement: one student, trained on the data alone and distilled from the course model.

DEFAULT_TEACHER = "data/checkpoints/shakespeare-gpt"
DEFAULT_STEPS = 800
DEFAULT_TEMPERATURE = 2.0
DEFAULT_ALPHA = 0.5
STUDENT_PRESET = "tiny"  # the student's shape and training config (its vocab: the teacher's)


def student_setup(vocab_size: int, steps: int) -> tuple[Any, Any]:
    """The student's :class:`GPTConfig` and :class:`TrainConfig`: the ``tiny`` preset's shape
    and schedule with the teacher's vocabulary and ``steps`` steps (one evaluation, at the
    end)."""
    preset = PRESETS[STUDENT_PRESET]
    model_cfg = replace(preset.model, vocab_size=vocab_size)
    train_cfg = replace(preset.train, max_steps=steps,
                        warmup_steps=min(preset.train.warmup_steps, steps),
                        eval_interval=steps, log_interval=steps, progress=False)
    return model_cfg, train_cfg


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m llmcourse.training.distill",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--teacher", default=DEFAULT_TEACHER)
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    command = command_line(__name__, argv)

    teacher, _ = load_checkpoint(args.teacher)
    tokenizer = load_tokenizer(args.teacher)
    train_works, val_works = split_works(load_works())
    train_ids = token_stream(train_works, tokenizer, EOT)  # (N_train,)
    val_ids = token_stream(val_works, tokenizer, EOT)  # (N_val,)
    val_chars = sum(len(t) for t in val_works.values())
    model_cfg, cfg = student_setup(teacher.config.vocab_size, args.steps)

    runs: dict[str, Any] = {}
    for name, alpha in (("data_only", 1.0), ("distilled", args.alpha)):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)  # the same initial student both times
        student = GPT(model_cfg)
        model = Distillation(student, teacher, temperature=args.temperature, alpha=alpha)
        train(model, train_ids, val_ids, cfg)  # the same batches: train() seeds them
        loss, n_pred = evaluate_stream(student, val_ids, block_size=cfg.block_size,
                                       batch_size=64)
        runs[name] = {"alpha": alpha, "val_nats_per_token": loss,
                      "val_nats_per_char": nats_per_char(loss, n_pred, val_chars)}
        print(f"{name}: {runs[name]['val_nats_per_char']:.4f} nats/char "
              f"({time.perf_counter() - t0:.0f} s)")
    result = {
        "command": command,
        "teacher": Path(args.teacher).name,
        "temperature": args.temperature,
        "student_preset": STUDENT_PRESET,
        "student_model": asdict(model_cfg),
        "student_parameters": student.num_parameters(),
        "teacher_parameters": teacher.num_parameters(),
        "train": {k: v for k, v in asdict(cfg).items() if k not in ("device", "progress")},
        "held_out": {"works": sorted(val_works), "tokens": n_pred, "chars": val_chars,
                     "note": "every token of the held-out works, windows of block_size"},
        "runs": runs,
        "torch": torch.__version__,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Chapter 07 exercises: GPT-2's weights in the course's layout, and what the model predicts.

- :func:`conv1d_to_linear`: one of GPT-2's ``Conv1D`` layers as an ``nn.Linear``;
- :func:`hf_to_course_state_dict`: a whole ``GPT2LMHeadModel`` state dict for the course's GPT;
- :func:`next_token_top_k`: the k most likely next tokens and their probabilities.

Each checker compares the learner's function with code no one here wrote: ``transformers``'
own ``Conv1D`` forward, ``GPT2LMHeadModel``'s logits, and ``transformers``'
``TemperatureLogitsWarper`` followed by ``torch.softmax`` and ``torch.topk``. The cases come from
each checker's own seeded generator and the checkers run under ``torch.random.fork_rng``, so
the notebook's global random state is left as it was. ``tests/test_checks_ch07.py`` checks
that the solutions below pass and that the usual mistakes (a reshape where a transpose was
needed, a forgotten bias, a Conv1D weight left untransposed, the first position's logits, a
temperature that multiplies, probabilities renormalised over the top k) fail.

Example:
    >>> check_next_token_top_k(next_token_top_k)
    ✓ next_token_top_k: 7 case(s) match the reference
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from llmcourse.checks import compare, require_function
from llmcourse.models.gpt import GPT, GPTConfig

__all__ = [
    "CONV1D_WEIGHTS", "conv1d_to_linear", "hf_to_course_state_dict", "next_token_top_k",
    "check_conv1d_to_linear", "check_state_dict_conversion", "check_next_token_top_k",
]

# The four weights GPT-2 stores as Conv1D, (in, out): the transpose of nn.Linear's (out, in).
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                  "mlp.c_proj.weight")


def conv1d_to_linear(conv: nn.Module) -> nn.Linear:
    """An ``nn.Linear`` computing what ``transformers``' GPT-2 ``Conv1D`` layer ``conv`` does.

    ``Conv1D(nf, nx)`` holds ``weight`` (nx, nf) = (in, out) and computes ``x @ weight + bias``;
    ``nn.Linear(in, out)`` holds ``weight`` (out, in) and computes ``x @ weight.T + bias``. The
    same function, so the Linear's weight is the transpose.

    Example:
        >>> from transformers.pytorch_utils import Conv1D
        >>> conv = Conv1D(nf=6, nx=4)
        >>> linear = conv1d_to_linear(conv)
        >>> tuple(conv.weight.shape), tuple(linear.weight.shape)
        ((4, 6), (6, 4))
    """
    nx, nf = conv.weight.shape  # (in, out)
    linear = nn.Linear(nx, nf)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())  # (out, in)
        linear.bias.copy_(conv.bias)
    return linear


def hf_to_course_state_dict(hf_state_dict: Mapping[str, torch.Tensor]
                            ) -> dict[str, torch.Tensor]:
    """A ``GPT2LMHeadModel`` state dict, converted for ``GPT.load_state_dict``.

    The course's GPT uses GPT-2's own names, so only the layout changes: the four Conv1D
    weights of every block are transposed; everything else (embeddings, LayerNorms, biases, the
    tied ``lm_head.weight``) is taken as it is.

    Example:
        >>> sd = {"transformer.h.0.mlp.c_fc.weight": torch.zeros(4, 16), "lm_head.weight":
        ...       torch.zeros(10, 4)}
        >>> {k: tuple(v.shape) for k, v in hf_to_course_state_dict(sd).items()}
        {'transformer.h.0.mlp.c_fc.weight': (16, 4), 'lm_head.weight': (10, 4)}
    """
    return {name: (t.t() if name.endswith(CONV1D_WEIGHTS) else t)
            for name, t in hf_state_dict.items()}


def next_token_top_k(logits: torch.Tensor, k: int, temperature: float = 1.0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most likely next tokens after each sequence, most likely first.

        p = softmax(z / τ)   over the whole vocabulary, z the LAST position's logits

    Args:
        logits: (B, T, V) a language model's output.
        k: how many tokens to return (1 ≤ k ≤ V).
        temperature: τ > 0; below 1 sharpens the distribution, above 1 flattens it.

    Returns:
        ``(probs, ids)``, both (B, k): the probabilities (under the full softmax, not
        renormalised over the k) in decreasing order, and the token ids (int64).

    Example:
        >>> probs, ids = next_token_top_k(torch.tensor([[[0.0, 2.0, 1.0]]]), k=2)
        >>> ids.tolist(), [round(p, 3) for p in probs[0].tolist()]
        ([[1, 2]], [0.665, 0.245])
    """
    probs = torch.softmax(logits[:, -1, :] / temperature, dim=-1)  # (B, V)
    return torch.topk(probs, k, dim=-1)  # (B, k), (B, k)


def _own_rng(check: Callable[..., None]) -> Callable[..., None]:
    """Run a checker without disturbing the global random state (``nn.Linear``, ``GPT`` and
    ``Conv1D`` all initialise their weights from it, the learner's code may draw too)."""

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        with torch.random.fork_rng(devices=[]):
            check(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------ Conv1D → Linear


def _random_conv1d(nx: int, nf: int, gen: torch.Generator) -> nn.Module:
    from transformers.pytorch_utils import Conv1D  # heavy (seconds): only when needed

    conv = Conv1D(nf, nx)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(nx, nf, generator=gen) / nx**0.5)  # (in, out)
        conv.bias.copy_(torch.randn(nf, generator=gen))  # (out,)
    return conv


@_own_rng
def check_conv1d_to_linear(fn: Callable[[nn.Module], nn.Linear]) -> None:
    """Check ``fn(conv)`` → ``nn.Linear`` against the ``Conv1D`` layer's own forward pass.

    The returned layer must be an ``nn.Linear`` with ``in_features = nx``, ``out_features = nf``
    and give ``conv(x)`` on random inputs. The cases include a square layer (16 → 16), where a
    weight copied without its transpose, or reshaped with ``view``/``reshape`` instead of
    transposed, has the right shape and the wrong numbers.
    """
    require_function(fn, "conv1d_to_linear")
    gen = torch.Generator().manual_seed(70)
    cases = []
    for nx, nf, shape in [(8, 24, (5,)), (16, 16, (3,)), (32, 8, (2, 4)), (12, 48, (2, 3)),
                          (6, 10, (1,))]:
        x = torch.randn(*shape, nx, generator=gen)  # (..., in)
        cases.append((_random_conv1d(nx, nf, gen), x))

    def learner(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        linear = fn(conv)
        nx, nf = conv.weight.shape
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        if (linear.in_features, linear.out_features) != (nx, nf):
            raise ValueError(f"expected nn.Linear(in_features={nx}, out_features={nf}), got "
                             f"nn.Linear({linear.in_features}, {linear.out_features})")
        if tuple(linear.weight.shape) != (nf, nx):
            raise ValueError(f"the Linear's weight is {tuple(linear.weight.shape)}; nn.Linear "
                             f"stores (out, in) = {(nf, nx)}")
        with torch.no_grad():
            return linear(x)  # (..., out)

    def reference(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return conv(x)  # (..., out)

    compare(learner, reference, cases, name="conv1d_to_linear", atol=1e-5, rtol=1e-5,
            hint="Conv1D computes x @ W + b with W (in, out); nn.Linear computes x @ W.T + b "
                 "with W (out, in): copy conv.weight.t() (a transpose, not a reshape) and "
                 "the bias")


# ------------------------------------------------------------------------------ state dict


class _Case:
    """A random ``GPT2LMHeadModel``, some token ids and its logits (the expected answer)."""

    def __init__(self, cfg: GPTConfig, gen: torch.Generator) -> None:
        from transformers import GPT2LMHeadModel  # heavy (seconds): only when needed
        from transformers.utils import logging

        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()
        try:
            hf = GPT2LMHeadModel(cfg.to_hf()).eval()
        finally:
            logging.set_verbosity(verbosity)
        with torch.no_grad():
            for name, p in hf.named_parameters():  # the tied lm_head comes with wte
                base = 1.0 if ".ln_" in name and name.endswith("weight") else 0.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=gen))
            self.ids = torch.randint(cfg.vocab_size, (2, cfg.block_size), generator=gen)
            self.logits = hf(self.ids).logits  # (2, T, V)
        self.cfg = cfg
        self.state_dict = {k: v.detach().clone() for k, v in hf.state_dict().items()}

    def __repr__(self) -> str:
        c = self.cfg
        return (f"GPT2LMHeadModel state dict (vocab_size={c.vocab_size}, "
                f"block_size={c.block_size}, n_layer={c.n_layer}, n_head={c.n_head}, "
                f"n_embd={c.n_embd})")


_STATE_CONFIGS = [
    GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16),
    GPTConfig(vocab_size=97, block_size=12, n_layer=3, n_head=4, n_embd=32),
    GPTConfig(vocab_size=50, block_size=6, n_layer=2, n_head=1, n_embd=24),
]


@_own_rng
def check_state_dict_conversion(fn: Callable[[dict[str, torch.Tensor]],
                                             Mapping[str, torch.Tensor]]) -> None:
    """Check ``fn(hf_state_dict)`` → a state dict that the course's ``GPT`` loads (strictly)
    and that then gives ``GPT2LMHeadModel``'s logits.

    The HF models have random weights (LayerNorms included) in three small configs. An
    untransposed ``c_attn`` or ``c_fc`` fails to load (shape mismatch); an untransposed
    ``attn.c_proj``, which is square, loads and gives wrong logits.
    """
    require_function(fn, "state_dict_conversion", function="hf_to_course_state_dict")
    gen = torch.Generator().manual_seed(71)
    cases = [(_Case(cfg, gen),) for cfg in _STATE_CONFIGS]

    def learner(case: _Case) -> torch.Tensor:
        out = fn({k: v.clone() for k, v in case.state_dict.items()})
        if not isinstance(out, Mapping):
            raise TypeError(f"expected a dict of name → tensor, got {type(out).__name__}")
        model = GPT(case.cfg).eval()
        model.load_state_dict(dict(out))  # strict: names a missing or mis-shaped tensor
        with torch.no_grad():
            return model(case.ids)[0]  # (2, T, V)

    compare(learner, lambda case: case.logits, cases, name="state_dict_conversion",
            atol=1e-4, rtol=1e-4,
            hint="keep every name; transpose exactly the four Conv1D weights of each block "
                 "(attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj .weight), (in, out) → "
                 "(out, in); biases, LayerNorms and embeddings stay as they are")


# ------------------------------------------------------------------------------ top-k next tokens


def _hf_top_k(logits: torch.Tensor, k: int, temperature: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    # transformers is heavy (seconds to import): imported only when a check needs it.
    from transformers.generation.logits_process import TemperatureLogitsWarper

    scores = TemperatureLogitsWarper(temperature)(None, logits[:, -1, :])  # (B, V)
    return tuple(torch.topk(torch.softmax(scores, dim=-1), k, dim=-1))  # (B, k) twice


@_own_rng
def check_next_token_top_k(fn: Callable[[torch.Tensor, int, float],
                                        tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Check ``fn(logits, k, temperature)`` → ``(probs, ids)`` against ``transformers``'
    ``TemperatureLogitsWarper`` on the last position, then ``torch.softmax`` and ``torch.topk``.

    Cases: several batch sizes and sequence lengths (the first position is not the last),
    k from 1 to the whole vocabulary, temperatures 0.5, 1 and 2, and float64 logits.
    """
    require_function(fn, "next_token_top_k")
    gen = torch.Generator().manual_seed(72)

    def case(b: int, t: int, v: int, k: int, temperature: float, scale: float = 2.0,
             dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
        logits = scale * torch.randn(b, t, v, generator=gen, dtype=dtype)  # (B, T, V)
        return logits, k, temperature

    cases = [
        case(1, 4, 20, 5, 1.0),
        case(2, 6, 50, 10, 1.0),
        case(3, 5, 40, 8, 0.5),
        case(2, 3, 30, 6, 2.0, scale=4.0),
        case(1, 7, 25, 1, 1.0),
        case(2, 4, 12, 12, 1.5),  # k = V: every token, still sorted
        case(2, 5, 60, 7, 0.7, dtype=torch.float64),
    ]
    compare(fn, _hf_top_k, cases, name="next_token_top_k", atol=1e-6, rtol=1e-5,
            hint="take the LAST position, logits[:, -1, :]; divide by the temperature; "
                 "softmax over the whole vocabulary (dim=-1); then torch.topk(probs, k), "
                 "largest first, without renormalising over the k")

"""Chapter 07 exercises: GPT-2's weights in the course's layout, and what the model predicts.

- :func:`conv1d_to_linear`: one of GPT-2's ``Conv1D`` layers as an ``nn.Linear``;
- :func:`openai_to_course_state_dict`: GPT-2 as OpenAI first released it (the TensorFlow
  checkpoint's names and shapes) for the course's GPT;
- :func:`next_token_top_k`: the k most likely next tokens and their probabilities.

Each checker compares the learner's function with code no one here wrote: ``transformers``'
own ``Conv1D`` forward, ``GPT2LMHeadModel``'s logits, and ``transformers``'
``TemperatureLogitsWarper`` followed by ``torch.softmax`` and ``torch.topk``. The cases come from
each checker's own seeded generator and the checkers run under ``torch.random.fork_rng``, so
the notebook's global random state is left as it was. ``tests/test_checks_ch07.py`` checks
that the solutions below pass and that the usual mistakes (a reshape where a transpose was
needed, a forgotten bias, a kernel left untransposed or unsqueezed, the tied output layer
dropped, a dtype changed, the first position's logits, a temperature that multiplies,
probabilities renormalised over the top k) fail.

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
    "conv1d_to_linear", "openai_to_course_state_dict", "next_token_top_k",
    "check_conv1d_to_linear", "check_openai_to_course", "check_next_token_top_k",
]

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


def openai_to_course_state_dict(variables: Mapping[str, torch.Tensor]
                                ) -> dict[str, torch.Tensor]:
    """GPT-2 weights in OpenAI's original layout, converted for the course GPT's
    ``load_state_dict``.

    OpenAI released GPT-2 as a TensorFlow checkpoint written by its ``src/model.py``: variables
    ``model/wte`` (V, C), ``model/wpe`` (T, C), per block ``model/h{i}/ln_1/g`` and ``/b``,
    ``attn/c_attn/w`` (1, C, 3C) and ``/b``, ``attn/c_proj``, ``ln_2``, ``mlp/c_fc``,
    ``mlp/c_proj``, and ``model/ln_f/g``, ``/b``. Each ``w`` is a width-1 convolution's kernel
    [1, in, out]; the logits are ``h @ wteᵀ``, so there is no output-layer variable. Here the
    variables come as torch tensors; each keeps its dtype.

    Example:
        >>> variables = {"model/h0/mlp/c_fc/w": torch.zeros(1, 4, 16), "model/wte":
        ...              torch.zeros(10, 4), "model/ln_f/g": torch.ones(4)}
        >>> sd = openai_to_course_state_dict(variables)
        >>> tuple(sd["transformer.h.0.mlp.c_fc.weight"].shape), sorted(sd)[:2]
        ((16, 4), ['lm_head.weight', 'transformer.h.0.mlp.c_fc.weight'])
        >>> sd["lm_head.weight"] is sd["transformer.wte.weight"]
        True
    """
    leaf_names = {"w": "weight", "g": "weight", "b": "bias"}
    out = {}
    for name, tensor in variables.items():
        _, *scope, leaf = name.split("/")  # "model", scopes..., the variable
        if leaf in ("wte", "wpe"):
            out[f"transformer.{leaf}.weight"] = tensor
            continue
        if scope[0].startswith("h"):  # "h3" → "h.3"
            scope = ["h", scope[0][1:], *scope[1:]]
        if leaf == "w":
            tensor = tensor[0].t()  # (1, in, out) → (out, in), nn.Linear's layout
        out["transformer." + ".".join(scope) + "." + leaf_names[leaf]] = tensor
    out["lm_head.weight"] = out["transformer.wte.weight"]  # tied: the same tensor
    return out


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


def _openai_layout(hf_state_dict: Mapping[str, torch.Tensor], n_layer: int
                   ) -> dict[str, torch.Tensor]:
    """A GPT2LMHeadModel state dict written the way OpenAI's TensorFlow checkpoint names and
    shapes its variables (the inverse of :func:`openai_to_course_state_dict`, from HF's side)."""
    sd = hf_state_dict
    out = {"model/wte": sd["transformer.wte.weight"], "model/wpe": sd["transformer.wpe.weight"]}
    for i in range(n_layer):
        for scope in ("ln_1", "ln_2"):
            out[f"model/h{i}/{scope}/g"] = sd[f"transformer.h.{i}.{scope}.weight"]
            out[f"model/h{i}/{scope}/b"] = sd[f"transformer.h.{i}.{scope}.bias"]
        for scope in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            hf_name = f"transformer.h.{i}.{scope.replace('/', '.')}"
            out[f"model/h{i}/{scope}/w"] = sd[f"{hf_name}.weight"][None]  # (1, in, out)
            out[f"model/h{i}/{scope}/b"] = sd[f"{hf_name}.bias"]
    out["model/ln_f/g"] = sd["transformer.ln_f.weight"]
    out["model/ln_f/b"] = sd["transformer.ln_f.bias"]
    return out


class _Case:
    """A random ``GPT2LMHeadModel`` in OpenAI's layout, some token ids and the HF model's
    logits (the expected answer)."""

    def __init__(self, cfg: GPTConfig, dtype: torch.dtype, gen: torch.Generator) -> None:
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
                value = base + 0.3 * torch.randn(p.shape, generator=gen)
                p.copy_(value.to(dtype))  # a float16 checkpoint's values, held in float32
            self.ids = torch.randint(cfg.vocab_size, (2, cfg.block_size), generator=gen)
            self.logits = hf(self.ids).logits  # (2, T, V)
        self.cfg, self.dtype = cfg, dtype
        hf_sd = {k: v.detach().to(dtype) for k, v in hf.state_dict().items()}
        self.variables = _openai_layout(hf_sd, cfg.n_layer)

    def __repr__(self) -> str:
        c = self.cfg
        return (f"OpenAI-layout GPT-2 variables, {self.dtype} (vocab_size={c.vocab_size}, "
                f"block_size={c.block_size}, n_layer={c.n_layer}, n_head={c.n_head}, "
                f"n_embd={c.n_embd})")


_OPENAI_CASES = [
    (GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16), torch.float32),
    (GPTConfig(vocab_size=97, block_size=12, n_layer=3, n_head=4, n_embd=32), torch.float32),
    (GPTConfig(vocab_size=50, block_size=6, n_layer=2, n_head=1, n_embd=24), torch.float16),
]


def _check_layout(out: object, case: _Case, model: GPT) -> dict[str, torch.Tensor]:
    """The returned state dict's names, types, shapes and dtypes, each problem named."""
    if not isinstance(out, Mapping):
        raise TypeError(f"the returned value is a {type(out).__name__}; expected a dict of "
                        "name → tensor")
    expected = model.state_dict()
    missing = [k for k in expected if k not in out]
    unexpected = [k for k in out if k not in expected]
    if "lm_head.weight" in missing:
        raise ValueError("the returned state dict lacks 'lm_head.weight': the checkpoint has no "
                         "output-layer variable because GPT-2 ties it to the token embedding, "
                         "so it is model/wte")
    if missing or unexpected:
        first = (f"lacks {missing[0]!r} (and {len(missing) - 1} more)" if missing
                 else f"has {unexpected[0]!r}, a name the course GPT does not have (and "
                      f"{len(unexpected) - 1} more)")
        raise ValueError(f"the returned state dict {first}; compare with "
                         "GPT(config).state_dict().keys()")
    for name, ours in expected.items():
        got = out[name]
        if not isinstance(got, torch.Tensor):
            raise TypeError(f"{name!r} is a {type(got).__name__}, not a tensor")
        if got.shape != ours.shape:
            why = ""
            if got.dim() == 3 and got.shape[0] == 1:
                why = ": drop the kernel's leading width-1 axis"
            elif got.dim() == 2 and got.shape == ours.shape[::-1]:
                why = ": that is (in, out); nn.Linear stores (out, in)"
            raise ValueError(f"{name!r} has shape {tuple(got.shape)}, the course GPT's is "
                             f"{tuple(ours.shape)}{why}")
        if got.dtype != case.dtype:
            raise TypeError(f"{name!r} is {got.dtype} but the checkpoint's tensors are "
                            f"{case.dtype}: a converter keeps each tensor's dtype (.half() loses "
                            "precision, .float() doubles a half-precision checkpoint's memory; "
                            "casting is the loader's choice)")
    return dict(out)


@_own_rng
def check_openai_to_course(fn: Callable[[dict[str, torch.Tensor]],
                                        Mapping[str, torch.Tensor]]) -> None:
    """Check ``fn(variables)`` → a state dict that the course's ``GPT`` loads (strictly) and that
    then gives ``GPT2LMHeadModel``'s logits.

    ``variables`` is a random ``GPT2LMHeadModel`` written in OpenAI's original layout (see
    :func:`openai_to_course_state_dict`), in three small configs, the last one in float16. The
    names, shapes and dtypes of the answer are checked first, each problem named (a missing
    tied ``lm_head.weight``, a kernel not squeezed or not transposed, a dtype changed); then the
    logits, which catch what the shapes cannot: the square ``c_proj`` left untransposed, a
    reshape instead of a transpose, ``g`` and ``b`` swapped.
    """
    require_function(fn, "openai_to_course")
    gen = torch.Generator().manual_seed(71)
    cases = [(_Case(cfg, dtype, gen),) for cfg, dtype in _OPENAI_CASES]

    def learner(case: _Case) -> torch.Tensor:
        model = GPT(case.cfg).eval()
        out = fn({k: v.clone() for k, v in case.variables.items()})
        model.load_state_dict(_check_layout(out, case, model))
        with torch.no_grad():
            return model(case.ids)[0]  # (2, T, V)

    compare(learner, lambda case: case.logits, cases, name="openai_to_course",
            atol=1e-4, rtol=1e-4,
            hint="model/ → transformer., hN → h.N, g → weight, b → bias; each w is a kernel "
                 "(1, in, out): w[0].t() gives nn.Linear's (out, in), a transpose, not a "
                 "reshape, also for the square c_proj; lm_head.weight is model/wte (tied); "
                 "keep each tensor's dtype")


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

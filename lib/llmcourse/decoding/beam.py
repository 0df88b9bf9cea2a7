"""Beam search: keep the ``num_beams`` best partial sequences instead of only the best one.

Greedy decoding commits to the most likely token at every step and can miss a sequence whose
first token is less likely but whose whole is more likely. Beam search keeps ``k`` running
candidates ("beams"), scored by their total log-probability

    score(y_1..y_t) = Σ_i log p(y_i | prompt, y_<i)

and at every step extends each by every token, keeping the best ``k`` of the ``k·V``
extensions. A beam that emits EOS leaves the race and joins the finished hypotheses, ranked by

    score / (generated length) ** length_penalty

so ``length_penalty > 0`` favours longer outputs and ``< 0`` shorter ones.

This follows ``transformers``' vectorised beam search step for step, so the chosen sequences
are the same, ties and all:

- each step keeps the top ``K = max(2, 1 + #EOS ids) · k`` extensions, so that ``k`` of them
  can go on even if the best ones all just finished;
- only extensions among the top ``k`` can enter the finished list;
- ``early_stopping``: True stops a prompt once it has ``k`` finished hypotheses; False stops
  it when the best running beam, scored at its current length, cannot beat the worst
  finished one; "never" does the same check at the best length still reachable;
- "impossible" entries are pushed down by adding -1e9 rather than removed, which keeps every
  tensor the same shape.

Example:
    >>> from llmcourse.models.gpt import GPT, GPTConfig
    >>> from llmcourse.decoding.generate import generate
    >>> model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32))
    >>> generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=4, num_beams=3).shape
    torch.Size([1, 7])
"""

from __future__ import annotations

import torch

from llmcourse.decoding.decoder import StepDecoder
from llmcourse.decoding.processors import DecodingSettings, process_logits

__all__ = ["beam_search"]

IMPOSSIBLE = -1.0e9  # added to a score to rule an entry out without changing any shape


def _pick(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select entries ``index`` (B, n) along axis 1 of ``x`` (B, m, ...)."""
    while index.dim() < x.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(x, index, dim=1)


def beam_search(decoder: StepDecoder, input_ids: torch.Tensor, settings: DecodingSettings, *,
                padding: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Beam search over ``decoder`` (built for B·num_beams rows: a GPT's :class:`Decoder` or
    an encoder–decoder's) from prompts (B, T).

    Returns the best finished hypothesis per prompt, (B, T + n), where n is the longest of
    them; shorter ones are filled with the pad id (with EOS ids), or -1 when there is no EOS.
    With ``settings.do_sample`` the K extensions are drawn instead of taken (beam sampling).
    """
    k = settings.num_beams
    b, t = input_ids.shape
    total = t + settings.max_new_tokens
    device = input_ids.device
    eos_ids = settings.eos_token_id
    eos = torch.tensor(eos_ids, device=device) if eos_ids else None
    width = max(2, 1 + len(eos_ids)) * k  # K extensions kept per step
    in_top_k = torch.arange(width, device=device) < k  # (K,)
    # transformers fills with `pad_token_id or eos_token_id[0]`: a pad id of 0 counts as unset.
    fill = (settings.pad_token_id or eos_ids[0]) if eos_ids else -1
    lp, stop_early = settings.length_penalty, settings.early_stopping

    running = torch.full((b, k, total), fill, dtype=torch.long, device=device)
    running[:, :, :t] = input_ids[:, None, :]
    # Only the first beam starts alive: the k copies of the prompt would propose the same
    # extensions k times.
    running_scores = torch.zeros(b, k, device=device)
    running_scores[:, 1:] = IMPOSSIBLE
    finished = running.clone()  # (B, k, total) the best finished hypotheses so far
    finished_scores = torch.full((b, k), IMPOSSIBLE, device=device)
    finished_len = torch.zeros(b, k, dtype=torch.long, device=device)  # new tokens in each
    is_finished = torch.zeros(b, k, dtype=torch.bool, device=device)
    can_improve = torch.ones(b, 1, dtype=torch.bool, device=device)
    row_offset = torch.arange(b, device=device)[:, None] * k  # (B, 1)

    cur = t
    while True:
        text = running[:, :, :cur].reshape(b * k, cur)  # (B·k, L)
        logp = torch.log_softmax(decoder.next_logits(text), dim=-1)  # (B·k, V)
        logp = process_logits(logp, text, settings, prompt_length=t, padding=padding)
        v = logp.shape[-1]
        totals = (logp.view(b, k, v) + running_scores[:, :, None]).view(b, k * v)  # (B, k·V)

        # 1. The K best (or K drawn) extensions over all beams of a prompt.
        if settings.do_sample:
            if bool(torch.isneginf(totals).all(dim=-1).any()):
                raise ValueError(f"every token of every beam was ruled out at new token "
                                 f"{cur - t}: nothing left to sample from")
            drawn = torch.multinomial(totals.softmax(dim=-1), width, generator=generator)
            cand_scores, order = totals.gather(1, drawn).sort(dim=-1, descending=True)
            flat_index = drawn.gather(1, order)  # (B, K)
        else:
            cand_scores, flat_index = torch.topk(totals, width, dim=-1)  # (B, K)
        source = flat_index // v  # (B, K) the beam each extension grows
        candidates = _pick(running, source)  # (B, K, total)
        candidates[:, :, cur] = flat_index % v
        ends = torch.zeros(b, width, dtype=torch.bool, device=device)
        if eos is not None:
            ends = torch.isin(candidates[:, :, cur], eos)
        if cur + 1 >= total:
            ends = torch.ones_like(ends)

        # 2. The k best extensions that did not end are the next running beams.
        alive_scores = cand_scores + ends.float() * IMPOSSIBLE
        keep = torch.topk(alive_scores, k, dim=-1).indices  # (B, k)
        running = _pick(candidates, keep)
        running_scores = _pick(alive_scores, keep)
        survivors_from = _pick(source, keep)  # (B, k)

        # 3. Extensions that ended (among the top k) compete with the finished hypotheses.
        new_len = cur + 1 - t
        ranked = cand_scores / (new_len ** lp)
        full = is_finished.all(dim=-1, keepdim=True) & (stop_early is True)  # (B, 1)
        ranked = ranked + full.float() * IMPOSSIBLE
        ranked = ranked + (~can_improve).float() * IMPOSSIBLE
        just_ended = ends & in_top_k[None, :]  # (B, K)
        ranked = ranked + (~just_ended).float() * IMPOSSIBLE
        pool_scores = torch.cat([finished_scores, ranked], dim=1)  # (B, k + K)
        best = torch.topk(pool_scores, k, dim=-1).indices  # (B, k)
        finished = _pick(torch.cat([finished, candidates], dim=1), best)
        finished_scores = _pick(pool_scores, best)
        new_lens = torch.full((b, width), new_len, dtype=torch.long, device=device)
        finished_len = _pick(torch.cat([finished_len, new_lens], dim=1), best)
        is_finished = _pick(torch.cat([is_finished, just_ended], dim=1), best)

        # 4. The cache follows the survivors.
        decoder.reorder((survivors_from + row_offset).reshape(-1))
        cur += 1

        # 5. Can a running beam still beat the worst finished hypothesis?
        best_len = (total - t) if (stop_early == "never" and lp > 0) else (cur - t)
        best_possible = running_scores[:, :1] / (best_len ** lp)  # (B, 1)
        worst = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values,
                            IMPOSSIBLE)  # (B, k)
        can_improve = can_improve & (best_possible > worst).any(dim=-1, keepdim=True)
        all_full = bool(is_finished.all()) and stop_early is True
        if not bool(can_improve.any()) or all_full or bool(ends.all()):
            break

    length = t + int(finished_len[:, 0].max())
    return finished[:, 0, :length]

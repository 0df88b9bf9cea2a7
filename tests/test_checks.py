"""The exercise-checking framework (llmcourse.checks: compare, check_cases, Mistake) and chapter
00's checkers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.checks import CheckFailed, Mistake, ch00, check_cases, clone_args, compare

# ---------------------------------------------------------------- compare


def test_compare_passes_equal_functions(capsys):
    cases = [(torch.randn(3, 4),), (torch.randn(2),)]
    compare(lambda x: x + x, lambda x: 2 * x, cases, name="double")
    out = capsys.readouterr().out
    assert "✓ double" in out and "2 case(s)" in out


def test_compare_fails_wrong_function_with_expected_and_got():
    x = torch.tensor([1.0, 2.0, 3.0])
    with pytest.raises(CheckFailed) as info:
        compare(lambda x: x + 1, lambda x: 2 * x, [(x,)], name="double", hint="multiply by two")
    msg = str(info.value)
    assert "✗ double" in msg and "case 1 differs" in msg
    assert "expected:" in msg and "got:" in msg
    assert "hint: multiply by two" in msg
    # The first differing position is named, with both values.
    assert "first at index (1,): expected 4, got 3" in msg


def test_compare_is_an_assertion_error():
    with pytest.raises(AssertionError):
        compare(lambda x: x, lambda x: -x, [(torch.ones(1),)], name="neg")


def test_compare_reports_learner_exception_with_case():
    def learner(x):
        raise RuntimeError("boom")

    with pytest.raises(CheckFailed) as info:
        compare(learner, lambda x: x, [(torch.zeros(2, 5),)], name="ident", hint="look again")
    msg = str(info.value)
    assert "raised RuntimeError: boom" in msg
    assert "shape=(2, 5)" in msg and "hint: look again" in msg


def test_compare_not_implemented_says_so():
    def learner(x):
        raise NotImplementedError("exercise")

    with pytest.raises(CheckFailed, match="not implemented yet"):
        compare(learner, lambda x: x, [(torch.zeros(1),)], name="todo")


def test_compare_without_cases_is_value_error():
    with pytest.raises(ValueError, match="no cases"):
        compare(lambda x: x, lambda x: x, [], name="empty")


def test_compare_rejects_bare_tensor_case():
    with pytest.raises(TypeError, match="tuple of arguments"):
        compare(lambda x: x, lambda x: x, [torch.zeros(2)], name="bare")


def test_compare_shape_mismatch():
    with pytest.raises(CheckFailed, match=r"shape \(3,\) != expected \(1, 3\)"):
        compare(lambda x: x.squeeze(0), lambda x: x, [(torch.zeros(1, 3),)], name="shape")


def test_compare_names_nan_where_reference_is_finite():
    # The NaN is at index 3; index 0 differs first, but the message must point at the NaN.
    x = torch.tensor([2.0, 1.0, 1.0, 0.0])
    with pytest.raises(CheckFailed, match=r"got NaN at 1 position\(s\), first at index \(3,\)"):
        compare(lambda t: (t / t) * torch.tensor([3.0, 1, 1, 1]), lambda t: torch.ones_like(t),
                [(x,)], name="div")


def test_compare_accepts_minus_inf_where_the_reference_has_it():
    # A filtered logit is -inf in a correct answer; only disagreements about it are reported.
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    ref = lambda t: t.masked_fill(t < 0.8, float("-inf"))  # noqa: E731
    compare(ref, ref, [(logits,)], name="filter")
    with pytest.raises(CheckFailed, match=r"where the reference is finite, first at index "
                                          r"\(0, 1\).*masked or filtered that should be kept"):
        compare(lambda t: t.masked_fill(t < 1.5, float("-inf")), ref, [(logits,)], name="filter")
    with pytest.raises(CheckFailed, match=r"finite value at 1 position\(s\) where the reference "
                                          r"has -inf, first at index \(0, 2\)"):
        compare(lambda t: t.masked_fill(t < 0.2, float("-inf")), ref, [(logits,)], name="filter")


@pytest.mark.parametrize(("got_dtype", "want_dtype"), [
    (torch.float32, torch.float64),  # computed in float32 from float64 inputs
    (torch.float64, torch.float32),  # upcast where float32 is asked
    (torch.float32, torch.int64),  # float token ids
    (torch.int32, torch.int64),
])
def test_compare_requires_the_reference_dtype(got_dtype, want_dtype):
    x = torch.tensor([1, 2, 3], dtype=want_dtype)
    compare(lambda t: t.clone(), lambda t: t.clone(), [(x,)], name="dtype")
    with pytest.raises(CheckFailed, match=f"dtype {got_dtype} != expected {want_dtype}"):
        compare(lambda t: t.to(got_dtype), lambda t: t.clone(), [(x,)], name="dtype")


def test_compare_requires_an_int_where_the_reference_counts():
    count = lambda n: 12 * n * n  # noqa: E731
    compare(count, count, [(768,)], name="count")
    for wrong in (lambda n: 12.0 * n * n, lambda n: torch.tensor(12.0 * n * n), lambda n: True):
        with pytest.raises(CheckFailed, match="expected an int, got"):
            compare(wrong, count, [(768,)], name="count")
    compare(lambda n: torch.tensor(12 * n * n), count, [(768,)], name="count")  # 0-d int tensor


def test_compare_wrong_type_result():
    with pytest.raises(CheckFailed, match="expected a torch.Tensor, got list"):
        compare(lambda x: x.tolist(), lambda x: x, [(torch.zeros(2),)], name="type")


def test_compare_learner_cannot_change_what_reference_sees():
    x = torch.tensor([1.0, 2.0])
    compare(lambda t: t.mul_(2), lambda t: t * 2, [(x,)], name="inplace")
    assert torch.equal(x, torch.tensor([1.0, 2.0]))


def test_compare_tolerance_is_respected():
    x = torch.ones(3)
    compare(lambda t: t + 1e-7, lambda t: t, [(x,)], name="tiny")
    with pytest.raises(CheckFailed):
        compare(lambda t: t + 1e-3, lambda t: t, [(x,)], name="small")
    compare(lambda t: t + 1e-3, lambda t: t, [(x,)], name="loose", atol=1e-2)


def test_compare_sequences_and_numbers():
    x = torch.arange(6.0).reshape(2, 3)
    compare(lambda t: (t.sum(), t.shape[0]), lambda t: (t.sum(), 2), [(x,)], name="tuple")
    with pytest.raises(CheckFailed, match="item 1"):
        compare(lambda t: (t.sum(), 3), lambda t: (t.sum(), 2), [(x,)], name="tuple")
    # A 0-d tensor is an acceptable answer when the reference returns a Python float.
    compare(lambda t: t.mean(), lambda t: float(t.mean()), [(x,)], name="float")
    with pytest.raises(CheckFailed):
        compare(lambda t: t.mean() + 1, lambda t: float(t.mean()), [(x,)], name="float")


def test_compare_integer_tensors_exact():
    x = torch.tensor([3, 1, 2])
    compare(lambda t: t.argsort(), lambda t: torch.argsort(t), [(x,)], name="argsort")
    with pytest.raises(CheckFailed, match="first at index"):
        compare(lambda t: t.argsort(descending=True), torch.argsort, [(x,)], name="argsort")


# ---------------------------------------------------------------- check_cases and Mistake


def _square(x):
    return x * x


def _doubled(got, expected, case):
    return torch.equal(got, 2 * case[0])


# x + x equals x * x at 0 and 2 only: the second case is where the mistake shows
_CASES = [(torch.tensor([0.0, 2.0]),), (torch.tensor([3.0, -1.0]),)]


def test_check_cases_passes_with_one_line(capsys):
    check_cases(lambda x: x ** 2, _square, _CASES, name="square", hint="x * x",
                mistakes=[Mistake(_doubled, "doubled")], against="x * x")
    assert capsys.readouterr().out == "✓ square: 2 case(s) match x * x\n"


def test_check_cases_names_the_first_mistake_that_fits_and_the_case_number():
    mistakes = [Mistake(lambda got, expected, case: False, "never"),
                Mistake(_doubled, "doubled, not squared"),
                Mistake(lambda got, expected, case: True, "any answer")]
    with pytest.raises(CheckFailed) as info:
        check_cases(lambda x: x + x, _square, _CASES, name="square", hint="x * x",
                    mistakes=mistakes)
    message = str(info.value)
    assert message.startswith("✗ square: case 2 differs: values differ")
    assert message.endswith("\n  hint: doubled, not squared")


def test_check_cases_gives_the_general_hint_when_no_mistake_fits():
    def raises(got, expected, case):
        raise ValueError("a mistake that cannot tell")

    mistakes = [Mistake(raises, "raised"), Mistake(_doubled, "doubled")]
    with pytest.raises(CheckFailed, match=r"case 1 differs(.|\n)*\n  hint: x \* x$"):
        check_cases(lambda x: x ** 3, _square, _CASES, name="square", hint="x * x",
                    mistakes=mistakes)
    with pytest.raises(CheckFailed, match=r"\n  hint: doubled$"):  # the next one is tried
        check_cases(lambda x: x + x, _square, _CASES, name="square", hint="x * x",
                    mistakes=mistakes)


def test_check_cases_a_learner_that_raises_is_reported_with_the_general_hint():
    def broken(x):
        raise KeyError("oops")

    with pytest.raises(CheckFailed, match=r"raised KeyError(.|\n)*hint: x \* x$") as info:
        check_cases(broken, _square, _CASES, name="square", hint="x * x",
                    mistakes=[Mistake(lambda got, expected, case: True, "any answer")])
    assert isinstance(info.value.__cause__, KeyError)


def test_check_cases_tolerance_by_case():
    off = lambda x: x * x + 1e-3  # noqa: E731
    with pytest.raises(CheckFailed, match="case 1 differs"):
        check_cases(off, _square, _CASES, name="square", hint="", tolerance=(1e-5, 0.0))
    check_cases(off, _square, _CASES, name="square", hint="", tolerance=(1e-2, 0.0))
    loose_first = lambda case: (1e-2, 0.0) if case[0][0] == 0 else (1e-5, 0.0)  # noqa: E731
    with pytest.raises(CheckFailed, match="case 2 differs"):
        check_cases(off, _square, _CASES, name="square", hint="", tolerance=loose_first)


def test_check_cases_compares_the_adapted_learner_and_diagnoses_the_learner():
    seen = []

    def fits(got, expected, case):
        seen.append(got)
        return False

    as_list = lambda x: (x * x).tolist()  # noqa: E731
    check_cases(as_list, _square, _CASES, name="square", hint="",
                judged=lambda x: torch.tensor(as_list(x)), mistakes=[Mistake(fits, "")])
    assert seen == []  # every case passed: nothing to diagnose

    off_on_3 = lambda x: (x * x + (x[0] == 3)).tolist()  # noqa: E731  wrong on case 2 only
    with pytest.raises(CheckFailed, match="case 2 differs"):
        check_cases(off_on_3, _square, _CASES, name="square", hint="",
                    judged=lambda x: torch.tensor(off_on_3(x)), mistakes=[Mistake(fits, "")])
    assert seen == [[10.0, 2.0]]  # the learner's own answer (a list), on the failing case


def test_check_cases_needs_a_case():
    with pytest.raises(ValueError, match="given no cases"):
        check_cases(_square, _square, [], name="square", hint="")


def test_check_cases_in_place_learner_cannot_change_what_the_others_see():
    def in_place(x):
        y = x * x
        x.zero_()
        return y

    x = torch.tensor([1.0, 2.0])
    check_cases(in_place, _square, [(x,)], name="square", hint="",
                mistakes=[Mistake(lambda got, expected, case: bool(case[0].eq(0).all()), "")])
    assert torch.equal(x, torch.tensor([1.0, 2.0]))
    assert clone_args((x, 2))[0] is not x


# ---------------------------------------------------------------- chapter 00 references


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       scale=st.sampled_from([1.0, 10.0, 300.0]), seed=st.integers(0, 2**16))
def test_ch00_references_match_torch(shape, scale, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale
    torch.testing.assert_close(ch00.softmax(x), torch.softmax(x, dim=-1))
    torch.testing.assert_close(ch00.log_softmax(x), torch.log_softmax(x, dim=-1),
                               atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ch00.entropy(x),
                               torch.distributions.Categorical(logits=x).entropy(),
                               atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- chapter 00 checkers


@pytest.mark.parametrize("fn", [ch00.softmax, lambda x: torch.softmax(x, dim=-1)])
def test_check_softmax_passes_correct(fn, capsys):
    ch00.check_softmax(fn)
    assert "✓ softmax" in capsys.readouterr().out


def test_check_softmax_fails_unstable():
    naive = lambda x: x.exp() / x.exp().sum(dim=-1, keepdim=True)
    with pytest.raises(CheckFailed, match="got NaN.*exp that overflowed"):
        ch00.check_softmax(naive)


def test_check_softmax_fails_wrong_axis():
    wrong_axis = lambda x: ch00.softmax(x.transpose(0, -1)).transpose(0, -1)
    with pytest.raises(CheckFailed, match="values differ"):
        ch00.check_softmax(wrong_axis)
    with pytest.raises(CheckFailed):
        ch00.check_softmax(lambda x: torch.softmax(x, dim=0))


def test_check_softmax_fails_unnormalized():
    with pytest.raises(CheckFailed, match="hint"):
        ch00.check_softmax(lambda x: (x - x.amax(dim=-1, keepdim=True)).exp())


def test_check_softmax_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ch00.check_softmax(ch00.softmax)
    assert torch.equal(torch.rand(3), expected)


def test_check_log_softmax_passes_and_fails(capsys):
    ch00.check_log_softmax(ch00.log_softmax)
    ch00.check_log_softmax(lambda x: torch.log_softmax(x, dim=-1))
    assert "✓ log_softmax" in capsys.readouterr().out
    with pytest.raises(CheckFailed):  # underflowing probabilities give -inf
        ch00.check_log_softmax(lambda x: torch.log(torch.softmax(x, dim=-1)))
    with pytest.raises(CheckFailed):  # wrong axis
        ch00.check_log_softmax(lambda x: torch.log_softmax(x, dim=0))


def test_check_entropy_passes_and_fails(capsys):
    ch00.check_entropy(ch00.entropy)
    assert "✓ entropy" in capsys.readouterr().out
    with pytest.raises(CheckFailed):  # 0 * log 0 = nan where probabilities underflow
        ch00.check_entropy(lambda x: -(torch.softmax(x, -1) * torch.softmax(x, -1).log()).sum(-1))
    with pytest.raises(CheckFailed):  # bits instead of nats
        ch00.check_entropy(lambda x: ch00.entropy(x) / torch.log(torch.tensor(2.0)))
    with pytest.raises(CheckFailed):  # forgot the minus sign
        ch00.check_entropy(lambda x: -ch00.entropy(x))

"""The vectorised soft-label loss against a slow reference written for readability (one position at a time)."""

from __future__ import annotations

import random
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from soft_label_reference import reference_target

from cogip.answer import render_answer
from cogip.traits import get_trait
from sft_warmstart.soft_label_loss import (
    SoftLabelConfig,
    _RowSoftCrossEntropy,
    digit_soft_targets,
    locate_number_digits,
    score_digit_index,
    soft_label_loss,
)

TRAITS = ("Aesthetics", "Funniness", "Emotional_Valence", "Memorability")


@pytest.fixture(scope="module")
def tokenizer():
    from cogip.models import build_tiny_tokenizer

    return build_tiny_tokenizer()


def _piece_of(tokenizer):
    cache: dict[int, str] = {}

    def piece(i: int) -> str:
        if i not in cache:
            cache[i] = tokenizer.decode([i])
        return cache[i]

    return piece


# ---------------------------------------------------------------------------------------------------------------
# The reference: everything per position, in plain Python where it can be.


def _reference_numbers(pieces: list[str]) -> list[list[tuple[int, int, int]]]:
    """Every number in the decoded pieces, each as [(piece index, digit, place), ...] (single-digit pieces only)."""
    text = "".join(pieces)
    owner = []  # owner[c] = the piece that character c belongs to
    for k, p in enumerate(pieces):
        owner.extend([k] * len(p))
    numbers = []
    for match in re.finditer(r"-?\d+(?:\.\d+)?", text):
        body = match.group(0).lstrip("-")
        int_digits = len(body.split(".")[0])
        digits, seen = [], 0
        for c in range(match.start(), match.end()):
            if text[c] in "-.":
                continue
            place = int_digits - 1 - seen
            seen += 1
            if pieces[owner[c]] == text[c]:
                digits.append((owner[c], int(text[c]), place))
        numbers.append(digits)
    return numbers


def reference_loss(logits, labels, piece_of, spans, sigmas, digit_ids, cfg: SoftLabelConfig):
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        trained = [t for t in range(labels.shape[1]) if labels[b, t] != -100]
        pieces = [piece_of(int(labels[b, t])) for t in trained]
        targets = {}  # piece index -> its digit's target
        sigma = sigmas[b] if sigmas[b] == sigmas[b] and sigmas[b] > 0 else cfg.sigma_fraction * spans[b]
        for number in _reference_numbers(pieces):
            for j, (k, _, _) in enumerate(number):
                targets[k] = reference_target([(d, p) for _, d, p in number], j, spans[b], sigma, cfg)
        for k, t in enumerate(trained):
            if t == 0:
                continue
            log_p = torch.log_softmax(logits[b, t - 1], dim=-1)
            if k in targets:
                term = -sum(targets[k][d] * log_p[digit_ids[d]] for d in range(10))
                total = total + (1.0 if cfg.kind == "ce" else cfg.lam) * term
            else:
                total = total - log_p[labels[b, t]]
            count += 1
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------------------------------
# Random batches: junk prompt (numbers included, not trained) + answer + end of turn, right padding.


def _answer(rng: random.Random) -> tuple[str, float, float]:
    trait = get_trait(rng.choice(TRAITS))
    kind = rng.random()
    if trait.name == "Emotional_Valence" and kind < 0.3:
        score = float(rng.randint(-3, 3))
        text = f"{trait.label_for(score)} {int(score)}"  # an integer score, written without decimals
    else:
        score = trait.round(rng.uniform(trait.low, trait.high))
        text = render_answer(trait, score)
    if kind > 0.8:
        text = f"<answer>{text}</answer>"
    sigma = rng.choice([float("nan"), 0.0, rng.uniform(0.01, 0.3) * trait.span])
    return text, trait.span, sigma


def random_batch(tokenizer, seed: int, batch: int = 4, vocab_pad: int = 0, dtype=torch.float64, answers: int = 1):
    rng = random.Random(seed)
    rows, spans, sigmas = [], [], []
    for _ in range(batch):
        row = []
        for _ in range(answers):  # answers > 1: multi-turn rows, several trained numbers per row
            text, span, sigma = _answer(rng)
            prompt = tokenizer(f"Rate item {rng.randint(0, 999)}: score 12.5?").input_ids
            answer = tokenizer(text).input_ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
            row += [-100] * len(prompt) + answer
        rows.append(row)
        spans.append(span)
        sigmas.append(sigma)
    seq = max(len(r) for r in rows) + 3
    labels = torch.full((batch, seq), -100, dtype=torch.long)
    for b, r in enumerate(rows):
        labels[b, : len(r)] = torch.tensor(r)
    gen = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(batch, seq, len(tokenizer) + vocab_pad, generator=gen, dtype=dtype)
    return logits, labels, torch.tensor(spans), torch.tensor(sigmas)


def _all_numbers_index(labels, piece):
    """(B, D) positions/places of every trained number's digits (the collator only needs the last one)."""
    width, found = 0, []
    for row in labels.tolist():
        trained = [t for t, y in enumerate(row) if y != -100]
        pieces = [piece(row[t]) for t in trained]
        digits = [(trained[k], p) for number in _reference_numbers(pieces) for k, _, p in number]
        found.append(digits)
        width = max(width, len(digits))
    positions = torch.full((len(found), width), -1, dtype=torch.long)
    places = torch.zeros((len(found), width), dtype=torch.long)
    for b, digits in enumerate(found):
        for j, (t, p) in enumerate(digits):
            positions[b, j], places[b, j] = t, p
    return positions, places


def _digit_ids(tokenizer) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]


@pytest.mark.parametrize("kind", ["triangular", "gaussian", "ce"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_loss_and_gradient_equal_reference(tokenizer, kind, seed):
    cfg = SoftLabelConfig(kind=kind, eta=0.3, lam=2.0, chunk_elements=7 * 300)  # several blocks of rows
    piece = _piece_of(tokenizer)
    logits, labels, spans, sigmas = random_batch(tokenizer, seed)
    positions, places = score_digit_index(labels, piece)
    assert (positions >= 0).sum(1).min() >= 1  # every row has a score

    fast_logits = logits.clone().requires_grad_(True)
    out = soft_label_loss(fast_logits, labels, positions, places, _digit_ids(tokenizer), cfg, spans, sigmas)
    out.loss.backward()

    ref_logits = logits.clone().requires_grad_(True)
    ref = reference_loss(ref_logits, labels, piece, spans.tolist(), sigmas.tolist(), _digit_ids(tokenizer), cfg)
    ref.backward()

    assert abs(out.loss.item() - ref.item()) < 1e-5
    assert torch.allclose(fast_logits.grad, ref_logits.grad, atol=1e-5)


@pytest.mark.parametrize("kind", ["triangular", "gaussian"])
def test_several_numbers_per_row_equal_reference(tokenizer, kind):
    cfg = SoftLabelConfig(kind=kind, eta=0.5, lam=1.5)
    piece = _piece_of(tokenizer)
    logits, labels, spans, sigmas = random_batch(tokenizer, 11, batch=3, answers=3)
    positions, places = _all_numbers_index(labels, piece)
    out = soft_label_loss(logits, labels, positions, places, _digit_ids(tokenizer), cfg, spans, sigmas)
    ref = reference_loss(logits, labels, piece, spans.tolist(), sigmas.tolist(), _digit_ids(tokenizer), cfg)
    assert out.num_digits >= 3 * 3 * 2
    assert abs(out.loss.item() - ref.item()) < 1e-5


@pytest.mark.parametrize("chunk_elements", [1 << 22, 5 * 264])
def test_ce_kind_is_plain_cross_entropy(tokenizer, chunk_elements):
    logits, labels, spans, sigmas = random_batch(tokenizer, 5, dtype=torch.float32)
    positions, places = score_digit_index(labels, _piece_of(tokenizer))
    fast = logits.clone().requires_grad_(True)
    cfg = SoftLabelConfig(kind="ce", chunk_elements=chunk_elements)
    out = soft_label_loss(fast, labels, positions, places, _digit_ids(tokenizer), cfg)
    out.loss.backward()
    plain_logits = logits.clone().requires_grad_(True)
    plain = torch.nn.functional.cross_entropy(plain_logits[:, :-1].reshape(-1, logits.shape[-1]),
                                              labels[:, 1:].reshape(-1))
    plain.backward()
    assert abs(out.loss.item() - plain.item()) < 1e-5
    assert torch.allclose(fast.grad, plain_logits.grad, atol=1e-6)


def test_bfloat16_logits_and_num_items_in_batch(tokenizer):
    logits, labels, spans, sigmas = random_batch(tokenizer, 3, dtype=torch.float32)
    positions, places = score_digit_index(labels, _piece_of(tokenizer))
    cfg = SoftLabelConfig()
    full = soft_label_loss(logits, labels, positions, places, _digit_ids(tokenizer), cfg, spans, sigmas)
    n = full.num_text + full.num_digits
    halved = soft_label_loss(logits, labels, positions, places, _digit_ids(tokenizer), cfg, spans, sigmas,
                             num_items_in_batch=2 * n)
    assert abs(halved.loss.item() - full.loss.item() / 2) < 1e-6
    low = logits.bfloat16().requires_grad_(True)
    out = soft_label_loss(low, labels, positions, places, _digit_ids(tokenizer), cfg, spans, sigmas)
    out.loss.backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()
    assert abs(out.loss.item() - full.loss.item()) < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("rows_per_block", [3, 64])
def test_row_kernel_backward_equals_autograd(dtype, rows_per_block):
    """The hand-written backward against autograd through a float64 log-softmax: unscored rows in between (labels
    -100), repeated target ids, and upstream gradients of both signs and zero."""
    gen = torch.Generator().manual_seed(7)
    logits = 3.0 * torch.randn(23, 50, generator=gen)
    rows = torch.tensor([0, 1, 2, 5, 6, 9, 10, 11, 12, 13, 20])
    ids = torch.randint(0, 50, (rows.numel(), 10), generator=gen)
    ids[:4] = ids[:4, :1]  # one-hot rows: the label repeated, as the loss passes them
    probs = torch.rand(rows.numel(), 10, generator=gen)
    probs /= probs.sum(1, keepdim=True)
    upstream = torch.randn(rows.numel(), generator=gen)
    upstream[[1, 4]] = 0.0

    x = logits.to(dtype).requires_grad_(True)
    loss, _ = _RowSoftCrossEntropy.apply(x, rows, ids, probs, rows_per_block, False)
    (loss * upstream).sum().backward()
    y = x.detach().double().requires_grad_(True)
    expected = -(probs.double() * torch.log_softmax(y[rows], -1).gather(1, ids)).sum(-1)
    (expected * upstream.double()).sum().backward()

    assert x.grad.dtype == dtype
    assert torch.allclose(loss.double(), expected, atol=1e-5)
    unscored = torch.ones(23, dtype=torch.bool)
    unscored[rows] = False
    assert (x.grad[unscored] == 0).all()
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    assert torch.allclose(x.grad.double(), y.grad, atol=tol)


def test_locate_digits_handles_sign_integers_and_tags():
    assert locate_number_digits(["negative", " ", "-", "2"]) == [(3, 0)]
    pieces = list("<answer>very high 10.000</answer>")
    found = locate_number_digits(pieces)
    assert [p for _, p in found] == [1, 0, -1, -2, -3]
    assert "".join(pieces[i] for i, _ in found) == "10000"
    assert locate_number_digits(["no", " number"]) == []
    # A digit merged with other characters into one token is left to plain cross-entropy.
    assert locate_number_digits(["high", " 7", ".", "5"]) == [(3, -1)]


@settings(max_examples=60, deadline=None)
@given(trait=st.sampled_from(TRAITS), u=st.floats(0, 1))
def test_digit_index_reads_back_the_score(tokenizer, trait, u):
    t = get_trait(trait)
    score = t.round(t.low + u * t.span)
    ids = tokenizer(render_answer(t, score)).input_ids
    positions, places = score_digit_index(torch.tensor([ids]), _piece_of(tokenizer))
    digits = [int(tokenizer.decode([ids[p]])) for p in positions[0].tolist()]
    value = sum(d * 10.0 ** p for d, p in zip(digits, places[0].tolist()))
    assert places[0].tolist()[-1] == -t.decimals
    assert abs(value - abs(score)) < 1e-9


def test_targets_are_distributions_that_prefer_near_digits():
    cfg = SoftLabelConfig(kind="triangular", eta=1.0, width=0.5)
    true = torch.tensor([8, 3])
    q = digit_soft_targets(true, torch.tensor([0, -1]), torch.zeros(2, dtype=torch.float64), torch.tensor([8.0, 0.3]),
                           torch.tensor([-1, -1]), torch.tensor([10.0, 1.0]), torch.tensor([1.0, 1.0]), cfg)
    assert torch.allclose(q.sum(-1), torch.ones(2, dtype=torch.float64))
    assert q[0, 8] > q[0, 7] > q[0, 6] > q[0, 2] - 1e-12 and q[0, 7] == q[0, 9]
    g = SoftLabelConfig(kind="gaussian", eta=1.0)
    narrow = digit_soft_targets(torch.tensor([7]), torch.tensor([0]), torch.zeros(1, dtype=torch.float64),
                                torch.tensor([7.2]), torch.tensor([-1]), torch.tensor([10.0]), torch.tensor([1e-4]), g)
    assert narrow[0, 7] > 0.999
    wide = digit_soft_targets(torch.tensor([7]), torch.tensor([0]), torch.zeros(1, dtype=torch.float64),
                              torch.tensor([7.9]), torch.tensor([-1]), torch.tensor([10.0]), torch.tensor([0.5]), g)
    assert wide[0, 8] > wide[0, 6]  # 7.9 sits closer to 8 than to 6


def test_config_rejects_unknown_kind():
    with pytest.raises(ValueError):
        SoftLabelConfig(kind="l2")

"""Soft-label losses on the digit tokens of the score in a ``"<label> <score>"`` answer.

A model that writes ``7.9`` for a true ``8.0`` is nearly right; one that writes ``2.0`` is not, yet plain
cross-entropy punishes both the same. Here every score digit gets a soft target over the ten digit tokens:

    target = (1 - eta) * one_hot(true digit) + eta * psi

- ``triangular`` (the paper's): ``psi(d)`` falls off linearly with the numeric distance ``|d - d*| * 10**place``
  that writing digit ``d`` instead of the true ``d*`` at that place would make, reaching 0 at ``width * span``
  (``span`` = the trait's score range), then normalised over the ten digits.
- ``gaussian``: ``psi(d)`` is the mass that a Gaussian over the score value (``sigma`` = the item's ``score_std``
  when known, else ``sigma_fraction * span``) puts on the values whose digits start with the true preceding digits
  followed by ``d`` (intervals shifted by half a unit of the last place, since answers are rounded).
- ``ce``: the one-hot target, i.e. plain cross-entropy on every token (the baseline; ``lam`` is ignored).

All other labelled tokens (label words, sign, point, end of turn) get ordinary cross-entropy. The loss is

    (sum over other tokens of CE + lam * sum over digit tokens of H(target, p)) / number of labelled tokens

(or ``/ num_items_in_batch``, as the HF ``Trainer`` passes under gradient accumulation), so ``ce`` is exactly the
usual token-mean cross-entropy.

Cost: one pass over the vocabulary per labelled position in the forward (the log-sum-exp that cross-entropy needs
anyway) and one in the backward (the softmax, written straight into the gradient), by :class:`_RowSoftCrossEntropy`
in blocks of rows, so the only full-vocabulary tensor is the gradient of the logits; the soft targets live on
``(K, 10)`` gathered digit logits, never as a ``(B, T, V)`` tensor.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

LOSS_KINDS = ("triangular", "gaussian", "ce")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class SoftLabelConfig:
    """What the loss does. Defaults are the paper's (eta = 0.15, lambda = 2.0)."""

    kind: str = "triangular"
    eta: float = 0.15  # weight of the soft part psi against the one-hot target
    lam: float = 2.0  # weight of a digit token against any other labelled token
    width: float = 0.2  # triangular: distance (as a fraction of the trait's span) where psi reaches 0
    sigma_fraction: float = 0.05  # gaussian: sigma as a fraction of the span when the item has no score_std
    chunk_elements: int = 1 << 22  # rows per block = chunk_elements // vocab (bounds the loss's own memory)

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"soft-label loss must be one of {LOSS_KINDS}, not {self.kind!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.lam < 0 or self.width <= 0 or self.sigma_fraction <= 0 or self.chunk_elements < 1:
            raise ValueError("lam must be >= 0; width, sigma_fraction and chunk_elements > 0")


# ---------------------------------------------------------------------------------------------------------------
# Where the score digits are (data side: runs in the collator, per sequence, on CPU).


def locate_number_digits(pieces: Sequence[str]) -> list[tuple[int, int]]:
    """``(piece index, place exponent)`` of each digit of the last number written by ``pieces`` (the decoded
    tokens of one answer, in order). Only pieces that are exactly one digit count (as Qwen tokenizes digits).

    >>> locate_number_digits(["high", " ", "-", "7", ".", "2", "1", "5", "<|im_end|>"])
    [(3, 0), (5, -1), (6, -2), (7, -3)]
    """
    text = "".join(pieces)
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return []
    m = matches[-1]
    starts, pos = [], 0
    for p in pieces:
        starts.append(pos)
        pos += len(p)
    number = m.group(0).lstrip("-")
    int_len = number.index(".") if "." in number else len(number)
    out, k = [], 0  # k counts digits of the number seen so far
    for char_index in range(m.start(), m.end()):
        ch = text[char_index]
        if not ch.isdigit():
            continue
        place = int_len - 1 - k  # 0 for units, -1 for tenths ...
        k += 1
        piece = bisect.bisect_right(starts, char_index) - 1
        if pieces[piece] == ch:
            out.append((piece, place))
    return out


def score_digit_index(labels: torch.Tensor, piece_of: Callable[[int], str]) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``labels`` (B, T; -100 = not trained), the label positions of the score's digit tokens and
    their place exponents, as ``(B, D)`` long tensors padded with -1 / 0. ``piece_of`` decodes one token id."""
    rows = []
    for row in labels.tolist():
        idx = [t for t, y in enumerate(row) if y != -100]
        found = locate_number_digits([piece_of(row[t]) for t in idx])
        rows.append([(idx[i], place) for i, place in found])
    width = max((len(r) for r in rows), default=0)
    positions = torch.full((len(rows), width), -1, dtype=torch.long)
    places = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        if r:
            positions[b, : len(r)] = torch.tensor([t for t, _ in r])
            places[b, : len(r)] = torch.tensor([p for _, p in r])
    return positions, places


# ---------------------------------------------------------------------------------------------------------------
# Targets over the ten digits (tensor side: vectorised over all K score digits in the batch).


def digit_soft_targets(true_digit: torch.Tensor, place: torch.Tensor, prefix: torch.Tensor, magnitude: torch.Tensor,
                       last_place: torch.Tensor, span: torch.Tensor, sigma: torch.Tensor,
                       config: SoftLabelConfig) -> torch.Tensor:
    """The (K, 10) target distribution for K score digits.

    ``prefix``: value of the true digits before this one (magnitude, sign dropped: a digit's distance does not
    depend on the sign); ``magnitude``: |score| as written; ``last_place``: exponent of the score's last digit.
    """
    digits = torch.arange(10, device=true_digit.device, dtype=torch.float64)  # (10,)
    one_hot = (digits[None, :] == true_digit[:, None]).to(torch.float64)  # (K, 10)
    if config.kind == "ce" or true_digit.numel() == 0:
        return one_hot
    unit = torch.pow(10.0, place.to(torch.float64))[:, None]  # (K, 1) value of one step at this place
    if config.kind == "triangular":
        distance = (digits[None, :] - true_digit[:, None].to(torch.float64)).abs() * unit  # (K, 10)
        psi = (1.0 - distance / (config.width * span.to(torch.float64))[:, None]).clamp(min=0.0)
    else:
        half = 0.5 * torch.pow(10.0, last_place.to(torch.float64))[:, None]  # rounding: written x means [x-h, x+h)
        low = prefix.to(torch.float64)[:, None] + digits[None, :] * unit - half  # (K, 10)
        s = sigma.to(torch.float64).clamp(min=1e-12)[:, None]
        m = magnitude.to(torch.float64)[:, None]
        psi = torch.special.ndtr((low + unit - m) / s) - torch.special.ndtr((low - m) / s)
    # The true digit always has mass (its interval holds the score; its distance is 0), so the sum is > 0.
    psi = psi / psi.sum(-1, keepdim=True).clamp(min=1e-300)
    return (1.0 - config.eta) * one_hot + config.eta * psi


# ---------------------------------------------------------------------------------------------------------------
# The loss kernel.


def _blocks(rows: torch.Tensor, max_rows: int | None = None):
    """Yield (slice into rows, first row, last row + 1) per block of consecutive rows (rows sorted ascending): the
    runs of consecutive rows, cut to at most ``max_rows`` rows. Every block is a view of the logits (no gathers)."""
    cuts = ((rows[1:] != rows[:-1] + 1).nonzero().squeeze(1) + 1).tolist()  # one host copy, not a sync per block
    starts, stops = [0, *cuts], [*cuts, rows.numel()]
    firsts = rows[torch.tensor(starts, device=rows.device)].tolist() if rows.numel() else []
    for start, stop, first in zip(starts, stops, firsts):
        step = max_rows or stop - start
        for a in range(start, stop, step):
            b = min(stop, a + step)
            yield slice(a, b), first + a - start, first + b - start


class _RowSoftCrossEntropy(torch.autograd.Function):
    """Per-row ``H(target, softmax(z)) = sum_c t_c * (logsumexp(z) - z[id_c])`` for targets on C token ids per row.

    Forward: one fused log-softmax per block of rows into a reused ``(rows_per_block, V)`` float32 buffer, kept only
    for the row's log-sum-exp (and argmax, if asked). Backward: ``dL/dz = g * (softmax(z) - t)``, recomputed as
    ``exp(z - (lse - log|g|))`` straight into the gradient (a subtract and an in-place exp per run of consecutive
    rows when the logits are float32; through the block buffer otherwise), then the sparse ``-g * t`` added at the C
    target ids. Beyond the logits and their gradient nothing full-vocabulary is allocated. Returns (loss per row,
    argmax per row or an empty tensor when ``want_top1`` is False).
    """

    @staticmethod
    def forward(ctx, logits2d, rows, target_ids, target_probs, rows_per_block: int, want_top1: bool):
        # logits2d (R, V); rows (N,) sorted, which logits rows are scored; target_ids / target_probs (N, C)
        n, vocab = rows.numel(), logits2d.shape[1]
        buf = torch.empty(min(n, rows_per_block), vocab, dtype=torch.float32, device=logits2d.device)
        lse = torch.empty(n, dtype=torch.float32, device=logits2d.device)
        top1 = torch.empty(n if want_top1 else 0, dtype=torch.long, device=logits2d.device)
        for sl, first, end in _blocks(rows, rows_per_block):
            x = logits2d[first:end]
            log_p = torch.log_softmax(x.float(), dim=-1, out=buf[: end - first])  # one fused row-wise kernel
            lse[sl] = x[:, 0].float() - log_p[:, 0]  # log-sum-exp (as torch's log_softmax sums it)
            if want_top1:
                top1[sl] = log_p.argmax(dim=-1)
        picked = logits2d[rows[:, None], target_ids].float()  # (N, C)
        loss = (target_probs * (lse[:, None] - picked)).sum(-1)
        ctx.save_for_backward(logits2d, rows, target_ids, target_probs, lse)
        ctx.rows_per_block = rows_per_block
        ctx.mark_non_differentiable(top1)
        return loss, top1

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_top1):
        logits2d, rows, target_ids, target_probs, lse = ctx.saved_tensors
        g = grad_loss.float()
        # |g| * softmax(z) = exp(z - shift): the scale rides in the exponent, no multiply pass over the gradient
        # (g = 0 gives shift = inf, exp = 0). Rows with g < 0 are negated at the end.
        shift = (lse - g.abs().log())[:, None]
        minus_target = target_probs * -g.abs()[:, None]  # (N, C)
        # (R, V): the one full-size tensor, the gradient itself. Scored rows are written in full below; only the
        # others (prompt, padding, last position) need zeros.
        grad = torch.empty_like(logits2d, memory_format=torch.contiguous_format)
        unscored = torch.ones(logits2d.shape[0], dtype=torch.bool, device=logits2d.device)
        unscored[rows] = False
        grad.index_fill_(0, unscored.nonzero().squeeze(1), 0)
        if logits2d.dtype == torch.float32:  # straight into the gradient, a whole run of rows at a time
            for sl, first, end in _blocks(rows):
                torch.sub(logits2d[first:end], shift[sl], out=grad[first:end]).exp_()
            grad.index_put_((rows[:, None], target_ids), minus_target, accumulate=True)
        else:  # in float32 per block (the target too: p - t cancels), then stored in the logits' dtype
            buf = torch.empty(min(rows.numel(), ctx.rows_per_block), logits2d.shape[1], dtype=torch.float32,
                              device=logits2d.device)
            for sl, first, end in _blocks(rows, ctx.rows_per_block):
                p = torch.sub(logits2d[first:end], shift[sl], out=buf[: end - first]).exp_()
                grad[first:end] = p.scatter_add_(1, target_ids[sl], minus_target[sl])
        flip = rows[g < 0]
        if flip.numel():
            grad[flip] = -grad[flip]
        return grad, None, None, None, None, None


@dataclass
class SoftLabelLoss:
    """The loss and its parts (sums, for logging averages over a logging window)."""

    loss: torch.Tensor
    text_loss_sum: torch.Tensor  # CE summed over non-digit labelled tokens
    digit_loss_sum: torch.Tensor  # soft CE summed over score digits (unweighted by lam)
    digit_ce_sum: torch.Tensor  # hard CE summed over score digits (comparable across loss kinds)
    num_text: int
    num_digits: int
    num_correct: torch.Tensor  # labelled tokens whose argmax is the label
    digits_correct: torch.Tensor


def soft_label_loss(logits: torch.Tensor, labels: torch.Tensor, digit_positions: torch.Tensor,
                    digit_places: torch.Tensor, digit_token_ids: torch.Tensor | Sequence[int],
                    config: SoftLabelConfig, span: torch.Tensor | None = None, sigma: torch.Tensor | None = None,
                    num_items_in_batch: int | torch.Tensor | None = None, want_accuracy: bool = True) -> SoftLabelLoss:
    """The soft-label loss of a batch.

    logits (B, T, V) as the model returns them (position t predicts labels[:, t + 1]); labels (B, T) with -100 on
    untrained positions; digit_positions / digit_places (B, D) from :func:`score_digit_index` (-1 = padding);
    digit_token_ids (10,) the ids of "0".."9"; span / sigma (B,) per item (sigma NaN = unknown).
    """
    bsz, seq, vocab = logits.shape
    device = logits.device
    digit_ids = torch.as_tensor(digit_token_ids, dtype=torch.long, device=device)  # (10,)
    labels = labels.to(device)
    span = torch.ones(bsz, device=device) if span is None else span.to(device)
    sigma = torch.full((bsz,), float("nan"), device=device) if sigma is None else sigma.to(device)

    # Labelled positions t >= 1, flattened as b * T + t; the logits row that predicts them is one before.
    trained = labels != -100
    trained[:, 0] = False
    flat_labels = labels.reshape(-1)  # (B*T,)
    label_idx = trained.reshape(-1).nonzero().squeeze(1)  # (N,)
    rows = label_idx - 1
    n = label_idx.numel()
    slot = torch.full((bsz * seq,), -1, dtype=torch.long, device=device)  # flat label position -> row in 0..N-1
    slot[label_idx] = torch.arange(n, device=device)

    # Default target: the label itself with probability 1 (C = 10 columns to share one shape with digit rows).
    target_ids = flat_labels[label_idx][:, None].repeat(1, 10)  # (N, 10)
    target_probs = torch.zeros(n, 10, dtype=torch.float64, device=device)
    target_probs[:, 0] = 1.0
    weights = torch.ones(n, dtype=torch.float32, device=device)

    # Score digits: (K,) gathered from the (B, D) index tensors.
    positions = digit_positions.to(device)
    places = digit_places.to(device)
    present = positions >= 0  # (B, D)
    safe_pos = positions.clamp(min=0)
    pos_labels = labels.gather(1, safe_pos)  # (B, D)
    is_digit = present & (pos_labels[..., None] == digit_ids).any(-1) & (safe_pos > 0)
    is_digit &= trained.gather(1, safe_pos)
    digit_value = (pos_labels[..., None] == digit_ids).to(torch.long).argmax(-1)  # (B, D)
    contrib = torch.where(is_digit, digit_value.to(torch.float64) * torch.pow(10.0, places.to(torch.float64)),
                          torch.zeros((), dtype=torch.float64, device=device))
    # A row may hold several numbers (multi-turn data): within one number the places fall by exactly 1 from digit
    # to digit, and a number never starts below the units place, so a digit opens a new number otherwise.
    prev_place = torch.cat([places.new_full((bsz, 1), 1 << 20), places[:, :-1]], 1)
    prev_digit = torch.cat([is_digit.new_zeros(bsz, 1), is_digit[:, :-1]], 1)
    starts = is_digit & ~(prev_digit & (places == prev_place - 1))
    key = (torch.arange(bsz, device=device)[:, None] * (places.shape[1] + 1) + starts.cumsum(1)).reshape(-1)
    n_keys = bsz * (places.shape[1] + 1)
    running = contrib.cumsum(1)  # (B, D) inclusive running sum along the row
    base = torch.zeros(n_keys, dtype=torch.float64, device=device)  # running sum before each number
    base[key[starts.reshape(-1)]] = (running - contrib)[starts]
    magnitude = torch.zeros(n_keys, dtype=torch.float64, device=device).index_add_(0, key, contrib.reshape(-1))
    magnitude = magnitude[key].view_as(contrib)  # (B, D) |number| as written, per digit
    prefix = running - contrib - base[key].view_as(contrib)  # value of the same number's digits before this one
    last = torch.full((n_keys,), 1 << 20, dtype=torch.long, device=device)
    last = last.scatter_reduce(0, key, torch.where(is_digit, places, 1 << 20).reshape(-1), reduce="amin")
    last_place = last[key].view_as(places)  # exponent of the number's last digit (for the rounding half-unit)
    item_sigma = torch.where(torch.isfinite(sigma) & (sigma > 0), sigma, config.sigma_fraction * span)

    b_idx = torch.arange(bsz, device=device)[:, None].expand_as(positions)
    k_slot = slot[(b_idx * seq + safe_pos)[is_digit]]  # (K,)
    targets = digit_soft_targets(
        digit_value[is_digit], places[is_digit], prefix[is_digit], magnitude[is_digit],
        last_place[is_digit], span[:, None].expand_as(places)[is_digit],
        item_sigma[:, None].expand_as(places)[is_digit], config,
    )  # (K, 10)
    target_ids[k_slot] = digit_ids
    target_probs[k_slot] = targets
    if config.kind != "ce":
        weights[k_slot] = config.lam
    digit_mask = torch.zeros(n, dtype=torch.bool, device=device)
    digit_mask[k_slot] = True

    rows_per_block = max(1, config.chunk_elements // vocab)
    logits2d = logits.reshape(bsz * seq, vocab)  # a view: logits are contiguous
    row_loss, top1 = _RowSoftCrossEntropy.apply(logits2d, rows, target_ids, target_probs.to(torch.float32),
                                                rows_per_block, want_accuracy)
    denom = n if num_items_in_batch is None else num_items_in_batch
    loss = (row_loss * weights).sum() / torch.as_tensor(denom, device=device).clamp(min=1)

    with torch.no_grad():
        correct = top1 == flat_labels[label_idx] if want_accuracy else torch.zeros(n, dtype=torch.bool, device=device)
        picked_true = logits2d[rows[digit_mask], flat_labels[label_idx][digit_mask]].float()
        lse_digit = row_loss.detach()[digit_mask] + (target_probs[digit_mask].float()
                                                     * logits2d[rows[digit_mask][:, None], target_ids[digit_mask]]
                                                     .float()).sum(-1)
        digit_ce = (lse_digit - picked_true).sum()
    return SoftLabelLoss(
        loss=loss,
        text_loss_sum=row_loss.detach()[~digit_mask].sum(),
        digit_loss_sum=row_loss.detach()[digit_mask].sum(),
        digit_ce_sum=digit_ce,
        num_text=int(n - int(digit_mask.sum())),
        num_digits=int(digit_mask.sum()),
        num_correct=correct.sum(),
        digits_correct=correct[digit_mask].sum(),
    )

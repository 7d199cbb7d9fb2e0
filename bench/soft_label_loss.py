"""Benchmark: the vectorised soft-label loss against a per-position reference, at B = 4, T = 256 and the real
Qwen2.5 vocabulary (151,936), with about 8 numeric answers per sequence (every token trained: the worst case).

    python bench/soft_label_loss.py                  # CPU (or the GPU when there is one), triangular loss
    python bench/soft_label_loss.py --kind gaussian --device cuda

Timings: forward, and forward + backward, of both, side by side in one run (median of --repeats; the reference once).
``speedup`` in the JSON is reference / vectorised for forward + backward (what a training step pays for the loss);
``speedup_forward`` is the forward alone. On a CPU both do the same full-vocabulary exp work per position, so the
forward ratio stays near 1; the gap opens in the backward (the reference's per-position autograd: a log-softmax
backward, a gather backward and a stack per position) and, on a GPU, in the forward too (thousands of small kernel
launches against a few large ones). The vectorised backward is one exp pass written straight into the gradient, so
on a CPU its floor is two exp passes over B * T * V plus the page faults of the fresh logits-sized gradient (which
every loss allocates), and ``speedup`` cannot go much past reference / that.
Memory: peak memory of the loss beyond the logits, for the forward and for forward + backward (which includes the
gradient of the logits, one logits-sized tensor that any loss produces), and torch's cross_entropy for comparison.
On CUDA from the allocator's peak; on CPU from the peak resident set (VmHWM, reset before the loss) of a fresh
child process per measurement. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from cogip.answer import render_answer
from cogip.models import build_tiny_tokenizer
from cogip.traits import get_trait
from sft_warmstart.soft_label_loss import SoftLabelConfig, locate_number_digits, soft_label_loss

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from soft_label_reference import reference_target  # noqa: E402  (the tests' readable reference)

TRAITS = ("Aesthetics", "Funniness", "Emotional_Valence", "Memorability")
FILLER = " Rated: "


# ---------------------------------------------------------------------------------------------------------------
# The batch: each row alternates filler text and answers "<label> <score>" (one trait per row), every token trained.


def make_batch(batch: int, seq: int, vocab: int, answers: int, seed: int, device: str):
    tok = build_tiny_tokenizer()  # byte-level: digits are single tokens, as in Qwen; ids fit any vocab
    gen = torch.Generator().manual_seed(seed)
    labels = torch.empty(batch, seq, dtype=torch.long)
    numbers = []  # per row: list of numbers, each [(position, place), ...]
    filler = tok(FILLER).input_ids
    for b in range(batch):
        trait = get_trait(TRAITS[b % len(TRAITS)])
        row, row_numbers = [], []
        slot = seq // answers  # tokens per answer, filler included
        while len(row) < seq:
            score = trait.low + trait.span * torch.rand((), generator=gen).item()
            ids = tok(render_answer(trait, score)).input_ids
            pieces = [tok.decode([i]) for i in ids]
            head = (filler * slot)[: max(len(filler), slot - len(ids))]
            if len(row) + len(head) + len(ids) > seq:
                row += (filler * (seq // len(filler) + 1))[: seq - len(row)]
                break
            row += head
            row_numbers.append([(len(row) + k, place) for k, place in locate_number_digits(pieces)])
            row += ids
        labels[b] = torch.tensor(row[:seq])
        numbers.append(row_numbers)
    logits = torch.empty(batch, seq, vocab, device=device)
    logits.normal_(0.0, 3.0, generator=torch.Generator(device=device).manual_seed(seed))
    width = max(sum(len(n) for n in row) for row in numbers)
    positions = torch.full((batch, width), -1, dtype=torch.long)
    places = torch.zeros((batch, width), dtype=torch.long)
    for b, row in enumerate(numbers):
        flat = [d for n in row for d in n]
        positions[b, : len(flat)] = torch.tensor([t for t, _ in flat])
        places[b, : len(flat)] = torch.tensor([p for _, p in flat])
    spans = torch.tensor([get_trait(TRAITS[b % len(TRAITS)]).span for b in range(batch)])
    sigmas = torch.full((batch,), float("nan"))
    sigmas[::2] = 0.08 * spans[::2]  # half the rows carry a score_std, half fall back to the configured fraction
    digit_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    return logits, labels.to(device), positions, places, spans, sigmas, numbers, digit_ids


# ---------------------------------------------------------------------------------------------------------------
# The reference, written for readability: one position at a time, full-vocabulary log-softmax each.


def reference_loss(logits, labels, numbers, spans, sigmas, digit_ids, cfg: SoftLabelConfig):
    labels_cpu = labels.cpu()
    total, count = 0.0, 0
    for b, row_logits in enumerate(logits):  # iterating unbinds: one stacked gradient, not one per position
        sigma = sigmas[b] if sigmas[b] == sigmas[b] else cfg.sigma_fraction * spans[b]
        targets = {}
        for number in numbers[b]:
            digits = [(digit_ids.index(int(labels_cpu[b, t])), place) for t, place in number]
            for j, (t, _) in enumerate(number):
                targets[t] = reference_target(digits, j, spans[b], sigma, cfg)
        position_logits = list(row_logits)
        for t in range(1, labels.shape[1]):
            if labels_cpu[b, t] == -100:
                continue
            log_p = torch.log_softmax(position_logits[t - 1].float(), dim=-1)
            if t in targets:
                soft = torch.tensor(targets[t], dtype=log_p.dtype, device=log_p.device)
                total = total - (1.0 if cfg.kind == "ce" else cfg.lam) * (soft * log_p[digit_ids]).sum()
            else:
                total = total - log_p[labels_cpu[b, t]]
            count += 1
    return total / count


# ---------------------------------------------------------------------------------------------------------------
# Measurements


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _cases(args, data):
    logits, labels, positions, places, spans, sigmas, _, digit_ids = data
    cfg = SoftLabelConfig(kind=args.kind)
    vocab = logits.shape[-1]

    def vectorised(backward: bool):
        x = logits.requires_grad_(backward)
        out = soft_label_loss(x, labels, positions, places, digit_ids, cfg, spans, sigmas, want_accuracy=False)
        if backward:
            out.loss.backward()
        return out.loss

    def cross_entropy(backward: bool):
        x = logits.requires_grad_(backward)
        loss = torch.nn.functional.cross_entropy(x[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1))
        if backward:
            loss.backward()
        return loss

    return {"vectorised": vectorised, "cross_entropy": cross_entropy}


def measure_memory_here(args, case: str, backward: bool) -> int:
    """Peak bytes the case allocates beyond the logits (run in a fresh process, see the module docstring)."""
    # Warm up on a tiny batch first: lazily loaded kernels and thread pools are not the loss's memory.
    _cases(args, make_batch(1, 32, 512, 1, args.seed, args.device))[case](backward)
    data = make_batch(args.batch, args.seq, args.vocab, args.answers, args.seed, args.device)
    fn = _cases(args, data)[case]
    logits = data[0]
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(backward)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    logits.add_(0.0)  # every page of the logits resident before the baseline is taken
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    base = _rss_bytes("VmRSS")
    fn(backward)
    return _rss_bytes("VmHWM") - base


def measure_memory(args, case: str, backward: bool) -> int:
    if args.device.startswith("cuda"):
        return measure_memory_here(args, case, backward)
    cmd = [sys.executable, __file__, *args.argv, "--child", f"{case}:{int(backward)}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ})
    return int(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--answers", type=int, default=8)
    p.add_argument("--kind", default="triangular", choices=["triangular", "gaussian", "ce"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what the memory-measuring children are given
    if args.child:
        case, backward = args.child.split(":")
        print(measure_memory_here(args, case, bool(int(backward))))
        return {}

    data = make_batch(args.batch, args.seq, args.vocab, args.answers, args.seed, args.device)
    logits, labels, _, _, spans, sigmas, numbers, digit_ids = data
    cfg = SoftLabelConfig(kind=args.kind)
    cases = _cases(args, data)
    n_digits = sum(len(n) for row in numbers for n in row)
    n_numbers = sum(len(row) for row in numbers)
    print(f"B={args.batch} T={args.seq} V={args.vocab} on {args.device}: {n_numbers} numbers, {n_digits} digit "
          f"tokens, loss {args.kind}, threads {torch.get_num_threads()}")

    def ref(backward: bool):
        x = logits.requires_grad_(backward)
        loss = reference_loss(x, labels, numbers, spans.tolist(), sigmas.tolist(), digit_ids, cfg)
        if backward:
            loss.backward()
        return loss

    with torch.no_grad():
        fast_value = cases["vectorised"](False).item()
        ref_value = ref(False).item()
    # Gradients agree too (the reference's backward, once).
    logits.grad = None
    cases["vectorised"](True)
    fast_grad = logits.grad.clone()
    logits.grad = None
    ref(True)
    max_grad_diff = (fast_grad - logits.grad).abs().max().item()
    del fast_grad
    logits.grad = None

    def timed(fn, backward, repeats):
        def run():
            logits.grad = None
            if backward:
                fn(True)
            else:
                with torch.no_grad():
                    fn(False)
        return _time(run, args.device, repeats)

    t = {
        "reference_forward_s": timed(ref, False, 1),
        "vectorised_forward_s": timed(cases["vectorised"], False, args.repeats),
        "cross_entropy_forward_s": timed(cases["cross_entropy"], False, args.repeats),
        "reference_forward_backward_s": timed(ref, True, 1),
        "vectorised_forward_backward_s": timed(cases["vectorised"], True, args.repeats),
        "cross_entropy_forward_backward_s": timed(cases["cross_entropy"], True, args.repeats),
    }
    logits.grad = None
    mb = 2**20
    memory = {
        "logits_mb": logits.numel() * logits.element_size() / mb,
        "vectorised_forward_extra_mb": measure_memory(args, "vectorised", False) / mb,
        "vectorised_forward_backward_extra_mb": measure_memory(args, "vectorised", True) / mb,
        "cross_entropy_forward_extra_mb": measure_memory(args, "cross_entropy", False) / mb,
        "cross_entropy_forward_backward_extra_mb": measure_memory(args, "cross_entropy", True) / mb,
    }
    for k, v in {**t, **memory}.items():
        print(f"  {k:<42} {v:10.3f}")
    result = {
        "bench": "soft_label_loss", "device": args.device, "kind": args.kind, "B": args.batch, "T": args.seq,
        "V": args.vocab, "numbers": n_numbers, "digit_tokens": n_digits,
        "speedup": t["reference_forward_backward_s"] / t["vectorised_forward_backward_s"],
        "speedup_forward": t["reference_forward_s"] / t["vectorised_forward_s"],
        "max_abs_diff": abs(fast_value - ref_value),
        "max_abs_grad_diff": max_grad_diff,
        "peak_extra_mb": memory["vectorised_forward_extra_mb"],
        "peak_extra_fraction_of_logits": memory["vectorised_forward_extra_mb"] / memory["logits_mb"],
        **{k: round(v, 4) for k, v in {**t, **memory}.items()},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

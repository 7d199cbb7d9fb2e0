import math
import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards import REWARD_FUNCS, build_reward_funcs
from rewards.distance import distance_gaussian, distance_linear, distance_upstream
from rewards.rank import rank_global

TRAITS = ["Aesthetics", "Funniness", "Emotional_Valence", "Memorability"]


def conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=40), st.sampled_from(TRAITS + ["nonsense", ""]), st.floats(-5, 12)),
                min_size=1, max_size=6), st.booleans())
def test_every_reward_is_finite_on_any_text(rows, conversational):
    texts, traits, scores = zip(*rows)
    completions = [conv(t) if conversational else t for t in texts]
    for fn in build_reward_funcs(list(REWARD_FUNCS)):
        out = fn(completions, trait=list(traits), score=list(scores), score_std=[None] * len(rows),
                 id=[str(i) for i in range(len(rows))])
        assert len(out) == len(rows) and all(isinstance(r, float) and math.isfinite(r) for r in out), fn.__name__


def test_distance_is_scaled_by_the_items_own_trait():
    # 10% of the range off, for every trait: the same reward (upstream scaled every trait as aesthetics)
    completions = ["high 7.000", "medium 6.000", "positive 1.400", "medium 0.600"]
    scores = [8.0, 5.0, 2.0, 0.5]
    assert distance_linear(completions, trait=TRAITS, score=scores) == pytest.approx([0.9] * 4)
    assert distance_upstream(completions, trait=TRAITS, score=scores) == pytest.approx([0.9] * 4)
    assert distance_upstream(["nothing"], trait=["Memorability"], score=[0.5]) == [-0.5]
    assert distance_upstream(["very high 9.000"], trait=["Memorability"], score=[0.1]) == [-1.0]  # clipped


def test_gaussian_uses_rater_spread_when_known():
    far = ["medium 6.000"]
    wide = distance_gaussian(far, trait=["Aesthetics"], score=[5.0], score_std=[2.0])[0]
    narrow = distance_gaussian(far, trait=["Aesthetics"], score=[5.0], score_std=[0.5])[0]
    default = distance_gaussian(far, trait=["Aesthetics"], score=[5.0], score_std=[None])[0]
    assert wide == pytest.approx(math.exp(-0.5 * 0.25)) and narrow == pytest.approx(math.exp(-2))
    assert default == pytest.approx(math.exp(-0.5))  # sigma = 0.1 * range = 1


def test_unparsable_penalty_and_logging():
    logged = {}
    fns = build_reward_funcs(["distance_linear", "format"], unparsable_penalty=-1.0)
    out = fns[0](["???", "low 4.000"], trait=["Aesthetics"] * 2, score=[4.0, 4.0],
                 log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out == [-1.0, 1.0]
    assert logged["rewards/distance_linear/parse_fail_rate"] == 0.5
    assert logged["rewards/distance_linear/Aesthetics"] == 0.0
    assert fns[1](["low 4.000"], trait=["Aesthetics"]) == [1.0]
    with pytest.raises(ValueError, match="taken by none"):
        build_reward_funcs(["format"], sigma_frac=0.2)
    with pytest.raises(KeyError, match="unknown reward"):
        build_reward_funcs(["distance_cosine"])


def test_rank_global_rewards_order_not_distance():
    traits, scores = ["Aesthetics"] * 3, [2.0, 5.0, 8.0]
    # predictions all far off in absolute terms but perfectly ordered
    assert rank_global(["very low 0.100", "very low 0.200", "very low 0.300"], trait=traits, score=scores) == [1.0] * 3
    assert rank_global(["high 7.000", "low 4.000", "very low 1.000"], trait=traits, score=scores) == [0.0] * 3
    smooth = rank_global(["very low 2.000", "medium 5.000", "very high 8.000"], trait=traits, score=scores,
                         mode="thurstone")
    assert all(0.99 < r <= 1.0 for r in smooth)
    # groups: the reference for an item is the mean of its completions; other traits are never compared
    out = rank_global(["low 4.000", "very high 9.000", "high 7.000", "negative -1.000"],
                      trait=["Aesthetics"] * 3 + ["Emotional_Valence"], score=[3.0, 3.0, 6.0, 1.0],
                      id=["a", "a", "b", "c"])
    assert out == [1.0, 0.0, 1.0, 0.5]
    # a stated score far outside the range counts as the range's end, not as a mean-mover for its item
    out = rank_global(["very high 8.000", *["very low 2.000"] * 3, "very low 999"], trait=["Aesthetics"] * 5,
                      score=[8.0] + [2.0] * 4, id=["a"] + ["b"] * 4)
    assert out == [1.0, 1.0, 1.0, 1.0, 0.0]


def test_rewards_stay_finite_on_a_huge_stated_number():
    huge = ["very high " + "9" * 200]
    for fn in build_reward_funcs(list(REWARD_FUNCS)):
        out = fn(huge, trait=["Memorability"], score=[0.5], score_std=[0.1], id=["x"])
        assert len(out) == 1 and math.isfinite(out[0]), fn.__name__


def _rank_worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    # each process holds one item; only together can they be ordered
    text, score = [("low 4.000", 4.0), ("high 7.000", 7.0)][rank]
    queue.put((rank, rank_global([text], trait=["Aesthetics"], score=[score], id=[f"item{rank}"])))
    dist.destroy_process_group()


def test_rank_global_gathers_across_processes():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert results == {0: [1.0], 1: [1.0]}


def _grpo_fixed_point(reward, truth: dict[float, float], group: int, steps: int = 3000, lr: float = 2.0):
    """The distribution over Aesthetics scores 1..9 that GRPO's exact expected update (group-mean baseline) settles
    on for one image whose human score is drawn from ``truth``, every group of ``group`` answers enumerated."""
    import itertools

    import numpy as np

    from cogip.answer import render_answer
    from cogip.traits import get_trait

    bins = list(range(1, 10))
    texts = [render_answer(get_trait("Aesthetics"), float(b)) for b in bins]
    outcomes = list(itertools.product(range(len(bins)), repeat=group))
    adv = np.zeros((len(outcomes), group))  # expected advantage of each answer in each group, over the human score
    for n, combo in enumerate(outcomes):
        for y, py in truth.items():
            r = np.array(reward([texts[k] for k in combo], trait=["Aesthetics"] * group, score=[y] * group,
                                id=["img"] * group))
            adv[n] += py * (r - r.mean())
    onehot = np.eye(len(bins))[np.array(outcomes)]  # (outcomes, group, bins)
    logits = np.zeros(len(bins))
    for _ in range(steps):
        p = np.exp(logits - logits.max())
        p /= p.sum()
        prob = np.prod(p[np.array(outcomes)], axis=1)  # probability of each group
        # E[sum_i A_i * grad log p(x_i)], grad log p(x) wrt the logits = onehot(x) - p
        logits += lr * np.einsum("n,ng,ngb->b", prob, adv, onehot - p)
    return dict(zip(bins, p))


def test_crps_reward_keeps_the_policy_calibrated_where_distance_collapses_it():
    # People give this image 3 (70 %) or 7 (30 %). Rewarded by distance, GRPO's policy answers the median, 3, every
    # time; rewarded by distance_crps it settles on the people's own distribution (the coefficient c matters: with
    # c = 1 at G = 3 it would keep only half of the spread term and end too narrow).
    from rewards.distance import distance_crps

    truth = {3.0: 0.7, 7.0: 0.3}
    collapsed = _grpo_fixed_point(distance_linear, truth, group=3)
    assert collapsed[3] > 0.95
    calibrated = _grpo_fixed_point(distance_crps, truth, group=3)
    assert calibrated[3] == pytest.approx(0.7, abs=0.05) and calibrated[7] == pytest.approx(0.3, abs=0.05)
    assert sum(calibrated[b] for b in (3, 7)) > 0.9


def test_crps_reward_groups_by_item_and_skips_unreadable_answers():
    from rewards.distance import distance_crps

    out = distance_crps(["low 3.000", "nothing", "high 7.000", "low 3.000", "low 3.000"], trait=["Aesthetics"] * 5,
                        score=[3.0, 3.0, 3.0, 7.0, 7.0], id=["a", "a", "a", "b", "b"], unparsable_penalty=-0.5)
    # item a: G = 3 (c = 2), readable answers 3 and 7; item b: G = 2 (c = 1), both answers 3
    assert out == pytest.approx([(2 * 4 - 0) / 10, -0.5, (2 * 4 - 4) / 10, -0.4, -0.4])
    # a score outside the range is no answer: penalised, and it widens nobody's spread (G = 3, c = 2)
    out = distance_crps(["low 3.000", "very high 99.000", "low 3.000"], trait=["Aesthetics"] * 3, score=[3.0] * 3,
                        id=["a"] * 3, unparsable_penalty=-0.5)
    assert out == [0.0, -0.5, 0.0]

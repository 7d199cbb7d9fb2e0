"""curves.png: is a rising reward real progress? Held-out SRCC per trait, training and held-out reward against
step, and reward against SRCC across checkpoints (a reward that climbs while SRCC stays flat is being hacked)."""

from __future__ import annotations

from pathlib import Path


def _series(cks: list[dict], get) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for ck in cks:
        y = get(ck)
        if ck.get("step") is not None and y is not None:
            xs.append(ck["step"])
            ys.append(y)
    return xs, ys


def plot_curves(results: dict, path: str | Path) -> Path | None:
    """Three panels (only the correlation panel for a run that logged no reward, like SFT); None when there are no
    checkpoints with a step to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cks = sorted((c for c in results["checkpoints"] if c.get("step") is not None), key=lambda c: c["step"])
    if not cks:
        return None
    traits = list(cks[0]["metrics"]["traits"])
    logged = (results.get("training_log") or {}).get("reward", [])
    has_reward = bool(logged) or any((ck.get("training") or {}).get("reward") is not None
                                     or ck.get("held_out_rewards") for ck in cks)
    if has_reward:
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.5))
    else:  # a run that logs no reward (SFT): the correlation panel alone, not two empty ones
        fig, ax1 = plt.subplots(1, 1, figsize=(6, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    for i, t in enumerate(traits):
        c = colors[i % len(colors)]
        xs, ys = _series(cks, lambda ck, t=t: ck["metrics"]["traits"].get(t, {}).get("srcc"))
        ax1.plot(xs, ys, "o-", color=c, label=f"{t} (held-out)")
        lo = [ck["metrics"]["traits"][t].get("srcc_ci", [None, None]) for ck in cks if ck["step"] in xs]
        if lo and all(v[0] is not None for v in lo):
            ax1.fill_between(xs, [v[0] for v in lo], [v[1] for v in lo], color=c, alpha=0.15)
        # The training run's own correlation log (GRPO callback), every entry: denser than the checkpoints.
        log = [e for e in (results.get("training_log") or {}).get("correlation", []) if f"{t}/srcc" in e]
        xs, ys = [e["step"] for e in log], [e[f"{t}/srcc"] for e in log]
        if ys:
            ax1.plot(xs, ys, "x--", color=c, label=f"{t} (training log)")
    ax1.set(xlabel="step", ylabel="SRCC with people", title="Correlation per trait")
    ax1.legend(fontsize=7)

    if has_reward:
        _reward_panels(ax2, ax3, cks, logged, colors)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _reward_panels(ax2, ax3, cks: list[dict], logged: list, colors: list) -> None:
    """Reward against step, and reward against mean SRCC across checkpoints."""
    if logged:  # every logged training step, faint: the noise the checkpoint means below average out
        ax2.plot([s for s, _ in logged], [r for _, r in logged], "-", color="0.7", lw=0.8,
                 label="training reward (logged)")
    xs, ys = _series(cks, lambda ck: (ck.get("training") or {}).get("reward"))
    if ys:
        ax2.plot(xs, ys, "x--", color="k", label="training reward (mean since previous checkpoint)")
    held = sorted({n for ck in cks for n in (ck.get("held_out_rewards") or {})})
    for i, n in enumerate(held):
        xs, ys = _series(cks, lambda ck, n=n: (ck.get("held_out_rewards") or {}).get(n, {}).get("mean"))
        ax2.plot(xs, ys, "o-", color=colors[i % len(colors)], label=f"held-out {n}")
    ax2.set(xlabel="step", ylabel="reward", title="Reward")
    if ys or held or logged:
        ax2.legend(fontsize=7)

    for label, get, marker in (
            ("held-out reward", lambda ck: next(iter((ck.get("held_out_rewards") or {}).values()), {}).get("mean"),
             "o"),
            ("training reward", lambda ck: (ck.get("training") or {}).get("reward"), "x")):
        pts = [(get(ck), ck["metrics"]["overall"]["mean_srcc"], ck["step"]) for ck in cks]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if pts:
            ax3.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
            for x, y, s in pts:
                ax3.annotate(str(s), (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax3.set(xlabel="reward", ylabel="mean held-out SRCC", title="Reward vs correlation (labels: step)")
    if ax3.collections:
        ax3.legend(fontsize=7)


def plot_training_curves(sft_history: list[dict], grpo_history: list[dict], correlation_log: list[dict],
                         path: str | Path, ceiling: dict[str, float] | None = None) -> Path | None:
    """What the two training stages logged, step by step: the SFT loss, the GRPO training reward, and the held-out
    SRCC per trait that the GRPO callback measured (``correlation_log.jsonl``), with each trait's reliability
    ceiling as a dotted line. None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = [(e["step"], e["loss"]) for e in sft_history if e.get("loss") is not None]
    reward = [(e["step"], e["reward"]) for e in grpo_history if e.get("reward") is not None]
    if not (loss or reward or correlation_log):
        return None
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    if loss:
        ax1.plot([s for s, _ in loss], [v for _, v in loss], "o-", ms=3)
    else:
        ax1.text(0.5, 0.5, "no loss logged\n(fewer steps than logging_steps)", ha="center", va="center",
                 transform=ax1.transAxes, color="0.4")
    ax1.set(xlabel="SFT step", ylabel="training loss", title="SFT warm-start: loss")

    if reward:
        ax2.plot([s for s, _ in reward], [r for _, r in reward], "-", color="0.6", lw=1, label="logged each step")
    means = [(e["step"], e["train_reward"]) for e in correlation_log if e.get("train_reward") is not None]
    if means:
        ax2.plot([s for s, _ in means], [r for _, r in means], "o-", color="k", label="mean since previous eval")
    ax2.set(xlabel="GRPO step", ylabel="reward", title="GRPO: training reward")
    if reward or means:
        ax2.legend(fontsize=7)

    traits = list(dict.fromkeys(k[: -len("/srcc")] for e in correlation_log for k in e if k.endswith("/srcc")))
    traits += [t for t in (ceiling or {}) if t not in traits]
    for i, t in enumerate(traits):
        c = colors[i % len(colors)]
        pts = [(e["step"], e[f"{t}/srcc"]) for e in correlation_log if e.get(f"{t}/srcc") is not None]
        if pts:
            ax3.plot([s for s, _ in pts], [v for _, v in pts], "o-", color=c, label=t)
        if ceiling and ceiling.get(t) is not None:
            ax3.axhline(ceiling[t], color=c, ls=":", lw=1)
    pts = [(e["step"], e["mean_srcc"]) for e in correlation_log if e.get("mean_srcc") is not None]
    if pts:
        ax3.plot([s for s, _ in pts], [v for _, v in pts], "s-", color="k", lw=2, label="mean")
    if not any(k.endswith("srcc") and e.get(k) is not None for e in correlation_log for k in e):
        ax3.text(0.5, 0.5, "SRCC undefined so far\n(constant answers)", ha="center", va="center",
                 transform=ax3.transAxes, color="0.4")
    ax3.set(xlabel="GRPO step", ylabel="SRCC with people (validation split)",
            title="GRPO: held-out SRCC (dotted: ceiling)")
    if ax3.get_legend_handles_labels()[0]:
        ax3.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)

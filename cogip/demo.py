"""``cogalign demo``: the whole pipeline on the built-in synthetic benchmark, on CPU, ending in one report.

Every stage is the project's own entry point with its config file, called exactly as its command line would call
it, in this order:

1. ``data``        the synthetic benchmark (train / validation / test from disjoint seeds) and its reliability ceiling
2. ``sft``         SFT warm-start: ``sft_warmstart/train_sft.py`` with ``configs/tiny/sft.yaml``
3. ``eval_base``, ``eval_sft``: ``eval/run.py`` on the test split for the base model and every SFT checkpoint (the
   blindness check on the final one), as command lines in a second process, one after the other, alongside the
   stages after them (GRPO's training, when it runs): each stage keeps to its own core (logs in ``stages/``)
4. ``grpo``        GRPO from the SFT output: ``rl/train_grpo.py`` with ``configs/tiny/grpo.yaml``
5. ``eval_grpo``   ``eval/run.py`` for every GRPO checkpoint, in-process like the rest
6. ``generation``  ``generation/generate.py`` with ``configs/tiny/generation.yaml``: the GRPO policy as Qwen-Image's
   text encoder, judging the images itself

then ``summary.json``, ``report.md`` and a self-contained ``report.html`` in the output folder (default
``runs/demo``). Running the demo again skips the stages whose outputs are complete and resumes an interrupted one
(training continues from its last complete checkpoint); a stage whose settings changed starts over, and so do the
stages built on it. ``--fresh`` starts everything over.

    cogalign demo
    cogalign demo --fresh
    cogalign demo --sft_config my_sft.yaml --grpo_max_steps 20
    cogalign demo --n_test 16 --set generation.images_per_prompt=1 --set grpo.num_generations=4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from cogip.demo_stages import (
    MARKER_DIR,
    Background,
    BackgroundStageError,
    OutputInUse,
    OutputLock,
    StageBook,
    empty_folder,
    fingerprint,
    stage_inputs,
    what_changed,
)
from cogip.files import write_json_atomic
from cogip.stored import code_version

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGE_ARGS = ("sft", "grpo", "eval", "generation")  # the stages --set reaches
# Fields the demo sets itself to chain the stages (the benchmark seed has its own flag, --seed).
CHAINED = {"sft": {"output_dir", "synthetic_seed"},
           "grpo": {"output_dir", "model_name_or_path", "synthetic_seed"},
           "eval": {"run_dir", "checkpoint", "compare", "data", "split", "output_dir"},
           "generation": {"output_dir", "aligned_model"}}


class DemoInputError(ValueError):
    """Bad input to the demo, found before anything is written."""


class StageError(RuntimeError):
    """A stage the demo ran itself failed (its traceback is kept beside the stage markers)."""


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    folder: str  # relative to the demo folder; emptied when the stage starts over
    upstream: tuple[str, ...] = ()
    code: tuple[str, ...] = ("cogip",)  # packages whose code makes its outputs (a change re-runs the stage)
    resumable: bool = False  # training stages continue from their last complete checkpoint
    # runs as its own command line in a child process, alongside the stages after it (none may build on it)
    background: bool = False


_TRAIN = ("cogip", "sft_warmstart", "rl", "rewards", "eval")
STAGES = (
    Stage("data", "Synthetic benchmark", "data"),
    Stage("sft", "SFT warm-start", "sft", code=_TRAIN, resumable=True),
    # The evaluations of the SFT stage's models run on the second core alongside what follows (GRPO's training).
    Stage("eval_base", "Evaluate the base model on the test split", "eval/base", ("data", "sft"), ("cogip", "eval"),
          background=True),
    Stage("eval_sft", "Evaluate every SFT checkpoint on the test split", "eval/sft", ("data", "sft"),
          ("cogip", "eval"), background=True),
    Stage("grpo", "GRPO from the SFT output", "grpo", ("sft",), code=_TRAIN, resumable=True),
    Stage("eval_grpo", "Evaluate every GRPO checkpoint on the test split", "eval/grpo", ("data", "grpo"),
          ("cogip", "eval")),
    Stage("generation", "Generation: the GRPO policy as Qwen-Image's text encoder", "generation", ("sft", "grpo"),
          ("cogip", "eval", "generation")),
)
REPORTS = ["report.md", "report.html", "summary.json", "training_curves.png"]
OUTPUTS = [s.folder.split("/")[0] for s in STAGES] + ["stages", *REPORTS]


def downstream(name: str) -> list[Stage]:
    """The stages built (directly or not) on ``name``."""
    found: list[Stage] = []
    frontier = {name}
    for s in STAGES:
        if frontier & set(s.upstream):
            found.append(s)
            frontier.add(s.name)
    return found


# ---------------------------------------------------------------------------------------------------------------
# Command line and plan: everything is parsed and checked before anything is written.


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cogalign demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="runs/demo", help="demo folder (default runs/demo)")
    p.add_argument("--sft_config", default=None, help="SFT config (default configs/tiny/sft.yaml)")
    p.add_argument("--grpo_config", default=None, help="GRPO config (default configs/tiny/grpo.yaml)")
    p.add_argument("--generation_config", default=None,
                   help="generation config (default configs/tiny/generation.yaml)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the synthetic benchmark, passed to both training stages as synthetic_seed "
                        "(default: the SFT config's)")
    p.add_argument("--n_test", type=int, default=1200, help="test items, cycling through the four traits")
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples for every interval (at least 100)")
    p.add_argument("--sft_max_steps", type=int, default=None, help="override the SFT config's max_steps")
    p.add_argument("--grpo_max_steps", type=int, default=None, help="override the GRPO config's max_steps")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                   help=f"override any field of a stage ({', '.join(STAGE_ARGS)}), e.g. grpo.num_generations=4 or "
                        "'generation.alphas=0 1'; repeatable")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1 for the stages, where the tiny models are fastest on one, and "
                        "the cores it may use, up to 4, for the vision pretraining; give 1 on a busy machine). The "
                        "evaluations that run beside GRPO take as many again")
    p.add_argument("--fresh", action="store_true", help="delete the previous demo outputs and start over")
    return p


@dataclass
class Plan:
    out: Path
    configs: dict[str, Path]
    seed: int
    sizes: dict[str, int]
    prompt_style: str
    n_boot: int
    argv: dict[str, list[str]]  # sft, grpo, eval, generation (without the judge's image size)
    base_model: str
    stage_data_args: list = field(default_factory=list)  # the SFT and GRPO data arguments, to check disjointness
    settings: dict = field(default_factory=dict)


def _config_path(given: str | None, default: str, what: str) -> Path:
    path = Path(given) if given else REPO_ROOT / default
    if not path.is_file():
        raise DemoInputError(f"{what} config not found: {path}")
    return path.resolve()


def _overrides(sets: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {s: [] for s in STAGE_ARGS}
    for item in sets:
        key, eq, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not eq or not dot or not name or stage not in out:
            raise DemoInputError(f"--set {item!r}: expected STAGE.FIELD=VALUE with STAGE one of {', '.join(out)}")
        if name in CHAINED[stage]:
            raise DemoInputError(f"--set {item!r}: the demo sets {stage}.{name} itself to chain the stages")
        out[stage] += [f"--{name}", *value.split()]
    return out


def _parse_stage(stage: str, argv: list[str]):
    """Parse a stage's arguments with the parser of its own command line (YAML via ``--config`` included)."""
    from cogip.cli import parse_strictly

    if stage == "sft":
        from sft_warmstart.train_sft import make_parser as parser
    elif stage == "grpo":
        from rl.train_grpo import make_parser as parser
    elif stage == "generation":
        from generation.generate import make_parser as parser
    else:
        from eval.run import make_parser as parser
    return parse_strictly(parser(), argv)


def _checked_parse(stage: str, argv: list[str]):
    """:func:`_parse_stage`, with a missing file, a bad field or a bad value turned into a DemoInputError."""
    import yaml

    try:
        return _parse_stage(stage, argv)
    except (ValueError, OSError, TypeError, yaml.YAMLError) as e:
        raise DemoInputError(f"{stage} settings: {e}") from e


def base_model_of(sft_model: str, sft_dir: Path) -> str:
    """The model the SFT stage starts from (``tiny`` is built into ``<sft output>/tiny-base``)."""
    from sft_warmstart.artifacts import TINY_BASE_DIR
    from sft_warmstart.config import TINY_MODEL

    return str((sft_dir / TINY_BASE_DIR).resolve()) if sft_model == TINY_MODEL else sft_model


def plan_demo(args: argparse.Namespace) -> Plan:
    out = Path(args.output_dir).resolve()
    if out.exists() and not out.is_dir():
        raise DemoInputError(f"--output_dir {out} is a file")
    ours = [n for n in OUTPUTS if (out / n).exists()]  # what the demo empties when it starts a stage over
    if ours and not any((out / n).exists() for n in (OutputLock.FILE, MARKER_DIR)):
        raise DemoInputError(f"--output_dir {out} holds {', '.join(ours)}, which no demo wrote and the demo would "
                             "empty: give a new or empty folder")
    if args.n_test < 12:
        raise DemoInputError("--n_test must be at least 12 (three test items per trait)")
    if args.n_boot < 100:
        raise DemoInputError("--n_boot must be at least 100")
    if args.threads is not None and args.threads < 1:
        raise DemoInputError("--threads must be at least 1")
    configs = {"sft": _config_path(args.sft_config, "configs/tiny/sft.yaml", "SFT"),
               "grpo": _config_path(args.grpo_config, "configs/tiny/grpo.yaml", "GRPO"),
               "generation": _config_path(args.generation_config, "configs/tiny/generation.yaml", "generation")}
    sets = _overrides(args.sets)
    sft_dir, grpo_dir = out / "sft", out / "grpo"

    def training_argv(stage: str, seed: int | None, extra: list[str], max_steps: int | None) -> list[str]:
        argv = ["--config", str(configs[stage]), *extra]
        argv += ["--synthetic_seed", str(seed)] if seed is not None else []
        argv += ["--max_steps", str(max_steps)] if max_steps is not None else []
        return argv + sets[stage]

    # The benchmark seed: given, else the SFT config's; both training stages draw their data from it.
    sft_extra = ["--output_dir", str(sft_dir)]
    sft_extra += ["--tiny_vision_pretrain_threads", str(args.threads)] if args.threads else []
    sft_script, _, sft_model = _checked_parse("sft", training_argv("sft", args.seed, sft_extra, args.sft_max_steps))
    seed = args.seed if args.seed is not None else sft_script.synthetic_seed
    argv = {"sft": training_argv("sft", seed, sft_extra, args.sft_max_steps),
            "grpo": training_argv("grpo", seed, ["--output_dir", str(grpo_dir), "--model_name_or_path",
                                                 str(sft_dir)], args.grpo_max_steps)}
    sft_script, sft_train, sft_model = _checked_parse("sft", argv["sft"])
    grpo_script, grpo_train, _ = _checked_parse("grpo", argv["grpo"])
    for name, script in (("SFT", sft_script), ("GRPO", grpo_script)):
        if script.dataset != "synthetic":
            raise DemoInputError(f"the demo runs on the synthetic benchmark, but the {name} config uses dataset "
                                 f"{script.dataset!r}")
    sft_items, grpo_items = (range(x.synthetic_train_start, x.synthetic_train_start + x.synthetic_train_size)
                             for x in (sft_script, grpo_script))
    if sft_items.start < grpo_items.stop and grpo_items.start < sft_items.stop:
        raise DemoInputError(
            f"GRPO's training items ({grpo_items.start}-{grpo_items.stop - 1} of the stream) overlap SFT's "
            f"({sft_items.start}-{sft_items.stop - 1}): GRPO has nothing to learn on items SFT fitted (BENCHMARKS.md, "
            f"\"GRPO against its SFT start\"); set grpo.synthetic_train_start to {sft_items.stop} or more")
    if sft_script.prompt_style != grpo_script.prompt_style:
        raise DemoInputError(f"the SFT and GRPO configs ask for different prompt styles ({sft_script.prompt_style!r} "
                             f"and {grpo_script.prompt_style!r}); the test split can only use one")
    base_model = base_model_of(sft_model.model_name_or_path, sft_dir)

    # the vision cache: each test image passes the frozen tower once, not once per decoding pass (1.3x as fast)
    argv["eval"] = ["--data", str(out / "data"), "--split", "test", "--n_boot", str(args.n_boot),
                    "--seed", str(seed), "--blindness_models", "final", "--blindness_items", "400", "--decoding",
                    "expected", "--vision_cache_gb", "1", *sets["eval"]]
    _checked_parse("eval", ["--checkpoint", base_model, *argv["eval"]])
    argv["generation"] = ["--config", str(configs["generation"]), "--output_dir", str(out / "generation"),
                          "--aligned_model", str(grpo_dir), "--judge_model", str(grpo_dir),
                          "--base_encoder", base_model, *sets["generation"]]
    _checked_parse("generation", argv["generation"])

    # the data folder's train split is the SFT stage's labelled items (eval's train-mean reference), not GRPO's too
    sizes = {"n_train": sft_script.synthetic_train_size, "train_start": sft_script.synthetic_train_start,
             "n_validation": max(sft_script.synthetic_eval_size if sft_train.eval_strategy != "no" else 0,
                                 grpo_script.synthetic_eval_size),
             "n_test": args.n_test}
    settings = {"output_dir": str(out), "configs": {k: str(v) for k, v in configs.items()}, "seed": seed,
                "n_test": args.n_test, "n_boot": args.n_boot, "sft_max_steps": args.sft_max_steps,
                "grpo_max_steps": args.grpo_max_steps, "sets": list(args.sets), "threads": args.threads,
                "argv": argv}
    return Plan(out=out, configs=configs, seed=seed, sizes=sizes, prompt_style=grpo_script.prompt_style,
                n_boot=args.n_boot, argv=argv, base_model=base_model, stage_data_args=[sft_script, grpo_script],
                settings=settings)


# ---------------------------------------------------------------------------------------------------------------
# The stages. Each takes the plan and its argument list and writes into its own folder.


def items_shared_with_training(test, data_args: list) -> int:
    """How many test items also occur, by id or by identical pixels, in the training or validation items that the
    stages configured by ``data_args`` draw (through the same loader they use)."""
    import hashlib

    import numpy as np

    from cogip.data_sources import load_canonical_splits

    def keys(ds) -> tuple[set[str], set[str]]:
        return (set(map(str, ds["id"])),
                {hashlib.sha1(np.asarray(im.convert("RGB")).tobytes()).hexdigest() for im in ds["image"]})

    seen_ids, seen_pixels = set(), set()
    for args in data_args:
        for split in load_canonical_splits(args, with_eval=True):
            if split is not None:
                ids, pixels = keys(split)
                seen_ids |= ids
                seen_pixels |= pixels
    test_ids = list(map(str, test["id"]))
    test_pixels = [hashlib.sha1(np.asarray(im.convert("RGB")).tobytes()).hexdigest() for im in test["image"]]
    return sum(i in seen_ids or h in seen_pixels for i, h in zip(test_ids, test_pixels))


def _data_stage(plan: Plan, console) -> None:
    from rich.table import Table

    from cogip.synthetic import make_benchmark, reliability

    with console.status("drawing the synthetic benchmark"):
        splits = make_benchmark(**plan.sizes, seed=plan.seed, prompt_style=plan.prompt_style)
    with console.status("checking the test split against the items the training stages draw"):
        shared = items_shared_with_training(splits["test"], plan.stage_data_args)
    if shared:
        raise RuntimeError(f"{shared} test items also occur in the SFT/GRPO training or validation data")
    splits.save_to_disk(str(plan.out / "data"))
    ceiling = reliability(splits["test"])
    write_json_atomic(plan.out / "data" / "benchmark.json", {
        "seed": plan.seed, "sizes": {k: len(v) for k, v in splits.items()}, "prompt_style": plan.prompt_style,
        "image_size": list(splits["test"][0]["image"].size), "reliability": ceiling, "overlap": shared})
    console.print(f"synthetic benchmark: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} "
                  f"(seed {plan.seed}; test items shared with training data: {shared})")
    table = Table(title="Simulated raters' reliability on the test split")
    for col in ("trait", "items", "split-half SRCC", "Spearman-Brown", "ceiling SRCC"):
        table.add_column(col, justify="left" if col == "trait" else "right")
    for trait, r in ceiling.items():
        table.add_row(trait, str(r["n"]), f"{r['split_half_srcc']:.3f}", f"{r['spearman_brown']:.3f}",
                      f"{r['ceiling_srcc']:.3f}")
    console.print(table)


def _training_stage(stage: str, argv: list[str]) -> None:
    if stage == "sft":
        from sft_warmstart.train_sft import main
    else:
        from rl.train_grpo import main
    main(*_parse_stage(stage, argv))


def _eval_argv(stage: str, plan: Plan) -> list[str]:
    target = {"eval_base": ["--checkpoint", plan.base_model], "eval_sft": ["--run_dir", str(plan.out / "sft")],
              "eval_grpo": ["--run_dir", str(plan.out / "grpo")]}[stage]
    return target + ["--output_dir", str(plan.out / "eval" / stage.removeprefix("eval_"))] + plan.argv["eval"]


def _eval_stage(stage: str, plan: Plan) -> None:
    from eval.run import main, parse_args

    main(parse_args(_eval_argv(stage, plan)))


def background_command(stage: Stage, plan: Plan) -> list[str]:
    """The command line of a stage the demo runs in a child process (the evaluations)."""
    return [sys.executable, str(REPO_ROOT / "eval" / "run.py"), *_eval_argv(stage.name, plan)]


def _child_env(plan: Plan) -> dict[str, str]:
    """The children's environment: this checkout's code first (``python eval/run.py`` would put ``eval/`` there and
    take the rest from wherever the package is installed), the demo's threads per stage (the torch default would take
    every core), UTF-8 output to the log whatever the locale, and progress bars that update the log every 10 s rather
    than on every batch (unless ``TQDM_MININTERVAL`` says otherwise)."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(plan.settings.get("threads") or 1),
            "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8",
            "TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL", "10")}


def _generation_argv(plan: Plan) -> list[str]:
    """The generation stage's arguments, with the judge's image size read from the GRPO policy's processor (the
    size the tiny model's processor pins) rather than assumed."""
    from cogip.models import load_processor
    from generation.judging import judge_side

    side = judge_side(load_processor(plan.out / "grpo"))
    argv = list(plan.argv["generation"])
    if side:  # after the config, before any --set override (the last value of a flag wins)
        argv[2:2] = ["--judge_image_size", str(side)]
    return argv


def _generation_stage(argv: list[str]) -> None:
    from generation.generate import main

    (args,) = _parse_stage("generation", argv)
    main(args)


def stage_argv(stage: Stage, plan: Plan) -> list[str]:
    """What a stage's outputs depend on besides its config files and upstream stages."""
    if stage.name == "data":
        return [f"--{k}={v}" for k, v in sorted(plan.sizes.items())] + [f"--seed={plan.seed}",
                                                                         f"--prompt_style={plan.prompt_style}"]
    if stage.name in ("sft", "grpo"):
        return plan.argv[stage.name]
    if stage.name.startswith("eval_"):
        return [stage.name, plan.base_model, *plan.argv["eval"]]
    return _generation_argv(plan)


def _without_speed_flags(argv: list[str]) -> list[str]:
    """``argv`` less the flags that set how fast a stage runs (thread counts: they change the float rounding, as
    another CPU does, not the recipe): rerunning a stopped demo with ``--threads 1`` resumes it instead of starting
    over."""
    out = list(argv)
    while "--tiny_vision_pretrain_threads" in out:
        i = out.index("--tiny_vision_pretrain_threads")
        del out[i:i + 2]
    return out


def run_stage(stage: Stage, plan: Plan, argv: list[str], console) -> None:
    if stage.name == "data":
        _data_stage(plan, console)
    elif stage.name in ("sft", "grpo"):
        _training_stage(stage.name, argv)
    elif stage.name.startswith("eval_"):
        _eval_stage(stage.name, plan)
    else:
        _generation_stage(argv)


# ---------------------------------------------------------------------------------------------------------------
# Running it all


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


def versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("cogalign", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "diffusers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def stage_fingerprint(stage: Stage, argv: list[str], upstream: dict[str, str]) -> tuple[str, dict]:
    """What a stage's outputs depend on: its arguments (speed flags aside), the text of every YAML they name with
    ``--config`` (its own, or one given by ``--set``) and of the text files they name, its code, and the
    fingerprints of the stages it builds on; the fingerprint and those inputs."""
    configs = [argv[i + 1] for i in range(len(argv) - 1) if argv[i] == "--config"]
    inputs = stage_inputs(_without_speed_flags(argv), [*configs, *_files_named(argv, configs)],
                          {u: upstream[u] for u in stage.upstream}, code_version(stage.code))
    return fingerprint(inputs), inputs


def _files_named(argv: list[str], configs: list[str]) -> list[str]:
    """The text files (prompt sets, traits) a stage's flags or config files name besides the configs: their
    content counts in the fingerprint as the configs' does."""
    import yaml

    values = [a.partition("=")[2] if a.startswith("--") else a for a in argv]
    for config in configs:
        doc = yaml.safe_load(Path(config).read_text()) or {}
        for v in doc.values():
            values += [x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str)]
    return sorted({v for v in values if v and v not in configs and Path(v).suffix in (".json", ".yaml", ".yml", ".txt")
                   and Path(v).is_file()})


def _run_stages(plan: Plan, console, book: StageBook, background: Background, start: float) -> dict[str, dict]:
    """Run, resume or skip each stage in turn (the background ones in a child process, waited for at the end);
    what each did, in the order of :data:`STAGES`."""
    from rich.markup import escape  # flag values in the reasons may hold brackets

    fingerprints: dict[str, str] = {}
    record: dict[str, dict] = {}
    total = len(STAGES) + 1
    for i, stage in enumerate(STAGES, 1):
        background.check()  # a background stage that failed stops the demo here, not after the rest
        console.rule(f"[bold cyan]{i}/{total} {stage.title}[/] [dim]({_clock(time.time() - start)})[/]")
        argv = stage_argv(stage, plan)
        fp, inputs = stage_fingerprint(stage, argv, fingerprints)
        fingerprints[stage.name] = fp
        folder = plan.out / stage.folder
        decision = book.decide(stage.name, fp, folder, stage.resumable)
        if decision == "skip":
            seconds = (book.read(stage.name) or {}).get("seconds")
            console.print(f"[green]skipped[/]: the outputs in {stage.folder}/ are complete (it took "
                          f"{seconds or 0:.0f} s)")
            record[stage.name] = {"status": "skipped", "seconds": seconds}
            continue
        if decision == "restart":
            why = escape("; ".join(what_changed((book.read(stage.name) or {}).get("inputs"), inputs)))
            console.print(f"[yellow]{why or 'settings or code changed, or outputs unaccounted for'}: starting "
                          f"{stage.folder}/ over[/]", soft_wrap=True, highlight=False)
            empty_folder(folder)
        elif decision == "resume":
            console.print(f"[yellow]resuming the unfinished run in {stage.folder}/[/]")
        redone = [later.name for later in downstream(stage.name) if book.read(later.name)]
        if redone:
            console.print(f"[yellow]so will the stages built on it: {', '.join(redone)}[/]")
        for later in downstream(stage.name):
            book.forget(later.name)
            empty_folder(plan.out / later.folder)
        if stage.background:
            log = book.marker(stage.name).with_suffix(".log")
            background.submit(stage.name, fp, background_command(stage, plan), log, inputs)
            console.print(f"started in a second process, alongside the stages after it (log: {log})", soft_wrap=True)
            continue
        book.start(stage.name, fp, inputs)
        t0 = time.time()
        try:
            run_stage(stage, plan, argv, console)
        except KeyboardInterrupt:
            console.print(f"[red]stage {stage.name} did not finish[/]")
            raise
        except Exception as e:
            trace = book.marker(stage.name).with_suffix(".traceback.txt")
            trace.write_text(traceback.format_exc())
            raise StageError(f"stage {stage.name} failed: {type(e).__name__}: {e} (traceback: {trace})") from e
        seconds = time.time() - t0
        book.finish(stage.name, fp, seconds)
        record[stage.name] = {"status": "resumed" if decision == "resume" else "ran", "seconds": seconds}
        console.print(f"[green]done[/] in {seconds:.1f} s")
    with console.status("waiting for the stages running in the background"):
        done = background.wait()
        for name, r in done.items():
            console.print(f"[green]{name} done[/] in {r['seconds']:.1f} s (in the background)")
            record[name] = r
    return {s.name: record[s.name] for s in STAGES}


def run_demo(plan: Plan, console, fresh: bool = False) -> dict:
    """Run (or skip, or resume) every stage, then write summary.json and the reports. Returns the summary."""
    start = time.time()
    plan.out.mkdir(parents=True, exist_ok=True)
    with OutputLock(plan.out) as lock:  # raises OutputInUse while another demo (or a child of one) works there
        for name in OUTPUTS if fresh else REPORTS:  # no report of an earlier run beside the outputs of this one
            empty_folder(plan.out / name)
        book = StageBook(plan.out)
        background = Background(book, env=_child_env(plan), keep_fds=lock.fds)
        try:
            record = _run_stages(plan, console, book, background, start)
        finally:
            background.stop()  # a child still running when the demo stops early
        return _finish(plan, console, record, start)


def _finish(plan: Plan, console, record: dict[str, dict], start: float) -> dict:
    """Summary and reports of the stages' outputs; the summary."""
    from cogip.demo_report import write_reports
    from cogip.demo_summary import build_summary

    total = len(STAGES) + 1
    console.rule(f"[bold cyan]{total}/{total} Summary and report[/] [dim]({_clock(time.time() - start)})[/]")
    summary = build_summary(plan.out, n_boot=plan.n_boot, seed=plan.seed, stages=record,
                            minutes=(time.time() - start) / 60, versions=versions(), settings=plan.settings)
    write_json_atomic(plan.out / "summary.json", summary)
    md, page = write_reports(plan.out, summary)
    summary["minutes"] = (time.time() - start) / 60
    write_json_atomic(plan.out / "summary.json", summary)
    _print_result(console, summary, page, md)
    if any(r["status"] == "skipped" for r in record.values()):
        console.print("Stages with complete outputs were skipped; `cogalign demo --fresh` runs everything again.")
    return summary


def _print_result(console, s: dict, page: Path, md: Path) -> None:
    from rich.table import Table

    def f(x):
        return "–" if x is None else f"{x:.3f}"

    table = Table(title="Test-split SRCC (final models)")
    for col in ("trait", "ceiling", "base", "SFT", "GRPO"):
        table.add_column(col, justify="left" if col == "trait" else "right")
    for t in s["ceiling_srcc"]:
        table.add_row(t, f(s["ceiling_srcc"][t]), f(s["srcc_base"][t]), f(s["srcc_sft"][t]), f(s["srcc_grpo"][t]))
    table.add_row("mean", f(s["ceiling_mean"]), f(s["srcc_base"]["mean"]), f(s["srcc_sft"]["mean"]),
                  f(s["srcc_grpo"]["mean"]), style="bold")
    console.print(table)
    lo, hi = s["srcc_grpo_minus_sft_ci"]
    ok = {True: "[green]met[/]", False: "[red]not met[/]"}
    console.print(f"GRPO mean SRCC {f(s['srcc_grpo']['mean'])} vs target {f(s['target'])} (0.8 x mean ceiling): "
                  f"{ok[s['passed']['grpo_mean_srcc_reaches_target']]}")
    console.print(f"GRPO - SFT mean SRCC {f(s['srcc_grpo_minus_sft'])}, 95% CI [{f(lo)}, {f(hi)}]: "
                  f"{ok[s['passed']['grpo_beats_sft_ci_above_zero']]}")
    if lo <= 0 <= hi:
        console.print("  (why GRPO adds little to a well-fitted SFT model here: the report, and BENCHMARKS.md, "
                      "\"GRPO against its SFT start\")")
    mlo, mhi = s["mae_per_range_grpo_minus_sft_ci"]
    console.print(f"mean MAE / range: SFT {f(s['mae_per_range_sft'])} -> GRPO {f(s['mae_per_range_grpo'])}, "
                  f"change 95% CI [{f(mlo)}, {f(mhi)}]")
    took = f"{s['minutes']:.1f} min"
    if any(r["status"] == "skipped" for r in s["stages"].values()):
        took += " this run (the skipped stages' own times are in summary.json, \"stages\")"
    console.print(f"{took}. Report: [bold]{page}[/] (also {md.name}, summary.json)",
                  soft_wrap=True)  # one line, whatever the width: a path to copy


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = make_parser().parse_args(argv)
    console = Console()
    try:
        plan = plan_demo(args)
    except DemoInputError as e:
        print(f"cogalign demo: error: {e}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads or 1)  # at least 1: plan_demo checked it
    try:
        run_demo(plan, console, fresh=args.fresh)
    except KeyboardInterrupt:
        console.print("interrupted: run `cogalign demo` again to resume where it stopped")
        return 130
    except (BackgroundStageError, StageError) as e:
        print(f"cogalign demo: error: {e}\nFix the cause, then run `cogalign demo` again: it goes on from that "
              f"stage.", file=sys.stderr)
        return 1
    except OutputInUse as e:
        print(f"cogalign demo: error: {e}", file=sys.stderr)
        return 1
    return 0

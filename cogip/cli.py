"""The ``cogalign`` console script: ``cogalign sft|grpo|eval|generate|demo|validate-data ...``.

Each training/eval subcommand forwards its arguments to the ``main`` of the stage's entry script, so
``cogalign grpo --config x.yaml`` and ``python rl/train_grpo.py --config x.yaml`` are the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import re
import sys

# subcommand -> (module whose cli_main(argv) runs it, one-line help)
STAGES = {
    "sft": ("sft_warmstart.train_sft", "SFT warm-start with the soft-label loss (same flags as train_sft.py)"),
    "grpo": ("rl.train_grpo", "GRPO with trait rewards (same flags as rl/train_grpo.py)"),
    "eval": ("eval.run", "evaluate checkpoints against human scores (same flags as eval/run.py)"),
    "generate": ("generation.generate", "generate images with the aligned encoder (same flags as generate.py)"),
}


def stage_parser(dataclass_types: tuple, description: str):
    """The ``TrlParser`` of a stage's entry script; its help says what ``--config`` does (trl reads that flag itself,
    so it is not one of the listed arguments)."""
    from trl import TrlParser

    parser = TrlParser(dataclass_types, description=description,
                       epilog="--config FILE.yaml sets any of the fields above from a YAML file (the names without "
                              "--; a --no_x flag is written x: false); flags given beside it override the file.")
    for action in parser._actions:  # HfArgumentParser gives each --no_x the help of --x
        if isinstance(action, argparse._StoreFalseAction) and action.option_strings[0].startswith("--no_"):
            action.help, action.default = f"the same as --{action.dest} false", argparse.SUPPRESS
    set_defaults = parser.set_defaults_with_config

    def set_checked_defaults(**config):
        """trl makes the config file's values the parser's defaults, which argparse does not check: a field that
        takes several values is given one as a list of one, a field with choices refuses any other value (but
        YAML's false for "no")."""
        actions = {a.dest: a for a in parser._actions if a.option_strings}
        for key, value in config.items():
            action = actions.get(key)
            if action is None or value is None:
                continue
            if action.nargs in ("+", "*") and not isinstance(value, list):
                config[key] = value = [value]
            if value is False and action.choices is not None and "no" in action.choices:
                config[key] = value = "no"  # YAML reads an unquoted `save_strategy: no` as false
            if action.choices is not None and any(v not in action.choices for v in (
                    value if isinstance(value, list) else [value])):
                raise ValueError(f"{key}: {value!r} is not one of {', '.join(map(str, action.choices))}")
        return set_defaults(**config)

    parser.set_defaults_with_config = set_checked_defaults
    return parser


def _config_file(path: str):
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


# Set by the launchers DeepSpeed and accelerate read ranks from: torch's, Open MPI's, MPICH / Intel MPI's, MVAPICH's.
_LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                 "MV2_COMM_WORLD_SIZE", "SLURM_PROCID")


def _single_process_launch_env() -> None:
    """Give a DeepSpeed run started with plain ``python`` (one process, no launcher) the environment a launcher
    would give it (rank 0 of 1, a free local port), as transformers' DeepSpeed guide does by hand; without it
    DeepSpeed looks for MPI and stops."""
    import os
    import socket

    if any(k in os.environ for k in _LAUNCHER_ENV):
        return  # a launcher (torchrun, deepspeed, accelerate, mpirun, srun) started this process
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=os.environ.get("MASTER_PORT", str(port)))


def _read_argv(parser, argv: list[str]) -> tuple[set[str], dict, list[str]]:
    """The fields ``argv`` sets (its flags' and its ``--config`` file's), the file's ``env`` mapping, and what in
    ``argv`` the parser does not know or cannot read, each said in a few words."""

    args, given, env, problems = list(argv), set(), {}, []
    if any(a.startswith("--config=") for a in args):
        problems.append("write --config FILE with a space (trl reads that flag itself)")
    if args.count("--config") > 1:
        problems.append("--config is given more than once")
    elif "--config" in args and args.index("--config") + 1 == len(args):
        problems.append("--config needs a YAML file")
    elif "--config" in args:
        at = args.index("--config")
        path = args[at + 1]
        del args[at:at + 2]
        config = _config_file(path)
        if isinstance(config, dict):
            fields = {a.dest for a in parser._actions}
            given |= {k for k in config if k in fields}
            env = config.get("env") if isinstance(config.get("env"), dict) else {}
            if unknown := [k for k in config if k != "env" and k not in fields]:
                problems.append(f"{path} holds unknown field(s): {', '.join(map(str, unknown))}")
    actions = {o: a for o, a in parser._option_string_actions.items() if o.startswith("--")}
    unknown = []
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    for flag in (f for f in flags if f not in ("--", "--config")):  # a misplaced --config is named above
        matches = [flag] if flag in actions else [o for o in actions if parser.allow_abbrev and o.startswith(flag)]
        if len(matches) == 1:
            given.add(actions[matches[0]].dest)
        elif matches:  # as argparse has it, also when both spellings (_ and -) of one flag match
            problems.append(f"ambiguous option: {flag} could match {', '.join(matches)}")
        else:
            unknown.append(flag)
    if unknown:
        problems.append(f"unrecognized arguments: {' '.join(unknown)}")
    return given, env, problems


def parse_strictly(parser, argv: list[str] | None = None, launch_env: bool = False) -> tuple:
    """``parser.parse_args_and_config(argv)`` (a ``TrlParser``) with two differences: an unknown flag or config
    field is reported first (a misspelt flag would otherwise trip some other field's check, which then gets the
    blame), and argparse's own errors (a value of the wrong type, say) raise ``ValueError`` instead of printing the
    whole usage and exiting. Each parsed object remembers which fields were given, for :func:`relaunch_config`.
    ``launch_env`` (the process that will train): a run given ``deepspeed`` without a launcher gets one process's
    launcher environment before the arguments are built (:func:`_single_process_launch_env`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    helping = "-h" in argv or "--help" in argv
    given, env, problems = (set(), {}, []) if helping else _read_argv(parser, argv)
    if problems:
        raise ValueError("; ".join(problems))
    if launch_env and "deepspeed" in given:
        _single_process_launch_env()

    def error(message: str):
        raise ValueError(message)

    parser.error = error
    parsed = parser.parse_args_and_config(args=argv)
    for args in parsed:
        args.__dict__[_GIVEN] = (given, env)
    return parsed


def plain(value):
    """A YAML-safe copy (enums by their value; paths and other objects become strings)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


_GIVEN = "_cogalign_given_fields"
_DEVICE_FIELDS = ("use_cpu", "bf16", "fp16")  # always written: they decide whether the arguments parse here at all
# Left out of the relaunch file: set by launchers; a relaunch resumes from the last checkpoint, not the first run's
# start (nor starts over: resume false). The hub token is left out too: TrainingArguments writes it as a placeholder.
_NOT_RELAUNCHED = {"local_rank", "resume_from_checkpoint", "resume", "hub_token"}
# ... and so are env variables named like secrets (HF_TOKEN, WANDB_API_KEY; not TOKENIZERS_PARALLELISM): the file is
# saved beside the model.
_SECRET_NAME = re.compile(r"(^|_)(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH)(_|$)", re.IGNORECASE)


def relaunch_config(parsed: tuple) -> dict:
    """The fields a run parsed by :func:`parse_strictly` was given (by its flags and its config file), with the
    values they took, and the config file's ``env``, as one flat, YAML-safe mapping: ``--config`` with it launches
    the same run. Fields derived from others (trl's ``steps_per_generation``, say) are left to be derived again;
    the hub token and secret-named env variables are left out (to be set in the environment again)."""
    out = {}
    for args in parsed:
        given, env = args.__dict__.get(_GIVEN, (set(), {}))
        given = {k for k in set(given) | ({*_DEVICE_FIELDS} if hasattr(args, "use_cpu") else set())
                 if k not in _NOT_RELAUNCHED}
        values = plain(dataclasses.asdict(args))  # not to_dict(): it masks every *_token field (SFT's eos_token)
        env = {k: v for k, v in env.items() if not _SECRET_NAME.search(str(k))}
        out |= {k: v for k, v in values.items() if k in given} | ({"env": plain(env)} if env else {})
    return out


def parse_stage_args(parser, argv: list[str] | None = None) -> tuple | None:
    """:func:`parse_strictly` for the process that runs the stage, or None after one line on stderr when the config
    file is missing or not YAML, holds a field the stage does not know, a flag is unknown, or a value is refused."""
    import yaml

    try:
        return parse_strictly(parser, argv, launch_env=True)
    except (ValueError, TypeError, OSError, yaml.YAMLError) as e:  # TypeError: e.g. one number for a list field
        print(f"{parser.prog}: error: {e} (see --help)", file=sys.stderr)
        return None


def run_stage(parser, main_fn, argv: list[str] | None = None, *, refused: tuple[type[Exception], ...] = (),
              verb: str = "train", drop_flag: str = "--drop_invalid_items") -> int:
    """Parse flags and ``--config file.yaml`` with a ``TrlParser`` and call ``main_fn(*parsed)``. Bad flags or
    config files, invalid data, input that is not there or not what the stage reads (a model folder or data path
    that is missing, a split the data lacks, a data file read only with another) and a stage's own ``refused``
    errors end the run with a message and exit code 2."""
    from cogip.data import DataValidationError, MissingSplitError, WrongFileError
    from cogip.files import InputNotFoundError

    parsed = parse_stage_args(parser, argv)
    if parsed is None:
        return 2
    try:
        main_fn(*parsed)
    except DataValidationError as e:
        print(f"Refusing to {verb} on invalid data (use {drop_flag} to drop it):\n{e.report}", file=sys.stderr)
        return 2
    except (InputNotFoundError, MissingSplitError, WrongFileError, *refused) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    _end_process_group()
    return 0


def _end_process_group() -> None:
    """Close the run's torch.distributed process group, as torch asks before a process ends (left to the
    interpreter's exit, a gloo group's teardown now and then aborted a rank after a run had finished)."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _validate_data(argv: list[str]) -> int:
    from cogip.data import validate
    from cogip.traits import load_traits_file

    p = argparse.ArgumentParser(prog="cogalign validate-data",
                                description="Check CogIP-Bench files: counts per file and trait, every problem.")
    p.add_argument("path", help="an upstream file, a test_msg_file/ or cognition_scores/ folder, or a release folder")
    p.add_argument("--image-root", "--image_root", default=None,
                   help="folder the <Trait>/<id>.jpg image paths are relative to (default: the current folder)")
    p.add_argument("--traits-file", "--traits_file", default=None,
                   help="a YAML file of your own traits (see configs/traits_example.yaml)")
    args = p.parse_args(argv)
    try:
        load_traits_file(args.traits_file)
        _, report = validate(args.path, args.image_root)
    except (FileNotFoundError, ValueError) as e:  # no such path; a file validate cannot read on its own
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report)
    print("OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)")
    return 0 if report.ok else 1


def _demo(argv: list[str]) -> int:
    from cogip.demo import main as demo_main

    return demo_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # the deepspeed launcher puts --local_rank=N straight after the program, before the command
    launcher = [a for a in argv[:1] if a.startswith(("--local_rank=", "--local-rank="))]
    argv = argv[len(launcher):][:1] + launcher + argv[len(launcher) + 1:]
    commands = {name: help_ for name, (_, help_) in STAGES.items()}
    commands |= {"demo": "run the whole pipeline on the synthetic benchmark (CPU)",
                 "validate-data": "check CogIP-Bench files before training"}
    if argv and argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"cogalign {version('cogalign')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            print("cogalign (not installed: no version; `pip install -e .` or `make install`)")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        out = sys.stdout if asked else sys.stderr
        if argv and not asked:
            print(f"cogalign: error: unknown command {argv[0]!r}", file=out)
        print("usage: cogalign <command> [args]   (cogalign <command> --help for its flags; cogalign --version)\n\n"
              "commands:", file=out)
        for name, help_ in commands.items():
            print(f"  {name:<14} {help_}", file=out)
        return 0 if asked else 2  # no command, or an unknown one: the usage on stderr, exit 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "validate-data":
        return _validate_data(rest)
    if cmd == "demo":
        return _demo(rest)
    module = importlib.import_module(STAGES[cmd][0])
    sys.argv[0] = f"cogalign {cmd}"  # argparse names the program after it in usage lines and errors
    return module.cli_main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())

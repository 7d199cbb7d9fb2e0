"""Datasets in one canonical schema, loaders for every upstream CogIP-Bench file format, validation, and converters
to the formats trl's trainers take.

Canonical schema (a ``datasets.Dataset``): ``id`` (str), ``image`` (``datasets.Image``), ``trait`` (registry name),
``score`` (float), ``score_std`` (float or None), ``answer`` (``"<label> <score>"``), ``prompt`` (chat messages: one
user turn with an image part and a text part).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from cogip.answer import parse_answer, render_answer
from cogip.files import InputNotFoundError
from cogip.traits import get_trait, has_trait

CANONICAL_COLUMNS = ("id", "image", "trait", "score", "score_std", "answer", "prompt")
RELEASE_FILES = {  # split name -> file or folder inside a release folder
    "train": "cognition_training.json",
    "grpo": "training_grpo.json",
    "test": "test_msg_file",
    "scores": "cognition_scores",
}


class WrongFileError(ValueError):
    """A path that is there but is not a file the command reads on its own (a ``_scores.json`` without its
    messages): entry scripts end the run with its message and exit code 2."""


class DataValidationError(ValueError):
    """Raised when data has problems and dropping them was not asked for; carries the full report."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(str(report))


def _where(file: str, index: int | None) -> str:
    """Where an item is: a line of a text file numbered from 1 as editors do, an item of a JSON list from 0."""
    if index is None:
        return file
    return f"{file}:{index + 1}" if file.endswith(".txt") else f"{file}[{index}]"


@dataclass
class Problem:
    file: str
    index: int | None
    message: str

    def __str__(self) -> str:
        return f"{_where(self.file, self.index)}: {self.message}"


@dataclass
class ValidationReport:
    counts: dict[str, Counter] = field(default_factory=dict)  # file -> trait -> number of good items
    problems: list[Problem] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)  # file -> number of items read from it, good or bad
    notes: list[str] = field(default_factory=list)  # what may explain the problems, said once after them

    @property
    def ok(self) -> bool:
        return not self.problems

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def merge(self, other: ValidationReport) -> None:
        self.counts.update(other.counts)
        self.problems.extend(other.problems)
        self.seen.update(other.seen)
        for text in other.notes:
            self.note(text)

    def __str__(self) -> str:
        lines = []
        for f, c in self.counts.items():
            lines.append(f"{f}: {sum(c.values())} valid items ({', '.join(f'{t} {n}' for t, n in sorted(c.items()))})")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {p}" for p in self.problems)
        lines.extend(f"({n})" for n in self.notes)
        return "\n".join(lines)


def make_prompt(text: str) -> list[dict]:
    """One user turn holding the image and the instruction, the conversational format of trl and transformers."""
    return [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": text}]}]


def prompt_text(prompt: list[dict]) -> str:
    """The instruction text of a canonical prompt."""
    return "".join(p.get("text") or "" for m in prompt for p in m["content"] if p.get("type") == "text")


def _features():
    from datasets import Features, Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    return Features({
        "id": Value("string"), "image": Image(), "trait": Value("string"), "score": Value("float64"),
        "score_std": Value("float64"), "answer": Value("string"),
        "prompt": List({"role": Value("string"), "content": List(part)}),
    })


def items_to_dataset(items: list[dict]):
    """Canonical items (dicts; ``image`` a path or a PIL image) to a ``datasets.Dataset``; extra keys are kept."""
    from datasets import Dataset, Features, List, Value

    feats = _features()
    extra = {k: v for k, v in (items[0].items() if items else []) if k not in feats}
    for k, v in extra.items():
        feats[k] = List(Value("float64")) if isinstance(v, list) else Value("float64")
    if not items:
        return Dataset.from_dict({k: [] for k in feats}, features=Features(feats))
    return Dataset.from_list(items, features=Features(feats))


# ---------------------------------------------------------------------------------------------------------------
# Upstream readers: each returns (records, report). A record is a canonical item whose image is a relative path.


def _clean_prompt(text: str) -> str:
    return text.replace("<image>", "").strip()


def _record(file: str, index: int, image: str, answer_text: str, prompt: str, report: ValidationReport,
            item_id: str | None = None) -> dict | None:
    trait_name = Path(image).parts[0] if Path(image).parts else ""
    if not has_trait(trait_name):
        report.problems.append(Problem(file, index, f"unknown trait {trait_name!r} (from image path {image!r})"))
        return None
    trait = get_trait(trait_name)
    parsed = parse_answer(answer_text, trait, exact=True)
    if not parsed.well_formed:
        report.problems.append(Problem(
            file, index, f"malformed answer {answer_text!r}: expected '<label> <score>' alone (or in one <answer> "
                         f"block) with a label of {trait.name} ({', '.join(trait.labels)})"))
        return None
    if not parsed.in_range:
        report.problems.append(
            Problem(file, index, f"{trait.name} score {parsed.score} outside [{trait.low:g}, {trait.high:g}]"))
        return None
    if not parsed.label_consistent:
        report.problems.append(Problem(file, index, f"label {parsed.label!r} does not match score {parsed.score}"))
        return None
    return {
        "_index": index, "id": item_id or str(Path(image).with_suffix("")), "image": image, "trait": trait.name,
        "score": parsed.score, "score_std": None, "answer": render_answer(trait, parsed.score),
        "prompt": make_prompt(prompt or trait.prompt),
    }


def _load_json(path: Path, report: ValidationReport) -> list | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        report.problems.append(Problem(str(path), None, f"cannot read JSON: {e}"))
        return None
    if not isinstance(data, list):
        report.problems.append(Problem(str(path), None, "expected a JSON list of items"))
        return None
    return data


def read_conversations(path: str | Path) -> tuple[list[dict], ValidationReport]:
    """``cognition_training.json`` (``image`` a list) or ``training_grpo.json`` (``image`` a string, answers in
    ``<answer>`` tags): LLaVA-style items with a human and a gpt turn."""
    path, report, records = Path(path), ValidationReport(), []
    items = _load_json(path, report)
    if items is not None:
        report.seen[str(path)] = len(items)
    for i, item in enumerate(items or []):
        try:
            image = item["image"]
            if isinstance(image, list):
                if len(image) != 1:
                    raise ValueError(f"expected one image, got {len(image)}")
                image = image[0]
            turns = {t["from"]: t["value"] for t in item["conversations"]}
            human, gpt = turns["human"], turns["gpt"]
            if not isinstance(image, str) or not isinstance(human, str) or not isinstance(gpt, str):
                raise TypeError("image, human and gpt values must be strings")
        except (KeyError, TypeError, ValueError) as e:
            report.problems.append(Problem(str(path), i, f"malformed entry: {type(e).__name__}: {e}"))
            continue
        rec = _record(str(path), i, image, gpt, _clean_prompt(human), report)
        if rec:
            records.append(rec)
    return records, report


def _content_parts(content) -> list[dict]:
    """A chat turn's content as a list of parts: a plain string (or a loose string part) is a text part."""
    parts = [content] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise TypeError(f"content must be a string or a list of parts, got {type(content).__name__}")
    out = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    if not all(isinstance(p, dict) for p in out):
        raise TypeError("content parts must be strings or objects")
    return out


def read_messages(path: str | Path) -> tuple[list[dict], ValidationReport]:
    """``test_msg_file/<Trait>/<Trait>_messages.json`` with its ``<Trait>_scores.json`` beside it."""
    path, report, records = Path(path), ValidationReport(), []
    scores_path = path.with_name(path.name.replace("_messages.json", "_scores.json"))
    messages, answers = _load_json(path, report), _load_json(scores_path, report)
    if messages is None or answers is None:
        return records, report
    report.seen[str(path)] = len(messages)
    if len(messages) != len(answers):  # paired by position: past a missing entry every pair would be shifted
        report.problems.append(Problem(str(path), None, f"{len(messages)} messages but {len(answers)} answers in "
                                       f"{scores_path.name}: the pairs cannot be matched, so none is read"))
        return records, report
    for i, (conv, answer) in enumerate(zip(messages, answers)):
        if not isinstance(answer, str):
            report.problems.append(Problem(str(scores_path), i, f"expected an answer string, got {answer!r}"))
            continue
        try:
            parts = [p for m in conv if m["role"] == "user" for p in _content_parts(m["content"])]
            images = [p["image"] for p in parts if p.get("type") == "image"]
            text = " ".join(p["text"] for p in parts if p.get("type") == "text")
            if len(images) != 1 or not isinstance(images[0], str):
                raise ValueError(f"expected one image path in the user turn, got {len(images)} image(s)")
        except (KeyError, TypeError, ValueError) as e:
            report.problems.append(Problem(str(path), i, f"malformed entry: {type(e).__name__}: {e}"))
            continue
        rec = _record(str(path), i, images[0], answer, _clean_prompt(text), report)
        if rec:
            records.append(rec)
    return records, report


def _finite_decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def read_scores_txt(path: str | Path) -> tuple[list[dict], ValidationReport]:
    """``cognition_scores/<Trait>_scores.txt``: ``file<TAB>score`` lines; prompts come from the trait registry."""
    path, report, records = Path(path), ValidationReport(), []
    trait_name = path.name.removesuffix("_scores.txt")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        report.problems.append(Problem(str(path), None, f"cannot read: {e}"))
        return records, report
    report.seen[str(path)] = sum(1 for line in lines if line.strip())
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            report.problems.append(Problem(str(path), i, f"expected 'file<TAB>score', got {len(fields)} field(s)"))
            continue
        score = _finite_decimal(fields[1])
        if score is None:
            report.problems.append(Problem(str(path), i, f"score {fields[1].strip()!r} is not a finite number"))
            continue
        image = f"{trait_name}/{fields[0].strip()}"
        # the answer an upstream file would hold: the label of the score as answers round it, the score as written
        # (without an exponent, which answers never have)
        label = get_trait(trait_name).label_for(get_trait(trait_name).round(score)) if has_trait(trait_name) else ""
        answer = f"{label} {score:f}"
        rec = _record(str(path), i, image, answer, "", report)
        if rec:
            records.append(rec)
    return records, report


def _files_of(path: Path) -> list[Path]:
    """The upstream files that make up ``path`` (a file, a ``test_msg_file`` / ``cognition_scores`` folder, or a
    release folder)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputNotFoundError(f"{path} does not exist")
    found = sorted(path.glob("cognition_training.json")) + sorted(path.glob("training_grpo.json"))
    found += sorted(path.glob("**/*_messages.json")) + sorted(path.glob("**/*_scores.txt"))
    if not found:
        raise _no_files(path)
    return found


def _no_files(path: Path) -> InputNotFoundError:
    return InputNotFoundError(f"{path} holds no CogIP-Bench files (a release folder holds "
                              f"{', '.join(RELEASE_FILES.values())}; a test_msg_file folder holds "
                              "<Trait>/<Trait>_messages.json with <Trait>_scores.json, a cognition_scores folder "
                              "<Trait>_scores.txt)")


def read_file(path: str | Path) -> tuple[list[dict], ValidationReport]:
    path = Path(path)
    if path.name.endswith("_scores.txt"):
        return read_scores_txt(path)
    if path.name.endswith("_messages.json"):
        return read_messages(path)
    if path.name.endswith("_scores.json"):  # the answers half of a test_msg_file pair: read with its messages
        messages = path.name[:-len("_scores.json")] + "_messages.json"
        raise WrongFileError(f"{path} holds the answers to {messages} beside it: give that file, or the folder")
    return read_conversations(path)


def check_images(records: list[dict], image_root: str | Path | None, file: str,
                 report: ValidationReport) -> list[dict]:
    """Resolve each record's image under ``image_root`` and keep those that exist and decode (problems are reported
    at the record's index in its file)."""
    good = []
    for rec in records:
        index = rec.pop("_index")
        p = Path(image_root or ".") / rec["image"]
        if problem := _image_problem(p):
            report.problems.append(Problem(file, index, problem))
            if not image_root and not p.is_absolute() and not p.exists():
                report.note("no image root given (--image_root): image paths were looked up from the current folder")
            continue
        good.append({**rec, "image": str(p)})
    return good


def _drop_duplicates(records: list[dict], file: str, report: ValidationReport) -> list[dict]:
    """Keep the first item of each (trait, image) in a file; each later one is a problem (its score may differ)."""
    first, kept = {}, []
    for rec in records:
        key = (rec["trait"], rec["image"])
        if key in first:
            report.problems.append(Problem(file, rec["_index"],
                                           f"same {key[0]} image {key[1]} as {_where(file, first[key])}"))
        else:
            first[key] = rec["_index"]
            kept.append(rec)
    return kept


def validate(path: str | Path, image_root: str | Path | None) -> tuple[dict[str, list[dict]], ValidationReport]:
    """Read every upstream file under ``path`` and check every item. Returns the valid records per file and the
    report (counts per file and trait, every problem with file and index)."""
    report, by_file = ValidationReport(), {}
    if image_root is not None and not Path(image_root).is_dir():
        raise InputNotFoundError(f"image root {image_root} does not exist (the folder the <Trait>/<id>.jpg paths are "
                                 "relative to)")
    for f in _files_of(Path(path)):
        records, rep = read_file(f)
        if not records and not rep.problems:
            rep.problems.append(Problem(str(f), None, "holds no items"))
        records = check_images(_drop_duplicates(records, str(f), rep), image_root, str(f), rep)
        rep.counts[str(f)] = Counter(r["trait"] for r in records)
        report.merge(rep)
        by_file[str(f)] = records
    return by_file, report


def _refuse_or_warn(report: ValidationReport, drop_invalid: bool) -> None:
    """Raise on any problem unless dropping was asked for; then say how many items were dropped."""
    import logging

    if report.problems:
        if not drop_invalid:
            raise DataValidationError(report)
        kept = {f: sum(c.values()) for f, c in report.counts.items()}
        dropped = sum(n - kept.get(f, 0) for f, n in report.seen.items())
        if not sum(kept.values()):
            raise InputNotFoundError(f"no valid item left once the invalid ones are dropped "
                                     f"({len(report.problems)} problem(s), the first: {report.problems[0]})")
        unread = {p.file for p in report.problems if p.index is None and p.file not in report.seen}
        logging.getLogger(__name__).warning("dropped %d of %d item(s)%s:\n%s", dropped, sum(report.seen.values()),
                                            f" and {len(unread)} file(s) that could not be read" if unread else "",
                                            report)


def load_upstream(path: str | Path, image_root: str | Path | None = None, drop_invalid: bool = False):
    """One upstream file (or a ``test_msg_file`` / ``cognition_scores`` folder) as a canonical Dataset. Refuses bad
    data unless ``drop_invalid``, and a release folder: its files are splits to keep apart (merged, the test items
    would be trained on and every training image read three times)."""
    if any((Path(path) / name).exists() for name in RELEASE_FILES.values()):
        raise WrongFileError(f"{path} is a release folder, whose files are separate splits: read it with --dataset "
                             f"release (and --dataset_train_split train or grpo), or give one of its files")
    by_file, report = validate(path, image_root)
    _refuse_or_warn(report, drop_invalid)
    return items_to_dataset([r for recs in by_file.values() for r in recs])


def release_prompts(root: str | Path) -> dict[str, str]:
    """Per trait, the question a release's test split asks most often (its images not needed): how a model trained
    on the release was asked to judge."""
    folder = Path(root) / RELEASE_FILES["test"]
    counts: dict[str, Counter] = {}
    for messages in sorted(folder.glob("*/*_messages.json")):
        records, _ = read_messages(messages)
        for r in records:
            counts.setdefault(r["trait"], Counter())[prompt_text(r["prompt"])] += 1
    if not counts:
        raise InputNotFoundError(f"{folder} holds no <Trait>/<Trait>_messages.json to take the questions from")
    return {trait: c.most_common(1)[0][0] for trait, c in counts.items()}


def balanced_subset(dataset, n: int):
    """``n`` items of ``dataset`` taken in turn from each of its traits (in the order items come), so that a split
    ordered by trait (a release's test split) still gives every trait its share; kept in the split's order."""
    by_trait: dict[str, list[int]] = {}
    for i, t in enumerate(dataset["trait"]):
        by_trait.setdefault(t, []).append(i)
    picked: list[int] = []
    for rank in range(max(map(len, by_trait.values()), default=0)):
        picked += [idx[rank] for idx in by_trait.values() if rank < len(idx)]
    return dataset.select(sorted(picked[:n]))


class MissingSplitError(ValueError):
    """A split asked for by name that the data does not hold."""


def get_split(splits, name: str, where: str):
    """``splits[name]``, or a MissingSplitError naming the splits ``where`` (a release folder or dataset) does have."""
    if name not in splits:
        raise MissingSplitError(f"{where} has no split {name!r}; it has: {', '.join(splits) or 'none'}")
    return splits[name]


def release_splits(root: str | Path) -> list[str]:
    """The splits a release folder holds, of ``train`` (cognition_training.json), ``grpo`` (training_grpo.json),
    ``test`` (test_msg_file/) and ``scores`` (cognition_scores/)."""
    root = Path(root)
    if not root.exists():
        raise InputNotFoundError(f"{root} does not exist")
    if root.is_file():
        raise WrongFileError(f"{root} is a file: a release is read from its folder, the one that holds "
                             f"{', '.join(RELEASE_FILES.values())}")
    present = [split for split, name in RELEASE_FILES.items() if (root / name).exists()]
    if not present:
        raise _no_files(root)
    return present


def load_release(root: str | Path, image_root: str | Path | None = None, drop_invalid: bool = False,
                 splits: list[str] | None = None):
    """A release folder as a ``DatasetDict`` of the ``splits`` asked for (default: every split it holds, see
    :func:`release_splits`); only their files and images are read and checked."""
    from datasets import DatasetDict

    present, out, report = release_splits(root), {}, ValidationReport()
    for split in splits or present:
        get_split(dict.fromkeys(present), split, str(root))  # a MissingSplitError naming the splits it has
        by_file, rep = validate(Path(root) / RELEASE_FILES[split], image_root)
        report.merge(rep)
        out[split] = [r for recs in by_file.values() for r in recs]
    _refuse_or_warn(report, drop_invalid)
    return DatasetDict({split: items_to_dataset(recs) for split, recs in out.items()})


def read_scores(path: str | Path) -> dict[str, list]:
    """``{"trait": [...], "score": [...]}`` of the well-formed items of the upstream files under ``path``, images
    not looked at: for score statistics (the train means of eval's reference line)."""
    items = [r for f in _files_of(Path(path)) for r in read_file(f)[0]]
    return {"trait": [r["trait"] for r in items], "score": [r["score"] for r in items]}


def _image_problem(image) -> str | None:
    """What is wrong with a dataset's image (a path, an undecoded ``{"bytes", "path"}`` or a PIL image), or None
    once it decodes whole."""
    import io

    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return None
    if isinstance(image, dict):
        source = io.BytesIO(image["bytes"]) if image.get("bytes") else image.get("path")
        name = image.get("path") or "(bytes)"
    else:
        source = name = image
    if not source:
        return "missing image"
    try:
        with Image.open(source) as im:
            im.load()  # decodes the whole file: verify() passes a truncated JPEG
    except FileNotFoundError:
        return f"missing image {name}"
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        return f"unreadable image {name}: {e}"
    return None


def load_hf(name_or_path: str, split: str | None = None, *, image_column: str = "image", trait_column: str = "trait",
            score_column: str = "score", score_std_column: str | None = None, trait: str | None = None,
            prompt_style: str = "full", drop_invalid: bool = False):
    """A Hugging Face dataset (hub id, ``load_from_disk`` folder, or a Dataset) with image / trait / score columns,
    as a canonical Dataset. ``trait`` fixes the trait for datasets without a trait column."""
    import datasets

    if isinstance(name_or_path, datasets.Dataset):
        ds = name_or_path
    elif Path(name_or_path).is_dir() and (Path(name_or_path) / "dataset_info.json").exists() or (
            Path(name_or_path) / "dataset_dict.json").exists():
        ds = datasets.load_from_disk(name_or_path)
    else:
        ds = datasets.load_dataset(name_or_path, split=split)
    src = str(name_or_path if isinstance(name_or_path, str) else "dataset")
    if isinstance(ds, datasets.DatasetDict):
        ds = get_split(ds, split or "train", src)
    elif split not in (None, "train") and not isinstance(name_or_path, datasets.Dataset) and Path(src).is_dir():
        # one saved Dataset has no splits: it is the training data, and never also the held-out data
        raise MissingSplitError(f"{src} is one dataset without splits (used as 'train'); it has no split {split!r}")
    needed = (image_column, score_column) + (() if trait else (trait_column,)) + (
        (score_std_column,) if score_std_column else ())
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        hint = " (a dataset of one trait without a trait column: set hf_trait)" if trait_column in missing else ""
        raise ValueError(f"{src} has no column {', '.join(map(repr, missing))}{hint}; its columns: "
                         f"{', '.join(ds.column_names)}")
    if isinstance(ds.features.get(image_column), datasets.Image):  # decoded below, one at a time, to report it
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    report, records = ValidationReport(seen={src: len(ds)}), []
    for i, row in enumerate(ds):
        name = trait or row.get(trait_column)
        if not has_trait(name or ""):
            report.problems.append(Problem(src, i, f"unknown trait {name!r}"))
            continue
        t = get_trait(name)
        score = row.get(score_column)
        if not isinstance(score, (int, float)) or not t.in_range(float(score)):
            report.problems.append(Problem(src, i, f"{t.name} score {score!r} outside [{t.low:g}, {t.high:g}]"))
            continue
        image = row.get(image_column)
        problem = _image_problem(image)
        if problem:
            report.problems.append(Problem(src, i, problem))
            continue
        std = row.get(score_std_column) if score_std_column else None
        if std is not None and not (isinstance(std, (int, float)) and math.isfinite(std) and std >= 0):
            report.problems.append(Problem(src, i, f"{score_std_column} {std!r} is not a rater spread (>= 0)"))
            continue
        records.append({
            "id": str(row.get("id", i)), "image": row[image_column], "trait": t.name, "score": t.round(score),
            "score_std": None if std is None else float(std), "answer": render_answer(t, score),
            "prompt": make_prompt(t.prompt_text(prompt_style)),
        })
    report.counts[src] = Counter(r["trait"] for r in records)
    _refuse_or_warn(report, drop_invalid)
    return items_to_dataset(records)


# ---------------------------------------------------------------------------------------------------------------
# Converters to trl's VLM formats.


def to_sft_format(ds, answer_tags: bool = False):
    """Prompt-completion conversational format with an ``images`` column, as trl's ``SFTTrainer`` takes for VLMs.
    ``trait``, ``score`` and ``score_std`` stay for the soft-label loss."""

    def conv(row):
        text = f"<answer>{row['answer']}</answer>" if answer_tags else row["answer"]
        return {"images": [row["image"]],
                "completion": [{"role": "assistant", "content": [{"type": "text", "text": text}]}]}

    keep = {"prompt", "trait", "score", "score_std", "id"}
    return ds.map(conv, remove_columns=[c for c in ds.column_names if c not in keep])


def to_grpo_format(ds):
    """Conversational prompts with an ``image`` column, as trl's ``GRPOTrainer`` takes for VLMs; ``trait``,
    ``score``, ``score_std`` and ``answer`` are passed on to the reward functions."""
    keep = {"id", "image", "prompt", "trait", "score", "score_std", "answer"}
    return ds.remove_columns([c for c in ds.column_names if c not in keep])

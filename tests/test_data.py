import json
import subprocess
import sys

import pytest
from PIL import Image
from release_fixture import FULL_TEST, TRAITS, write_release

from cogip.answer import parse_answer
from cogip.cli import main as cli
from cogip.data import (
    CANONICAL_COLUMNS,
    DataValidationError,
    load_hf,
    load_release,
    load_upstream,
    to_grpo_format,
    to_sft_format,
    validate,
)

SMALL = {t: 6 for t in TRAITS}


@pytest.fixture(scope="module")
def full_release(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("full"))


def test_full_release_counts_and_answers(full_release):
    rel, images = full_release
    splits = load_release(rel, images)
    assert {k: len(v) for k, v in splits.items()} == {"train": 3200, "grpo": 3200, "test": 1719, "scores": 3200}
    for split in splits.values():
        assert tuple(split.column_names[:7]) == CANONICAL_COLUMNS
    test = splits["test"]
    assert {t: test["trait"].count(t) for t in TRAITS} == FULL_TEST
    for split in ("train", "test"):
        for trait, answer, score in zip(splits[split]["trait"], splits[split]["answer"], splits[split]["score"]):
            p = parse_answer(answer, trait)
            assert p.well_formed and p.label_consistent and p.score == score
    # the same items in the SFT and the GRPO files
    assert splits["train"]["answer"] == splits["grpo"]["answer"]
    assert splits["train"]["id"][:2] == ["Aesthetics/000000", "Aesthetics/000001"]
    # boundary scores land in the upper bin, as upstream labels them
    answers = set(splits["train"]["answer"])
    assert {"low 3.500", "medium 5.000", "neutral 0.000", "low 0.350", "very high 8.000"} <= answers


def test_single_files_load(tmp_path):
    rel, images = write_release(tmp_path, SMALL, SMALL)
    assert len(load_upstream(rel / "training_grpo.json", images)) == 24
    assert len(load_upstream(rel / "cognition_scores" / "Memorability_scores.txt", images)) == 6
    ds = load_upstream(rel / "test_msg_file" / "Emotional_Valence" / "Emotional_Valence_messages.json", images)
    assert set(ds["trait"]) == {"Emotional_Valence"} and len(ds) == 6
    row = ds[0]
    assert isinstance(row["image"], Image.Image)
    assert row["prompt"][0]["content"][0]["type"] == "image"
    assert "<image>" not in row["prompt"][0]["content"][1]["text"]


def _break_release(rel, images):
    conv = json.loads((rel / "cognition_training.json").read_text())
    conv[1]["conversations"][1]["value"] = "medium 11.000"  # Aesthetics out of range
    conv[2]["image"] = ["Cuteness/000002.jpg"]  # unknown trait
    conv[3]["conversations"] = [{"from": "human", "value": "x"}]  # no answer turn
    conv[4]["conversations"][1]["value"] = "pretty good"  # no label or score
    conv[5]["conversations"][1]["value"] = "very high 1.000"  # label disagrees with score
    (rel / "cognition_training.json").write_text(json.dumps(conv))
    (images / "Funniness" / "000001.jpg").unlink()  # missing image (Funniness item 1 of each train file)
    (images / "Funniness" / "000002.jpg").write_bytes(b"not a jpeg")  # unreadable
    lines = (rel / "cognition_scores" / "Memorability_scores.txt").read_text().splitlines()
    lines[3] = "000003.jpg 0.5"  # no tab
    (rel / "cognition_scores" / "Memorability_scores.txt").write_text("\n".join(lines))
    (rel / "test_msg_file" / "Aesthetics" / "Aesthetics_scores.json").write_text('["low 4.000"]')  # count mismatch


def test_validate_reports_every_problem(tmp_path, capsys):
    rel, images = write_release(tmp_path, SMALL, SMALL)
    assert cli(["validate-data", str(rel), "--image-root", str(images)]) == 0
    assert "OK" in capsys.readouterr().out
    _break_release(rel, images)
    _, report = validate(rel, images)
    found = {(p.file.rsplit("/", 1)[-1], p.index, p.message.split(" ")[0]) for p in report.problems}
    conv = "cognition_training.json"
    for expected in [(conv, 1, "Aesthetics"), (conv, 2, "unknown"), (conv, 3, "malformed"), (conv, 4, "malformed"),
                     (conv, 5, "label"), (conv, 7, "missing"), (conv, 8, "unreadable"),
                     ("Memorability_scores.txt", 3, "expected"), ("Aesthetics_messages.json", None, "6")]:
        assert expected in found, (expected, sorted(found, key=str))
    assert cli(["validate-data", str(rel), "--image-root", str(images)]) == 1
    out = capsys.readouterr().out
    assert f"FAILED: {len(report.problems)} problem(s)" in out
    assert "cognition_training.json[1]: Aesthetics score 11.0 outside [0, 10]" in out
    assert "cognition_training.json: 17 valid items" in out
    with pytest.raises(DataValidationError) as err:
        load_upstream(rel / "cognition_training.json", images)
    assert "cognition_training.json[2]: unknown trait 'Cuteness'" in str(err.value)
    kept = load_upstream(rel / "cognition_training.json", images, drop_invalid=True)
    assert len(kept) == 24 - 7


def test_validate_catches_subtle_problems(tmp_path, caplog):
    rel, images = write_release(tmp_path, SMALL, SMALL)
    conv = json.loads((rel / "cognition_training.json").read_text())
    conv[1]["conversations"][1]["value"] = "high 7.000 or maybe medium 5.577"  # two answers
    conv[3] = dict(conv[0])  # the same image again (and score)
    (rel / "cognition_training.json").write_text(json.dumps(conv))
    jpeg = images / "Funniness" / "000002.jpg"
    big = Image.effect_noise((64, 64), 60).convert("RGB")
    big.save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 3])  # truncated: PIL's verify() passes it
    msgs_path = rel / "test_msg_file" / "Aesthetics" / "Aesthetics_messages.json"
    msgs = json.loads(msgs_path.read_text())
    msgs[0][0]["content"] = "just text, no image"  # a plain-string content, valid chat but no image
    msgs[1][0]["content"].append("a loose string part")  # kept as text
    msgs_path.write_text(json.dumps(msgs))
    scores_path = msgs_path.with_name("Aesthetics_scores.json")
    answers = json.loads(scores_path.read_text())
    answers[2] = 4.105  # not a string: the scores file is to blame
    scores_path.write_text(json.dumps(answers))
    (rel / "cognition_scores" / "Funniness_scores.txt").write_text("")
    (rel / "cognition_scores" / "Memorability_scores.txt").write_text(  # a repeat; NaN; the edge 0.35 rounded to; 1e-5
        "000000.jpg\t0.400\n000000.jpg\t0.900\n000001.jpg\tnan\n000002.jpg\t0.34999\n000003.jpg\t1e-5\n")

    _, report = validate(rel, images)
    text = str(report)
    conv_file = "cognition_training.json"
    assert f"{conv_file}[1]: malformed answer 'high 7.000 or maybe medium 5.577'" in text
    assert f"{conv_file}[3]: same Aesthetics image Aesthetics/000000.jpg as {rel / conv_file}[0]" in text
    assert f"{conv_file}[8]: unreadable image" in text and "truncated" in text  # Funniness item 2 of 6
    assert "Aesthetics_messages.json[0]: malformed entry: ValueError: expected one image path" in text
    assert "Aesthetics_messages.json[1]" not in text
    assert "Aesthetics_scores.json[2]: expected an answer string, got 4.105" in text
    assert "Funniness_scores.txt: holds no items" in text
    mem = rel / "cognition_scores" / "Memorability_scores.txt"
    assert f"Memorability_scores.txt:2: same Memorability image Memorability/000000.jpg as {mem}:1" in text
    assert "Memorability_scores.txt:3: score 'nan' is not a finite number" in text
    assert "Memorability_scores.txt:4" not in text and "Memorability_scores.txt:5" not in text
    # dropping says how many items went, and that the empty file gave none
    with caplog.at_level("WARNING"):
        kept = load_release(rel, images, drop_invalid=True)
    assert len(kept["train"]) == 24 - 3 and len(kept["scores"]) == 6 + 6 + 3
    assert "dropped 8 of 89 item(s):" in caplog.text
    memorability = kept["scores"].filter(lambda t: t == "Memorability", input_columns="trait")
    assert memorability["score"] == [0.4, 0.34999, 1e-5] and memorability["answer"][1] == "low 0.350"


def test_messages_and_answers_of_unequal_count_are_refused_whole(tmp_path):
    rel, images = write_release(tmp_path, SMALL, SMALL)
    scores_path = rel / "test_msg_file" / "Funniness" / "Funniness_scores.json"
    answers = json.loads(scores_path.read_text())
    scores_path.write_text(json.dumps(answers[:1] + answers[2:]))  # one answer gone from the middle
    _, report = validate(rel, images)
    assert f"Funniness_messages.json: {len(answers)} messages but {len(answers) - 1} answers" in str(report)
    kept = load_release(rel, images, drop_invalid=True)["test"]
    assert "Funniness" not in set(kept["trait"])  # not the pairs before the gap, then shifted ones after it


def test_a_release_folder_is_not_read_as_one_upstream_file_and_one_saved_dataset_is_no_held_out_split(
        tmp_path, caplog):
    import datasets

    from cogip.data import MissingSplitError, WrongFileError
    from cogip.data_sources import DataArguments, load_canonical_splits

    rel, images = write_release(tmp_path, SMALL, SMALL)
    with pytest.raises(WrongFileError, match="is a release folder"):  # merged, its test items would be trained on
        load_upstream(rel, images)
    img = Image.new("RGB", (8, 8))
    datasets.Dataset.from_list([{"image": img, "trait": "Aesthetics", "score": s} for s in (2.0, 7.0)]).save_to_disk(
        tmp_path / "one")
    assert len(load_hf(str(tmp_path / "one"), "train")) == 2
    with pytest.raises(MissingSplitError, match="one dataset without splits"):
        load_hf(str(tmp_path / "one"), "validation")
    with caplog.at_level("WARNING"):  # trained on, and not also scored as held-out data
        train, held_out = load_canonical_splits(DataArguments(dataset="hf", dataset_path=str(tmp_path / "one")), True)
    assert len(train) == 2 and held_out is None and "no held-out scoring" in caplog.text
    img.save(tmp_path / "a.png")  # a column of image paths: each one checked before training, with its row
    datasets.Dataset.from_list([{"image": str(tmp_path / f), "trait": "Aesthetics", "score": 5.0}
                                for f in ("a.png", "gone.png")]).save_to_disk(tmp_path / "paths")
    with pytest.raises(DataValidationError, match=r"paths\[1\]: missing image .*gone.png"):
        load_hf(str(tmp_path / "paths"))
    # Images that do not decode, as a path or stored in the dataset: refused with their row, or dropped.
    (tmp_path / "b.jpg").write_text("not an image")
    stored = datasets.Dataset.from_list([{"image": img, "trait": "Aesthetics", "score": 5.0, "sd": sd}
                                         for sd in (0.5, -1.0, 0.7)])
    stored = stored.cast_column("image", datasets.Image(decode=False))
    stored = stored.map(lambda row, i: {"image": {"bytes": b"\xff\xd8 broken" if i == 2 else row["image"]["bytes"],
                                                  "path": None}}, with_indices=True)
    stored.cast_column("image", datasets.Image()).save_to_disk(tmp_path / "stored")
    datasets.Dataset.from_list([{"image": str(tmp_path / f), "trait": "Aesthetics", "score": 5.0}
                                for f in ("a.png", "b.jpg")]).save_to_disk(tmp_path / "text")
    with pytest.raises(DataValidationError, match=r"text\[1\]: unreadable image .*b.jpg"):
        load_hf(str(tmp_path / "text"))
    with pytest.raises(DataValidationError) as refused:
        load_hf(str(tmp_path / "stored"), score_std_column="sd")
    assert [(p.index, p.message.split(":")[0]) for p in refused.value.report.problems] == [
        (1, "sd -1.0 is not a rater spread (>= 0)"), (2, "unreadable image (bytes)")]
    kept = load_hf(str(tmp_path / "stored"), score_std_column="sd", drop_invalid=True)
    assert kept["score_std"] == [0.5] and kept[0]["image"].size == (8, 8)
    with pytest.raises(ValueError, match="has no column 'score_sd'"):  # a misspelt column is not left unread
        load_hf(str(tmp_path / "stored"), score_std_column="score_sd")
    # The question each trait's test items ask (what the judge of a release-trained model is asked).
    from cogip.data import release_prompts

    assert release_prompts(rel)["Funniness"] == "Judge the Funniness of this picture, give a band and a score with " \
                                                "three decimals."
    # Synthetic traits by any name the registry knows; the sizes count all four traits.
    train, _ = load_canonical_splits(DataArguments(synthetic_train_size=16, synthetic_traits=["valence"]), False)
    assert set(train["trait"]) == {"Emotional_Valence"} and len(train) == 4


def test_validate_data_console_script(tmp_path):
    rel, images = write_release(tmp_path, SMALL, SMALL, images=False)
    r = subprocess.run([sys.executable, "-m", "cogip.cli", "validate-data", str(rel), "--image-root", str(images)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "images does not exist" in r.stderr and "missing image" not in r.stdout
    images.mkdir()  # there, but empty
    for flag in ("--image-root", "--image_root"):  # the training scripts' spelling works too
        r = subprocess.run([sys.executable, "-m", "cogip.cli", "validate-data", str(rel / "training_grpo.json"),
                            flag, str(images)], capture_output=True, text=True)
        assert r.returncode == 1 and r.stdout.count("missing image") == 24
        assert "no image root given" not in r.stdout
    r = subprocess.run([sys.executable, "-m", "cogip.cli", "validate-data", str(rel / "training_grpo.json")],
                       capture_output=True, text=True)
    hint = "(no image root given (--image_root): image paths were looked up from the current folder)"
    assert r.stdout.count(hint) == 1


def test_load_hf_and_converters(tmp_path, synthetic_splits):
    from datasets import Dataset

    src = Dataset.from_dict({
        "image": [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(4)],
        "label_name": ["aesthetics", "valence", "Memorability", "Funniness"],
        "mos": [7.25, -1.0, 0.5, 11.0],
    })
    src.save_to_disk(tmp_path / "hf")
    with pytest.raises(DataValidationError, match=r"\[3\]: Funniness score 11.0 outside"):
        load_hf(str(tmp_path / "hf"), trait_column="label_name", score_column="mos")
    ds = load_hf(str(tmp_path / "hf"), trait_column="label_name", score_column="mos", drop_invalid=True)
    assert ds["trait"] == ["Aesthetics", "Emotional_Valence", "Memorability"]
    assert ds["answer"] == ["high 7.250", "negative -1.000", "medium 0.500"]
    with pytest.raises(ValueError, match="has no column 'trait' .*set hf_trait.*label_name"):
        load_hf(str(tmp_path / "hf"), score_column="mos")

    sft = to_sft_format(synthetic_splits["train"])
    row = sft[0]
    assert set(sft.column_names) >= {"prompt", "completion", "images", "trait", "score"}
    assert row["completion"][0]["content"][0]["text"] == synthetic_splits["train"][0]["answer"]
    assert len(row["images"]) == 1
    grpo = to_grpo_format(synthetic_splits["train"])
    assert {"prompt", "image", "trait", "score", "score_std"} <= set(grpo.column_names)
    assert "ratings" not in grpo.column_names


def test_a_release_split_that_is_not_there_is_named(tmp_path, caplog):
    from cogip.data import DataValidationError, WrongFileError
    from cogip.data_sources import DataArguments, load_canonical_splits

    rel, images = write_release(tmp_path, {t: 2 for t in TRAITS}, {t: 2 for t in TRAITS})
    args = DataArguments(dataset="release", dataset_path=str(rel), image_root=str(images),
                         dataset_test_split="validation")
    with caplog.at_level("WARNING"):
        train, held_out = load_canonical_splits(args, with_eval=True)
    assert len(train) == 8 and held_out is None
    assert "has no held-out split 'validation' (it has: train, grpo, test, scores)" in caplog.text
    args = DataArguments(dataset="release", dataset_path=str(rel), image_root=str(images))  # a release's default
    assert len(load_canonical_splits(args, with_eval=True)[1]) == 8
    args.dataset_train_split = "trian"
    with pytest.raises(ValueError, match="has no split 'trian'; it has: train, grpo, test, scores"):
        load_canonical_splits(args, with_eval=False)
    with pytest.raises(ValueError, match="dataset: 'relase' is not one of synthetic, release, upstream, hf"):
        DataArguments(dataset="relase")
    (images / "Funniness" / "000003.jpg").unlink()  # a test image: training without held-out scoring needs none
    args.dataset_train_split = "train"
    assert len(load_canonical_splits(args, with_eval=False)[0]) == 8
    with pytest.raises(DataValidationError, match="missing image"):
        load_canonical_splits(args, with_eval=True)
    args = DataArguments(dataset="release", dataset_path=str(rel / "cognition_training.json"))
    with pytest.raises(WrongFileError, match="cognition_training.json is a file: a release is read from its folder"):
        load_canonical_splits(args, with_eval=False)
    args = DataArguments(dataset="release", dataset_path=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        load_canonical_splits(args, with_eval=False)


def test_a_held_out_subset_gives_every_trait_its_share_of_a_split_ordered_by_trait():
    from datasets import Dataset

    from cogip.data import balanced_subset

    ds = Dataset.from_dict({"trait": ["A"] * 5 + ["B"] * 2 + ["C"] * 4, "x": list(range(11))})
    assert list(balanced_subset(ds, 7)["x"]) == [0, 1, 2, 5, 6, 7, 8]  # A, B, C in turn, in the split's order
    assert len(balanced_subset(ds, 100)) == 11


def test_a_traits_file_lets_every_command_name_its_traits(tmp_path, capsys):
    from pathlib import Path

    from cogip import traits
    from cogip.traits import get_trait

    traits_file = str(Path(__file__).parents[1] / "configs" / "traits_example.yaml")
    scores = tmp_path / "cognition_scores"
    scores.mkdir()
    (scores / "Coziness_scores.txt").write_text("000000.jpg\t6.250\n")
    (tmp_path / "Coziness").mkdir()
    Image.new("RGB", (28, 28), (200, 120, 40)).save(tmp_path / "Coziness" / "000000.jpg")
    check = ["validate-data", str(scores), "--image-root", str(tmp_path)]
    assert cli(check) == 1 and "unknown trait 'Coziness'" in capsys.readouterr().out
    assert cli([*check, "--traits-file", traits_file]) == 0 and "OK" in capsys.readouterr().out
    assert get_trait("coziness").label_for(6.25) == "snug"
    # each stage registers the file's traits as it reads its arguments (on every rank of a launch)
    from eval.run import parse_args
    from generation.generate import make_parser as generation_parser
    from rl.train_grpo import make_parser as grpo_parser
    from sft_warmstart.train_sft import make_parser as sft_parser

    for parse in (lambda argv: sft_parser().parse_args_and_config(["--use_cpu", "true", *argv]),
                  lambda argv: grpo_parser().parse_args_and_config(["--use_cpu", "true", *argv]),
                  lambda argv: parse_args(["--checkpoint", "m", *argv]),
                  lambda argv: generation_parser().parse_args_and_config(["--device", "cpu", "--pipeline", "tiny",
                                                                          "--traits", "Coziness", *argv])):
        traits._REGISTRY.pop("coziness")
        parse(["--output_dir", str(tmp_path / "out"), "--traits_file", traits_file])
        assert get_trait("Coziness").high == 10

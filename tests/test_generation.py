"""Generation stage on tiny real models (diffusers QwenImagePipeline + tiny Qwen2.5-VL encoders), no mocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.metrics import bootstrap_mean_ci
from generation.encoder_swap import build_swapped_pipeline, load_qwen_image_pipeline
from generation.judging import summarize
from generation.prompt_sets import builtin_prompt_files, collect_prompts, parse_prompt_file
from generation.seed_paired import GeneratedImage, seed_generators
from generation.tiny_checkpoints import ensure_standin_aligned, ensure_tiny_base, ensure_tiny_qwen_image

CALL = {"height": 32, "width": 32, "num_inference_steps": 2, "true_cfg_scale": 1.0, "max_sequence_length": 64,
        "output_type": "np"}


TINY_CONFIG = Path(__file__).parents[1] / "configs" / "tiny" / "generation.yaml"


def _linked_run(tiny_gen_dir: Path, tmp_path: Path,
                names: tuple[str, ...] = ("tiny-base", "tiny-qwen-image", "tiny-aligned-standin")) -> Path:
    """An output folder whose tiny builds link to the module's, so that generate.py reuses them."""
    out = tmp_path / "run"
    out.mkdir()
    for name in names:
        (out / name).symlink_to(tiny_gen_dir / name)
    return out


@pytest.fixture(scope="module")
def tiny_gen_dir(tmp_path_factory):
    """A folder holding tiny-base, tiny-qwen-image and tiny-aligned-standin, laid out as generate.py builds them."""
    root = tmp_path_factory.mktemp("tiny-generation")
    base = ensure_tiny_base(root / "tiny-base")
    ensure_tiny_qwen_image(root / "tiny-qwen-image", base)
    ensure_standin_aligned(root / "tiny-aligned-standin", base)
    return root


@pytest.fixture(scope="module")
def swapped(tiny_gen_dir):
    s = build_swapped_pipeline(tiny_gen_dir / "tiny-qwen-image", tiny_gen_dir / "tiny-aligned-standin",
                               dtype="float32", device="cpu")
    s.pipe.set_progress_bar_config(disable=True)
    return s


def _image(pipe, seed: int, prompt: str = "a red door in a white wall") -> np.ndarray:
    return pipe(prompt=prompt, generator=seed_generators([seed]), **CALL).images[0]


def test_swap_changes_embeddings_seed_reproduces_and_alpha0_is_the_base_pipeline(swapped, tiny_gen_dir):
    pipe, blend = swapped.pipe, swapped.blend
    prompt = "a red door in a white wall"
    blend.set_alpha(0.0)
    base_emb, base_mask = pipe.encode_prompt(prompt, device="cpu", max_sequence_length=64)
    blend.set_alpha(1.0)
    aligned_emb, aligned_mask = pipe.encode_prompt(prompt, device="cpu", max_sequence_length=64)
    assert base_emb.shape == aligned_emb.shape and (base_mask is None) == (aligned_mask is None)
    assert (base_emb - aligned_emb).abs().max() > 1e-3  # the swapped encoder conditions the transformer differently

    a1, a2 = _image(pipe, 3), _image(pipe, 3)
    assert np.array_equal(a1, a2)  # same seed, same encoder: the same image, bit for bit

    blend.set_alpha(0.5)
    half = _image(pipe, 3)
    blend.set_alpha(0.0)  # back from the aligned weights to the stored base ones
    b0 = _image(pipe, 3)
    plain = load_qwen_image_pipeline(tiny_gen_dir / "tiny-qwen-image", "float32")  # untouched base pipeline
    plain.set_progress_bar_config(disable=True)
    assert np.array_equal(b0, _image(plain, 3))  # alpha 0 is exactly the base pipeline
    assert not np.array_equal(b0, a1) and not np.array_equal(half, a1) and not np.array_equal(half, b0)


def test_alpha_blends_weights_linearly(swapped):
    blend = swapped.blend
    blend.set_alpha(0.25)
    name = next(k for k, v in blend.base.items() if v.ndim == 2)
    live = blend.module.state_dict()[name]
    torch.testing.assert_close(live, 0.75 * blend.base[name] + 0.25 * blend.aligned[name])
    assert blend.max_weight_distance() > 0


def test_lora_adapter_is_merged_on_the_fly(tiny_gen_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from cogip.models import load_policy

    model, _ = load_policy(str(tiny_gen_dir / "tiny-base"), dtype="float32")
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = tmp_path / "adapter"
    peft_model = get_peft_model(model, cfg)
    peft_model.peft_config["default"].base_model_name_or_path = str(tiny_gen_dir / "tiny-base")
    peft_model.save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    s = build_swapped_pipeline(tiny_gen_dir / "tiny-qwen-image", adapter, dtype="float32", device="cpu")
    assert s.checkpoints["aligned_encoder"]["adapter_base"] == str(tiny_gen_dir / "tiny-base")
    assert s.blend.max_weight_distance() > 0  # the adapter's deltas are in the aligned weights


def _mismatched(kind: str, tiny_gen_dir, tmp_path):
    from cogip.models import TinySizes, build_tiny_qwen2_5_vl

    if kind == "hidden size":
        return build_tiny_qwen2_5_vl(tmp_path / "narrow", TinySizes(hidden_size=32, vision_hidden_size=32))
    from transformers import AutoProcessor

    other = tmp_path / "other-tokenizer"
    shutil.copytree(tiny_gen_dir / "tiny-base", other)
    processor = AutoProcessor.from_pretrained(other)
    processor.tokenizer.add_tokens(["<|cogalign_extra|>"])
    processor.save_pretrained(other)
    return other


@pytest.mark.parametrize("kind", ["hidden size", "tokenizer"])
def test_mismatched_encoder_is_refused_before_any_image(kind, tiny_gen_dir, tmp_path, capsys):
    from generation.generate import cli_main

    bad = _mismatched(kind, tiny_gen_dir, tmp_path)
    out = _linked_run(tiny_gen_dir, tmp_path, ("tiny-base", "tiny-qwen-image"))
    assert cli_main(["--config", "configs/tiny/generation.yaml", "--output_dir", str(out),
                     "--aligned_model", str(bad)]) == 2
    assert kind in capsys.readouterr().err
    assert not (out / "images").exists() and not (out / "generation.json").exists()


def test_a_missing_model_folder_or_a_bad_value_is_refused_before_anything_is_built(tmp_path, capsys):
    import re

    from generation.generate import cli_main

    out = tmp_path / "run"
    tiny = ["--config", "configs/tiny/generation.yaml", "--output_dir", str(out)]
    assert cli_main([*tiny, "--aligned_model", str(tmp_path / "nope")]) == 2
    assert re.search("error: --aligned_model .*/nope: no such model folder", capsys.readouterr().err)
    assert cli_main([*tiny, "--alphas", "0", "1.5"]) == 2
    assert "alphas must lie in [0, 1]" in capsys.readouterr().err
    assert cli_main([*tiny, "--pipeline", "Qwen/Qwen-Image"]) == 2
    assert "aligned_model is required" in capsys.readouterr().err
    assert cli_main([*tiny, "--alphas", "0.501", "0.504"]) == 2  # one file name, alpha0.50, for both
    assert "first two decimals" in capsys.readouterr().err
    assert cli_main([*tiny, "--images_per_batch", "0"]) == 2
    assert "images_per_batch must be at least 1" in capsys.readouterr().err
    assert cli_main([*tiny, "--judge_prompts", str(tmp_path)]) == 2  # before any image, not after them all
    assert "holds no <Trait>/<Trait>_messages.json to take the questions from" in capsys.readouterr().err
    for flags, message in ((["--height", "30"], "height must be a positive multiple of 16"),
                           (["--traits", "Aesthetic"], "unknown trait 'Aesthetic'"),
                           (["--n_boot", "-5"], "n_boot must be at least 0"),
                           (["--device", "gpu"], "--device: 'gpu' is not a device")):
        assert cli_main([*tiny, *flags]) == 2 and message in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"  # values from a config file, which argparse does not check against choices
    bad.write_text((Path("configs/tiny/generation.yaml")).read_text() + "unparsable: worst\n")
    assert cli_main(["--config", str(bad), "--output_dir", str(out)]) == 2
    assert "unparsable: 'worst' is not one of midpoint, drop" in capsys.readouterr().err
    assert not (out / "tiny-base").exists()


def test_tiny_config_end_to_end(tiny_gen_dir, tmp_path, capsys):
    from release_fixture import TRAITS, write_release

    from cogip.data import release_prompts
    from generation.generate import cli_main

    out, config = _linked_run(tiny_gen_dir, tmp_path), TINY_CONFIG
    release, _ = write_release(tmp_path / "release", {t: 1 for t in TRAITS}, {t: 2 for t in TRAITS}, images=False)
    assert cli_main(["--config", str(config), "--output_dir", str(out), "--judge_prompts", str(release)]) == 0
    gen = json.loads((out / "generation.json").read_text())
    assert len(gen["images"]) == 4 * 1 * 2 * 3  # traits x prompts x seeds x alphas (0, 0.5, 1)
    assert gen["alphas"] == [0.0, 0.5, 1.0] and gen["seeds"] == [0, 1]
    assert gen["checkpoints"]["aligned_encoder"]["path"].endswith("tiny-aligned-standin")
    assert any("stand-in" in n for n in gen["notes"])
    assert all((out / r["file"]).exists() for r in gen["images"])
    assert len(list((out / "grids").glob("*.png"))) == 4
    judgement = json.loads((out / "judgement.json").read_text())
    assert set(judgement["traits"]) == {"Aesthetics", "Funniness", "Emotional_Valence", "Memorability"}
    assert len(judgement["images"]) == len(gen["images"]) and judgement["questions"] == str(release)
    assert judgement["asked"] == release_prompts(release)  # what the judge was given, image by image
    assert all(set(j) == {"file", "score", "text"} for j in judgement["images"])
    assert "win rate vs base" in (out / "judgement.md").read_text()
    assert "Judged by" in capsys.readouterr().out  # the rich table


def test_a_run_started_again_generates_only_the_images_it_lacks(tiny_gen_dir, tmp_path, caplog):
    import logging

    from generation.generate import cli_main

    out, config = _linked_run(tiny_gen_dir, tmp_path), TINY_CONFIG
    argv = ["--config", str(config), "--output_dir", str(out), "--judge", "false", "--traits", "Funniness",
            "--alphas", "0", "1"]
    caplog.set_level(logging.INFO, logger="cogalign.generation")

    def written() -> dict[str, int]:
        return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}

    assert cli_main(argv) == 0
    first = written()
    assert len(first) == 1 * 2 * 2  # prompts x seeds x alphas
    assert cli_main(argv) == 0
    assert written() == first and "reused 4 of 4 images" in caplog.text
    lost = sorted(first)[0]  # a run killed before this image's pipeline call finished
    (out / lost).unlink()
    caplog.clear()
    assert cli_main(argv) == 0
    again = written()
    assert again.keys() == first.keys() and "reused 2 of 4 images" in caplog.text  # its call made both seeds
    assert sorted(f for f in first if again[f] != first[f]) == sorted(f for f in first if f.rsplit("/", 1)[0] ==
                                                                lost.rsplit("/", 1)[0] and "alpha0.00" in f)
    caplog.clear()
    assert cli_main([*argv, "--num_inference_steps", "3"]) == 0  # other sampling settings: every image again
    assert all(t != first[f] for f, t in written().items()) and "reused" not in caplog.text
    assert not [p for p in (out / "images").rglob(".*")]  # every file was moved into place whole


def test_the_judge_image_size_is_the_one_the_processor_pins(tiny_gen_dir):
    from cogip.models import load_processor
    from generation.judging import judge_side

    processor = load_processor(tiny_gen_dir / "tiny-base")  # min = max pixels 3136 (transformers 5: a SizeDict)
    assert judge_side(processor) == 56 and judge_side(processor, override=112) == 112


def test_summary_counts_wins_per_seed_pair():
    recs, judged = [], []
    for seed, (base, aligned) in enumerate([(4.0, 6.0), (5.0, 7.0), (6.0, 5.0), (5.0, None)]):
        for alpha, score in ((0.0, base), (1.0, aligned)):
            f = f"images/Aesthetics/p/seed{seed}_alpha{alpha:.2f}.png"
            recs.append(GeneratedImage("Aesthetics", "p", "text", seed, alpha, f))
            judged.append({"file": f, "score": score, "text": ""})
    t = summarize(recs, judged, "midpoint", n_boot=200)["traits"]["Aesthetics"]
    assert t["vs_base"]["1"]["win_rate"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)  # unparsable -> 5.0, a tie
    assert t["by_alpha"]["1"]["parse_rate"] == 0.75
    dropped = summarize(recs, judged, "drop", n_boot=200)["traits"]["Aesthetics"]["vs_base"]["1"]
    assert dropped["pairs"] == 3 and dropped["win_rate"] == pytest.approx(2 / 3)
    # One prompt, four seeds: no interval (its seeds do not vary independently of the prompt); none at n_boot 0.
    assert t["vs_base"]["1"]["mean_diff_ci"] == [None, None] and t["by_alpha"]["0"]["ci"] == [None, None]
    assert summarize(recs, judged, "midpoint", n_boot=0)["traits"]["Aesthetics"]["by_alpha"]["0"]["ci"] == [None, None]


def test_summary_intervals_resample_prompts_not_seeds():
    recs, judged = [], []
    for prompt, gain in enumerate([2.0, -1.0, 3.0, 0.0, 1.0]):  # each prompt's seeds gain alike
        for seed in range(4):
            for alpha, score in ((0.0, 5.0), (1.0, 5.0 + gain)):
                f = f"images/Aesthetics/p{prompt}/seed{seed}_alpha{alpha:.2f}.png"
                recs.append(GeneratedImage("Aesthetics", f"p{prompt}", "text", seed, alpha, f))
                judged.append({"file": f, "score": score, "text": ""})
    lo, hi = summarize(recs, judged, "midpoint", n_boot=2000)["traits"]["Aesthetics"]["vs_base"]["1"]["mean_diff_ci"]
    diffs = np.repeat([2.0, -1.0, 3.0, 0.0, 1.0], 4)
    seeds_alone = bootstrap_mean_ci(diffs, 2000)
    assert lo <= 1.0 <= hi and hi - lo > 1.5 * (seeds_alone[1] - seeds_alone[0])


def test_prompt_sets_ship_for_every_trait_and_bad_files_are_named(tmp_path):
    assert list(builtin_prompt_files()) == ["Aesthetics", "Funniness", "Emotional_Valence", "Memorability"]
    user = tmp_path / "mine.json"
    user.write_text(json.dumps({"trait": "valence", "prompts": ["a sunny beach", {"id": "x", "text": "rain"}]}))
    got = collect_prompts(None, [str(user)], None)
    assert [(p.trait, p.id) for p in got] == [("Emotional_Valence", "p0"), ("Emotional_Valence", "x")]
    more = tmp_path / "more.json"  # a second file for the same trait: the limit counts prompts per trait, not file
    more.write_text(json.dumps({"trait": "valence", "prompts": [{"id": "y", "text": "snow"}]}))
    assert [p.id for p in collect_prompts(None, [str(user), str(more)], 2)] == ["p0", "x"]
    with pytest.raises(ValueError, match=r"holds prompts for the trait\(s\) \['Aesthetics'\]"):
        collect_prompts(["valence", "Aesthetics"], [str(user)], None)  # a trait asked for, without prompts
    with pytest.raises(ValueError, match="bad.json.*unknown trait"):
        parse_prompt_file(json.dumps({"trait": "nope", "prompts": ["a"]}), "bad.json")

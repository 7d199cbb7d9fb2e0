"""Settings of a generation run (``generate.py --config file.yaml`` fills them; every field is also a flag)."""

from dataclasses import dataclass, field

from cogip.traits import traits_file_field


@dataclass
class GenerationArgs:
    # Models
    pipeline: str = field(default="Qwen/Qwen-Image", metadata={
        "help": "Qwen-Image checkpoint: hub id or a folder saved with QwenImagePipeline.save_pretrained; 'tiny' "
                "builds a tiny random one (CPU) into <output_dir>/tiny-qwen-image"})
    aligned_model: str | None = field(default=None, metadata={
        "help": "the aligned policy: full weights (GRPO) or a LoRA adapter folder (SFT; merged on load). Required, "
                "except with pipeline 'tiny', where a stand-in (the tiny base with weight noise) is built"})
    base_encoder: str | None = field(default=None, metadata={
        "help": "the encoder the aligned one is compared with (unset: the pipeline's own text encoder)"})
    judge_model: str | None = field(default=None, metadata={
        "help": "cognition model that scores the images (unset: the aligned policy); any checkpoint or adapter"})

    # Prompts and seeds
    traits: list[str] | None = field(default=None, metadata={"help": "traits to generate for (unset: all)"})
    prompt_files: list[str] | None = field(default=None, metadata={
        "help": "prompt set JSON files ({\"trait\": ..., \"prompts\": [...]}); default: generation/prompts/*.json"})
    prompts_per_trait: int | None = field(default=None, metadata={"help": "use only the first N prompts per trait"})
    images_per_prompt: int = field(default=4, metadata={
        "help": "seeds per prompt; every seed is used for every alpha"})
    seed: int = field(default=0, metadata={"help": "seeds are seed, seed+1, ..., seed+images_per_prompt-1"})
    alphas: list[float] = field(default_factory=lambda: [0.0, 1.0], metadata={
        "help": "trait-strength knob: encoder weights (1-alpha)*base + alpha*aligned; 0 and 1 are always added"})

    # Sampling
    height: int = field(default=1024, metadata={"help": "image height (a multiple of 16)"})
    width: int = field(default=1024, metadata={"help": "image width (a multiple of 16)"})
    num_inference_steps: int = field(default=50, metadata={"help": "denoising steps"})
    true_cfg_scale: float = field(default=4.0, metadata={
        "help": "classifier-free guidance scale (Qwen-Image's true CFG; needs negative_prompt, off at <= 1)"})
    negative_prompt: str | None = field(default=" ", metadata={"help": "negative prompt for true CFG"})
    max_sequence_length: int = field(default=512, metadata={"help": "prompt tokens kept by the pipeline"})
    images_per_batch: int | None = field(default=None, metadata={
        "help": "seeds sampled in one pipeline call (unset: all of a prompt's); lower it to save GPU memory"})

    # Placement
    dtype: str = field(default="bfloat16", metadata={"help": "float32 | bfloat16 | float16",
                                                      "choices": ["float32", "bfloat16", "float16"]})
    device: str = field(default="cuda", metadata={"help": "cuda | cpu | cuda:1 ..."})
    cpu_offload: bool = field(default=False, metadata={
        "help": "diffusers model CPU offload: each component moves to the GPU only while it runs"})

    # Judging
    judge: bool = field(default=True, metadata={"help": "score every image with the judge model"})
    judge_decoding: str = field(default="expected", metadata={"help": "greedy | expected (see eval/predict.py)",
                                                              "choices": ["greedy", "expected"]})
    judge_prompt_style: str = field(default="full", metadata={"help": "full | short (short for tiny models)",
                                                              "choices": ["full", "short"]})
    judge_prompts: str | None = field(default=None, metadata={
        "help": "a CogIP-Bench release folder: ask the judge each trait's question as the release's test split "
                "words it, as a model trained on the release was asked (unset: cogalign's own wording, "
                "judge_prompt_style)"})
    judge_image_size: int | None = field(default=None, metadata={
        "help": "resize images to this square size for the judge (unset: what its processor fixes, else as is)"})
    judge_batch_size: int = field(default=8, metadata={"help": "images per judge batch"})
    unparsable: str = field(default="midpoint", metadata={
        "help": "judge answers without a score: 'midpoint' (scored as the middle of the range) or 'drop' (the pair "
                "is left out); either way the parse rate is reported", "choices": ["midpoint", "drop"]})
    n_boot: int = field(default=2000, metadata={"help": "bootstrap resamples for the intervals"})

    # Output
    output_dir: str = field(default="runs/generation", metadata={"help": "where images, grids and JSON go"})
    grid_cell_size: int = field(default=256, metadata={"help": "pixel size of one image in the comparison grids"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})
    resume: bool = field(default=True, metadata={
        "help": "reuse the images of an earlier run in output_dir made with the same models and sampling settings "
                "(images/manifest.json); false generates every image again"})
    traits_file: str | None = traits_file_field()

    def __post_init__(self) -> None:
        from cogip.data_sources import check_at_least, check_choices, check_device, check_traits
        from cogip.traits import load_traits_file

        load_traits_file(self.traits_file)
        check_choices(self)  # values from --config are not checked by argparse: all of them now, before any image
        check_device("device", self.device)
        check_traits("traits", self.traits)
        for name in ("height", "width"):
            if getattr(self, name) < 16 or getattr(self, name) % 16:
                raise ValueError(f"{name} must be a positive multiple of 16 (the VAE and the 2x2 patches), not "
                                 f"{getattr(self, name)}")
        check_at_least(self, {"n_boot": 0, "images_per_prompt": 1, "images_per_batch": 1, "prompts_per_trait": 1})
        if not self.aligned_model and self.pipeline != "tiny":
            raise ValueError("aligned_model is required (an SFT adapter folder or a GRPO checkpoint); only pipeline "
                             "'tiny' builds a stand-in")
        bad = [a for a in self.alphas if not 0.0 <= float(a) <= 1.0]
        if bad:
            raise ValueError(f"alphas must lie in [0, 1] (0 = base encoder, 1 = aligned), not {bad}")
        names = sorted(f"{float(a):.2f}" for a in {0.0, 1.0, *self.alphas})
        if len(set(names)) < len(names):  # image files are named by alpha to two decimals
            raise ValueError(f"alphas must differ in their first two decimals, not {self.alphas}")

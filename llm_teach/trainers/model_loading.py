"""Loading the models a trainer trains and learns from: the student (full, LoRA base or QLoRA
4-bit base), a frozen local teacher or a scoring teacher backend, and the checks that make
token-level distillation meaningful (a shared tokenizer)."""

from __future__ import annotations

from llm_teach.errors import UserError
from llm_teach.models import first_line
from llm_teach.trainers.train_config import TrainConfig

def load_model(spec: str, dtype: str, **kwargs):
    """Load a causal LM for training. Call it AFTER the TRL config exists: under DeepSpeed
    ZeRO-3, `from_pretrained` must see that config to partition the weights while loading."""
    from trl.trainer.utils import create_model_from_path

    from llm_teach.models import default_device, prepare, torch_dtype

    try:
        # "auto" is resolved here (bf16 with a GPU, fp32 without), not by from_pretrained's own "auto".
        return create_model_from_path(prepare(spec), dtype=torch_dtype(dtype, default_device()), **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model '{spec}': {first_line(exc)}") from None


def load_student(cfg: TrainConfig):
    if not cfg.qlora:
        return load_model(cfg.model, cfg.dtype)
    # QLoRA (written for GPUs, not run on this project's CPU test machine): 4-bit NF4 base on
    # this rank's GPU; TRL sees `is_loaded_in_4bit` and prepares it for the LoRA adapter.
    import torch
    from accelerate import PartialState
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise UserError("qlora needs a CUDA GPU (bitsandbytes 4-bit weights)")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    return load_model(cfg.model, "bfloat16", quantization_config=quant,
                      device_map={"": PartialState().local_process_index})


def load_teacher(spec: str, dtype: str):
    """A frozen local teacher: eval mode, no gradients."""
    return load_model(spec, dtype).eval().requires_grad_(False)


TEACHER_URL_HELP = ("teacher_backend=openai: server URL, e.g. http://127.0.0.1:8000/v1, or several comma-separated "
                    "(a fleet: least-loaded first, a failing server cooled down) (never with a key in it; "
                    "user:password@ is HTTP Basic auth, only without teacher_api_key_env).")
TEACHER_KEY_HELP = ("teacher_backend=openai: NAME of the environment variable holding the server's API key "
                    "(default: OPENAI_API_KEY when set). The key is never recorded.")


def check_teacher_url(cfg) -> None:
    """The credentials rule (`llm_teach.credentials`) for kdrl's and distill's teacher_base_url,
    as a config check: a ValueError naming the key, before anything loads."""
    from llm_teach.credentials import check_auth, check_url

    try:
        check_url(cfg.teacher_base_url, "teacher_api_key_env")
        check_auth(cfg.teacher_base_url, cfg.teacher_api_key_env, "teacher_api_key_env")
    except ValueError as exc:
        raise ValueError(f"teacher_base_url: {exc}") from None


def make_teacher(cfg, student_tokenizer):
    """The teacher of kdrl/distill from a config's `teacher`, `teacher_backend`,
    `teacher_base_url` and `teacher_dtype`: with backend hf a frozen local model (after checking
    it shares the student's tokenizer), otherwise a `Backend` that can `score()`."""
    if cfg.teacher_backend == "hf":
        from llm_teach.models import load_tokenizer

        check_same_tokenizer(student_tokenizer, load_tokenizer(cfg.teacher), cfg.model, cfg.teacher)
        return load_teacher(cfg.teacher, cfg.teacher_dtype)
    from llm_teach.backends import BackendOptions, make_backend

    try:
        backend = make_backend(cfg.teacher, BackendOptions(backend=cfg.teacher_backend, base_url=cfg.teacher_base_url,
                                                           api_key_env=cfg.teacher_api_key_env,
                                                           dtype=cfg.teacher_dtype, tokenizer=cfg.model))
    except ModuleNotFoundError as exc:
        raise UserError(f"teacher backend '{cfg.teacher_backend}' is not available here ({exc.name} missing)") from None
    if not hasattr(backend, "score"):
        raise UserError(f"teacher backend '{cfg.teacher_backend}' cannot score completions")
    return backend


def prepare_frozen(model, trainer):
    """Place a frozen helper model (teacher) the way TRL places its reference model."""
    from trl.models.utils import prepare_deepspeed

    if trainer.is_deepspeed_enabled:
        return prepare_deepspeed(model, trainer.accelerator)
    return trainer.accelerator.prepare_model(model, evaluation_mode=True)


def check_same_tokenizer(student_tok, teacher_tok, student: str, teacher: str) -> None:
    """KDRL and online distillation score the STUDENT's token ids with the teacher, which is
    only meaningful when both tokenizers map ids to the same strings."""
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise UserError(
            f"teacher '{teacher}' has a different tokenizer than student '{student}' "
            f"({len(teacher_tok)} vs {len(student_tok)} tokens): token-level distillation needs a shared "
            "tokenizer; use a teacher from the same model family, or sequence-level KD (sft on teacher outputs)")

"""Loading causal LMs from local folders, converting the offline GGUF once, tiny test models,
and the parameter bookkeeping shared by gradients, JVPs and training."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from infdist_core.config import parse_grad_params
from infdist_core.data.atomic import atomic_path

log = logging.getLogger(__name__)


def resolve_device(device: str | None = None) -> torch.device:
    """``cuda`` when available unless told otherwise, else ``cpu``."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """De-quantise a GGUF checkpoint into a plain Hugging Face folder (safetensors + tokenizer).

    ``save_pretrained`` refuses a GGUF-loaded model, so the config is rebuilt without its
    ``quantization_config`` and the de-quantised state dict is loaded into a fresh model.
    Written to a temporary folder, then renamed.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"{gguf_path}: GGUF file not found")
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    src = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    cfg_dict = src.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    model_type = cfg_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    with atomic_path(out_dir, folder=True) as tmp:  # an existing conversion is kept (same GGUF, same result)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return out_dir


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise ValueError(f"{path}: the tokenizer has no chat template")
    return tok


def load_model(path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32):
    """A causal LM from a local folder, in eval mode, with eager attention.

    Eager attention because PyTorch's fused SDPA kernels have no forward-mode AD on CPU (JVPs).
    """
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a Hugging Face model folder (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="eager")
    return model.to(resolve_device(device)).eval()


def tiny_llama(vocab_size: int, seed: int = 0, n_layers: int = 4, hidden: int = 32, pad_token_id: int | None = None):
    """A randomly initialised Llama small enough for unit tests (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        attn_implementation="eager",
    )
    with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def select_parameters(model: torch.nn.Module, pattern: str | None = None) -> list[tuple[str, torch.nn.Parameter]]:
    """Named trainable parameters whose name matches the regex ``pattern`` (all when None)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if pattern:
        rx = re.compile(pattern)
        named = [(n, p) for n, p in named if rx.search(n)]
        if not named:
            raise ValueError(f"no parameter name matches {pattern!r} (e.g. {model_param_names(model)[:3]})")
    return named


def model_param_names(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]


def decoder_layers(model) -> torch.nn.ModuleList:
    """The transformer blocks of a Llama-style causal LM."""
    try:
        return model.model.layers
    except AttributeError as err:
        raise TypeError(f"{type(model).__name__}: expected a Llama-style model with .model.layers") from err


def block_pattern(model, which: str) -> str:
    """Regex of parameter names for ``which`` in {'all', 'blocks', 'down_proj', 'last:N', 'first:N'}."""
    n = len(decoder_layers(model))
    kind, count = parse_grad_params(which)
    if kind == "all":
        return ""
    if kind == "blocks":
        return r"layers\.\d+\."
    if kind == "down_proj":
        return r"down_proj"
    if count > n:
        raise ValueError(f"parameter subset {which!r}: the model has {n} blocks, so N must be in 1..{n}")
    idx = range(n - count, n) if kind == "last" else range(count)
    return r"layers\.(" + "|".join(map(str, idx)) + r")\."

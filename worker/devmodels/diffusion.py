"""Tiny Stable Diffusion pipeline: 2-level UNet, 2-level VAE, 2-layer CLIP text encoder, DDIM scheduler."""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from gpuq.worker.devmodels._save import quiet_progress, seeded
from gpuq.worker.devmodels.tokenizing import clip_tokenizer, write_vocab_files

TEXT_DIM = 32
LATENT_SIZE = 32  # with a 2-level VAE (scale factor 2) the default image is 64x64
GROUPS = 2


def _text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval()


def _unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=GROUPS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
    ).eval()


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=GROUPS,
        sample_size=LATENT_SIZE * 2,
    ).eval()


def _scheduler() -> DDIMScheduler:
    # Stable Diffusion v1's own schedule, so the tiny pipeline steps exactly like the real one.
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def build_tiny_sd(path: Path) -> Path:
    """Build a tiny StableDiffusionPipeline (64x64 output, no safety checker) into ``path``."""
    tokenizer = clip_tokenizer()
    with seeded():
        vae, text_encoder, unet = _vae(), _text_encoder(tokenizer), _unet()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path.mkdir(parents=True, exist_ok=True)
    with quiet_progress():
        pipe.save_pretrained(path)
    write_vocab_files(tokenizer, path / "tokenizer")
    return path

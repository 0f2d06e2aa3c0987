"""A tiny Stable Diffusion pipeline built from configs and saved like a real model folder.

Like diffusers' own tests: a 2-block UNet, a 2-block VAE, a 2-layer CLIP text
encoder and a CLIP tokenizer from a vocab.json + merges.txt written here.
Nothing is downloaded.
"""

import json
import string
from pathlib import Path

import torch


def tokenizer_files(folder: Path) -> tuple[Path, Path]:
    tokens = ["<|startoftext|>", "<|endoftext|>", "!"]
    chars = list(string.ascii_lowercase + string.digits + ",.-'")
    tokens += chars + [c + "</w>" for c in chars]
    vocab = folder / "vocab.json"
    merges = folder / "merges.txt"
    vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    merges.write_text("#version: 0.2\n")
    return vocab, merges


def _components(folder: Path, seed: int, **unet_extra) -> dict:
    """VAE, text encoder, tokenizer, UNet and scheduler shared by the tiny pipelines."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=4, attention_head_dim=4, **unet_extra)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4,
                        sample_size=32)
    vocab, merges = tokenizer_files(folder)
    # Positional: transformers 4 names them vocab_file/merges_file, 5 vocab/merges (and ignores the old names).
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16,
                                                intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                                                vocab_size=len(json.loads(vocab.read_text())),
                                                max_position_embeddings=16))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet, "scheduler": scheduler}


def build_tiny_sd(folder: Path, seed: int = 0, variant: str | None = None) -> Path:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**_components(folder, seed), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    model = folder / "tiny-sd"
    pipe.save_pretrained(model, variant=variant)
    return model


def build_tiny_unclip(folder: Path, seed: int = 0) -> Path:
    """Stable unCLIP image variations: the UNet also takes the (noised) CLIP image
    embedding of the source image as a class embedding."""
    from diffusers import DDPMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    embed = 16
    parts = _components(folder, seed, class_embed_type="projection", projection_class_embeddings_input_dim=2 * embed)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=embed, projection_dim=embed, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        intermediate_size=32, patch_size=8))
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=32, size=32), image_encoder=image_encoder.eval(),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=embed).eval(),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"), **parts)
    model = folder / "tiny-unclip"
    pipe.save_pretrained(model)
    return model

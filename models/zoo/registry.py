"""The registry of the zoo: every model by name, with what a profile needs besides its layers.

Parameter counts are the exact counts of the code (`sum(p.numel())`, tied weights once); the published
figures they are tested against (within 1 %) and their sources are in `PUBLISHED_PARAMS`. Dataset sizes and
their sources are beside each constant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from torch import nn

from firesim.errors import UserError
from models.zoo import cnn, transformers

__all__ = ["MODELS", "PUBLISHED_PARAMS", "ModelSpec", "build", "get_spec", "list_models"]

IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012 training set
CIFAR10_TRAIN_IMAGES = 50_000
# OpenWebText (the open replica of GPT-2's WebText) in GPT-2 BPE tokens: nanoGPT data/openwebtext/prepare.py
# reports train.bin = 9,035,582,198 tokens.
OPENWEBTEXT_TOKENS = 9_035_582_198
# BERT's BooksCorpus (800 M words) + English Wikipedia (2,500 M words); Devlin et al. 2019, A.2: 1 M steps of
# 256 x 512 = 128,000 tokens is "approximately 40 epochs over the 3.3 billion word corpus", i.e. one epoch is
# taken as 3.3 G tokens.
BERT_CORPUS_TOKENS = 3_300_000_000
# Llama 2: "trained on 2 trillion tokens" (Touvron et al. 2023, Table 1); Llama 3: "over 15T tokens"
# (Meta, "Introducing Meta Llama 3", 2024). One "epoch" here is the whole pretraining run.
LLAMA2_TOKENS = 2_000_000_000_000
LLAMA3_TOKENS = 15_000_000_000_000

# Published parameter counts, each with its source; tests hold the code's exact count within 1 % of these.
PUBLISHED_PARAMS: Mapping[str, tuple[float, str]] = MappingProxyType({
    "nin": (7.6e6, "REFERENCE.md (Caffe model zoo NiN)"),
    "alexnet": (61.1e6, "torchvision AlexNet docs: 61,100,840"),
    "vgg16": (138.4e6, "torchvision VGG16 docs: 138,357,544"),
    "vgg19": (143.7e6, "torchvision VGG19 docs: 143,667,240"),
    "resnet50": (25.6e6, "torchvision ResNet50 docs: 25,557,032"),
    "gpt2": (124e6, "openai/gpt-2 download_model.py model names 124M/355M/774M/1558M"),
    "gpt2_medium": (355e6, "openai/gpt-2 download_model.py: 355M"),
    "gpt2_large": (774e6, "openai/gpt-2 download_model.py: 774M"),
    "gpt2_xl": (1558e6, "openai/gpt-2 download_model.py: 1558M"),
    "bert_base": (110e6, "Devlin et al. 2019, section 3: BERT-BASE 110M"),
    # Devlin et al. quote "340M", a rounded figure: the published config (24 layers, d 1024, vocabulary 30522,
    # 512 positions) has 335.1 M in the encoder + pooler and 336.2 M with the pretraining heads, as the
    # Hugging Face bert-large-uncased model card says ("336M parameters"); that is the figure tested.
    "bert_large": (336e6, "Hugging Face bert-large-uncased model card: 336M (Devlin et al.: ~340M)"),
    "vit_b16": (86e6, "Dosovitskiy et al. 2021, Table 1: ViT-Base 86M"),
    "llama2_7b": (6.74e9, "meta-llama/Llama-2-7b-hf: 6,738,415,616 (safetensors total)"),
    "llama3_8b": (8.03e9, "meta-llama/Meta-Llama-3-8B: 8,030,261,248 (safetensors total)"),
})


@dataclass(frozen=True)
class ModelSpec:
    """What a profile needs to know about a registered model besides its layers.

    Image models take one (C, H, W) float tensor per sample. Sequence models take `seq_len` token ids per
    sample (default `seq_len`, at most `max_seq_len` where learned position embeddings set a limit); an epoch
    is `train_tokens` tokens, so `samples_per_epoch` depends on the sequence length.
    """

    name: str
    builder: Callable[..., nn.Module]
    sample: Literal["image", "sequence"]
    input_shape: tuple[int, ...]  # image: (C, H, W); sequence: (default seq_len,)
    num_classes: int  # classes, or the vocabulary of a language-model head
    dataset: str
    description: str
    train_images: int | None = None  # image models: samples per epoch
    train_tokens: int | None = None  # sequence models: tokens per epoch
    seq_len: int | None = None  # tokens per sample (ViT: fixed by the image size)
    max_seq_len: int | None = None

    def input_for(self, seq_len: int | None = None) -> tuple[tuple[int, ...], bool]:
        """(one sample's input shape, whether it holds token ids) at `seq_len` (None: the default)."""
        if self.sample == "image":
            if seq_len is not None and seq_len != self.seq_len:
                raise UserError(f"seq-len: {self.name} takes images; its sequence length is set by the image size")
            return self.input_shape, False
        seq_len = self.seq_len if seq_len is None else seq_len
        if seq_len < 1 or (self.max_seq_len is not None and seq_len > self.max_seq_len):
            raise UserError(f"seq-len: {self.name} takes 1 to {self.max_seq_len} tokens, got {seq_len}")
        return (seq_len,), True

    def samples_per_epoch(self, seq_len: int | None = None) -> int:
        """Images per epoch, or the epoch's tokens in sequences of `seq_len` (whole sequences only)."""
        if self.train_tokens is None:
            assert self.train_images is not None
            return self.train_images
        return self.train_tokens // (self.seq_len if seq_len is None else seq_len)


def _imagenet(name: str, builder: Callable[..., nn.Module], description: str, **extra) -> ModelSpec:
    return ModelSpec(name, builder, "image", (3, 224, 224), 1000, "imagenet-1k", description,
                     train_images=IMAGENET_TRAIN_IMAGES, **extra)


def _cifar(name: str, builder: Callable[..., nn.Module], description: str) -> ModelSpec:
    return ModelSpec(name, builder, "image", (3, 32, 32), 10, "cifar-10", description,
                     train_images=CIFAR10_TRAIN_IMAGES)


def _gpt2(name: str, builder: Callable[..., nn.Module], description: str) -> ModelSpec:
    return ModelSpec(name, builder, "sequence", (1024,), 50257, "openwebtext", description,
                     train_tokens=OPENWEBTEXT_TOKENS, seq_len=1024, max_seq_len=1024)


def _bert(name: str, builder: Callable[..., nn.Module], description: str) -> ModelSpec:
    # Sequence 128 by default: BERT pretrains "with sequence length of 128 for 90% of the steps" and 512 for
    # the rest (Devlin et al. 2019, A.2), and the single-GPU figures it is calibrated on are phase 1 (128).
    return ModelSpec(name, builder, "sequence", (128,), 30522, "bookscorpus+wikipedia", description,
                     train_tokens=BERT_CORPUS_TOKENS, seq_len=128, max_seq_len=512)


def _llama(name: str, builder: Callable[..., nn.Module], description: str, vocab: int, dataset: str, tokens: int,
           context: int) -> ModelSpec:
    # Rotary positions set no hard limit; `context` (the training context) is the default and the maximum.
    return ModelSpec(name, builder, "sequence", (context,), vocab, dataset, description,
                     train_tokens=tokens, seq_len=context, max_seq_len=context)


MODELS: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in (
    _imagenet("nin", cnn.nin, "Network-in-Network (Caffe model zoo), trained in the FireCaffe paper"),
    _imagenet("alexnet", cnn.alexnet, "AlexNet, ungrouped torchvision layout"),
    _imagenet("googlenet", cnn.googlenet, "GoogLeNet / Inception v1 (BVLC Caffe), trained in the FireCaffe paper"),
    _imagenet("vgg16", cnn.vgg16, "VGG-16 (config D)"),
    _imagenet("vgg19", cnn.vgg19, "VGG-19 (config E)"),
    _imagenet("resnet50", cnn.resnet50, "ResNet-50 v1.5 (torchvision layout)"),
    _imagenet("vit_b16", transformers.vit_b16, "ViT-B/16 at 224x224 (timm layout, DeiT recipe: no dropout)",
              seq_len=197),
    _gpt2("gpt2", transformers.gpt2, "GPT-2 small, 124M, tied embeddings"),
    _gpt2("gpt2_medium", transformers.gpt2_medium, "GPT-2 medium, 355M"),
    _gpt2("gpt2_large", transformers.gpt2_large, "GPT-2 large, 774M"),
    _gpt2("gpt2_xl", transformers.gpt2_xl, "GPT-2 XL, 1.5B"),
    _bert("bert_base", transformers.bert_base, "BERT-base with pretraining heads (masked LM + next sentence)"),
    _bert("bert_large", transformers.bert_large, "BERT-large with pretraining heads (masked LM + next sentence)"),
    _llama("llama2_7b", transformers.llama2_7b, "Llama-2-7B", 32000, "llama2-pretraining (2T tokens)", LLAMA2_TOKENS,
           4096),
    _llama("llama3_8b", transformers.llama3_8b, "Llama-3-8B (grouped-query attention)", 128256,
           "llama3-pretraining (15T tokens)", LLAMA3_TOKENS, 8192),
    _cifar("small_cnn", cnn.small_cnn, "Tiny CNN for fast multi-process tests"),
    _cifar("cifar_nin", cnn.cifar_nin, "Network-in-Network, CIFAR-10 version"),
    _cifar("resnet18_cifar", cnn.resnet18_cifar, "ResNet-18 for 32x32 inputs, width 64"),
    _cifar("resnet18_cifar_w16", functools.partial(cnn.resnet18_cifar, width=16),
           "ResNet-18 for 32x32 inputs at width 16: cheap enough for real 2-core runs"),
)})
"""Every registered model by name; read-only."""


def list_models() -> list[str]:
    """Names of the registered models, in registry order (ImageNet models first)."""
    return list(MODELS)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; unknown names raise `UserError` listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"model: unknown name {name!r}; known: {', '.join(MODELS)}") from None


def build(name: str, **kwargs) -> nn.Module:
    """A fresh model by registry name; `kwargs` go to its builder (e.g. `num_classes`, `width`).

    Build under `with torch.device("meta"):` to get the structure without allocating weights.
    """
    return get_spec(name).builder(**kwargs)

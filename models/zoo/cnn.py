"""The convolutional networks of the zoo (the FireCaffe era), in plain PyTorch.

torchvision has no CPU build on our machines, so every network is written here. The ImageNet models
follow the reference definitions whose parameter counts and multiply-adds the literature quotes
(see REFERENCE.md): NiN and GoogLeNet as in the Caffe model zoo the FireCaffe paper trained
(ceil-mode pooling, biases, LRN), AlexNet / VGG / ResNet-50 as in torchvision. The CIFAR-size nets are
small enough for real multi-process data-parallel runs on a 2-core CPU.

Build by name with `models.zoo.build("googlenet")`; to get a weightless model for profiling, build it under
`with torch.device("meta"):`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import nn

from firesim.errors import UserError

__all__ = [
    "Residual",
    "alexnet",
    "cifar_nin",
    "googlenet",
    "nin",
    "resnet18_cifar",
    "resnet50",
    "small_cnn",
    "vgg16",
    "vgg19",
]


# ---------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------


class Residual(nn.Module):
    """`x + identity` as a module, so that a profile shows the residual add as a layer of its own."""

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return x + identity


def _conv_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
    """Conv (with bias) + ReLU, the unit of the pre-BatchNorm nets (NiN, GoogLeNet, AlexNet, VGG)."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
    ]


def _init_weights(model: nn.Module) -> nn.Module:
    """He-normal convs, N(0, 0.01) linears, BN at identity: a sane start for real training runs."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return model


# ---------------------------------------------------------------------------------------------------
# Network-in-Network (Lin, Chen, Yan 2014)
# ---------------------------------------------------------------------------------------------------


def _mlpconv(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
             mlp_channels: tuple[int, int]) -> nn.Sequential:
    """One NiN "mlpconv" block: a spatial conv followed by two 1x1 convs (the "cccp" layers)."""
    mid, out = mlp_channels
    return nn.Sequential(
        *_conv_relu(in_channels, out_channels, kernel_size, stride, padding),
        *_conv_relu(out_channels, mid, 1),
        *_conv_relu(mid, out, 1),
    )


class NiN(nn.Module):
    """NiN for ImageNet as in the Caffe model zoo (the model FireCaffe trained): 7.6 M params, 1.1 GMACs.

    Pooling uses ceil mode like Caffe, which makes the feature maps 54 -> 27 -> 13 -> 6; floor mode would
    give 26 and ~4 % fewer multiply-adds than the published 1.1 G.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _mlpconv(3, 96, 11, 4, 0, (96, 96)),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            _mlpconv(96, 256, 5, 1, 2, (256, 256)),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            _mlpconv(256, 384, 3, 1, 1, (384, 384)),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Dropout(dropout),
            _mlpconv(384, 1024, 3, 1, 1, (1024, num_classes)),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.features(x)))


def nin(num_classes: int = 1000) -> NiN:
    """Network-in-Network, ImageNet version (224x224 input)."""
    return _init_weights(NiN(num_classes))


class CifarNiN(nn.Module):
    """NiN for CIFAR-10 as in the paper's cifar10 model: ~0.97 M params, ~0.22 GMACs on 32x32."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _mlpconv(3, 192, 5, 1, 2, (160, 96)),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Dropout(dropout),
            _mlpconv(96, 192, 5, 1, 2, (192, 192)),
            nn.AvgPool2d(3, stride=2, ceil_mode=True),
            nn.Dropout(dropout),
            _mlpconv(192, 192, 3, 1, 1, (192, num_classes)),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.features(x)))


def cifar_nin(num_classes: int = 10) -> CifarNiN:
    """Network-in-Network, CIFAR-10 version (32x32 input); ~313 ms per batch-32 step on 2 cores."""
    return _init_weights(CifarNiN(num_classes))


# ---------------------------------------------------------------------------------------------------
# AlexNet and VGG (torchvision layout)
# ---------------------------------------------------------------------------------------------------


class AlexNet(nn.Module):
    """AlexNet, single-tower (ungrouped) torchvision layout: 61.1 M params, 0.715 GMACs."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_relu(3, 64, 11, stride=4, padding=2),
            nn.MaxPool2d(3, stride=2),
            *_conv_relu(64, 192, 5, padding=2),
            nn.MaxPool2d(3, stride=2),
            *_conv_relu(192, 384, 3, padding=1),
            *_conv_relu(384, 256, 3, padding=1),
            *_conv_relu(256, 256, 3, padding=1),
            nn.MaxPool2d(3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def alexnet(num_classes: int = 1000) -> AlexNet:
    """AlexNet (224x224 input)."""
    return _init_weights(AlexNet(num_classes))


# Channel counts per conv, "M" for a 2x2 max-pool (Simonyan and Zisserman 2015, configs D and E).
_VGG_CONFIGS: Mapping[str, tuple[int | str, ...]] = MappingProxyType({
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
})


class VGG(nn.Module):
    """VGG without BatchNorm, torchvision layout (adaptive 7x7 pool before the classifier)."""

    def __init__(self, config: tuple[int | str, ...], num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
            else:
                layers += _conv_relu(in_channels, int(item), 3, padding=1)
                in_channels = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def vgg16(num_classes: int = 1000) -> VGG:
    """VGG-16 (config D, 224x224 input): 138.4 M params, 15.5 GMACs."""
    return _init_weights(VGG(_VGG_CONFIGS["vgg16"], num_classes))


def vgg19(num_classes: int = 1000) -> VGG:
    """VGG-19 (config E, 224x224 input): 143.7 M params, 19.6 GMACs."""
    return _init_weights(VGG(_VGG_CONFIGS["vgg19"], num_classes))


# ---------------------------------------------------------------------------------------------------
# GoogLeNet / Inception v1 (Szegedy et al. 2015), BVLC Caffe layout
# ---------------------------------------------------------------------------------------------------


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->5x5; 3x3 max-pool->1x1) concatenated on channels."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3_reduce: int, ch3x3: int,
                 ch5x5_reduce: int, ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(*_conv_relu(in_channels, ch1x1, 1))
        self.branch2 = nn.Sequential(*_conv_relu(in_channels, ch3x3_reduce, 1),
                                     *_conv_relu(ch3x3_reduce, ch3x3, 3, padding=1))
        self.branch3 = nn.Sequential(*_conv_relu(in_channels, ch5x5_reduce, 1),
                                     *_conv_relu(ch5x5_reduce, ch5x5, 5, padding=2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     *_conv_relu(in_channels, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on an intermediate 14x14 map; only runs in training mode."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.AvgPool2d(5, stride=3, ceil_mode=True),
            *_conv_relu(in_channels, 128, 1),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 1024),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GoogLeNet(nn.Module):
    """GoogLeNet as in BVLC Caffe (5x5 branches, LRN, no BatchNorm): 7.0 M params, 1.6 GMACs.

    With `aux_logits=True` the two auxiliary heads (+6.4 M params) run in training mode and `forward`
    returns `(logits, aux1, aux2)`; in eval mode it always returns the logits alone.
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.4) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_relu(3, 64, 7, stride=2, padding=3),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75),
            *_conv_relu(64, 64, 1),
            *_conv_relu(64, 192, 3, padding=1),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.pool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.pool4 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool3(self.inception3b(self.inception3a(self.stem(x))))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.pool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(self.flatten(self.avgpool(x))))
        if aux1 is not None and aux2 is not None:
            return logits, aux1, aux2
        return logits


def googlenet(num_classes: int = 1000, aux_logits: bool = False) -> GoogLeNet:
    """GoogLeNet / Inception v1 (224x224 input); aux heads off by default (the paper's cost model)."""
    return _init_weights(GoogLeNet(num_classes, aux_logits=aux_logits))


# ---------------------------------------------------------------------------------------------------
# ResNets (He et al. 2016): ResNet-50 (torchvision v1.5, stride on the 3x3) and ResNet-18 for CIFAR
# ---------------------------------------------------------------------------------------------------


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> list[nn.Module]:
    """Bias-free conv + BatchNorm ("same" padding), the unit of every ResNet."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                  bias=False),
        nn.BatchNorm2d(out_channels),
    ]


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """Projection shortcut (1x1 conv + BN) when the shape changes, else the identity (None)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))


class BasicBlock(nn.Module):
    """Two 3x3 convs plus shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(in_channels, channels, 3, stride),
            nn.ReLU(inplace=True),
            *_conv_bn(channels, channels, 3),
        )
        self.shortcut = _shortcut(in_channels, channels, stride)
        self.add = Residual()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.add(self.body(x), identity))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, "v1.5"), 1x1 expand x4, plus shortcut (ResNet-50+)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(in_channels, channels, 1),
            nn.ReLU(inplace=True),
            *_conv_bn(channels, channels, 3, stride),
            nn.ReLU(inplace=True),
            *_conv_bn(channels, out_channels, 1),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.add = Residual()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.add(self.body(x), identity))


def _stage(block: type[BasicBlock] | type[Bottleneck], in_channels: int, channels: int, blocks: int,
           stride: int) -> tuple[nn.Sequential, int]:
    """`blocks` residual blocks, the first one carrying the stride; returns (stage, out_channels)."""
    layers = []
    for i in range(blocks):
        layers.append(block(in_channels, channels, stride if i == 0 else 1))
        in_channels = channels * block.expansion
    return nn.Sequential(*layers), in_channels


class ResNet(nn.Module):
    """A ResNet: a stem, four stages of residual blocks at widths w, 2w, 4w, 8w, global pool, linear."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks_per_stage: tuple[int, ...],
                 num_classes: int, width: int, imagenet_stem: bool) -> None:
        super().__init__()
        if imagenet_stem:  # 7x7/2 conv + 3x3/2 pool: 224 -> 56
            self.stem = nn.Sequential(*_conv_bn(3, width, 7, 2), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        else:  # CIFAR: one 3x3 conv, keep 32x32
            self.stem = nn.Sequential(*_conv_bn(3, width, 3), nn.ReLU(inplace=True))
        stages = []
        in_channels = width
        for i, blocks in enumerate(blocks_per_stage):
            stage, in_channels = _stage(block, in_channels, width * 2**i, blocks, 1 if i == 0 else 2)
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.avgpool(self.stages(self.stem(x)))))


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 (224x224 input): 25.6 M params, 4.1 GMACs."""
    return _init_weights(ResNet(Bottleneck, (3, 4, 6, 3), num_classes, width=64, imagenet_stem=True))


def resnet18_cifar(num_classes: int = 10, width: int = 64) -> ResNet:
    """ResNet-18 for 32x32 inputs; `width` scales every stage (64: 11.2 M params; 16: 0.7 M, cheap)."""
    if width < 1:
        raise UserError(f"width: must be a positive number of channels, got {width}")
    return _init_weights(ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width=width, imagenet_stem=False))


# ---------------------------------------------------------------------------------------------------
# Tiny test net
# ---------------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Three conv/ReLU/pool stages, global pool, linear: ~0.1 M params, for fast multi-process tests."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 32, 3, padding=1)), ("relu1", nn.ReLU(inplace=True)),
            ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(32, 64, 3, padding=1)), ("relu2", nn.ReLU(inplace=True)),
            ("pool2", nn.MaxPool2d(2)),
            ("conv3", nn.Conv2d(64, 128, 3, padding=1)), ("relu3", nn.ReLU(inplace=True)),
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.avgpool(self.features(x))))


def small_cnn(num_classes: int = 10) -> SmallCNN:
    """Tiny CIFAR-size CNN (32x32 input)."""
    return _init_weights(SmallCNN(num_classes))

"""A CNN of your own: `PYTHONPATH=examples firerun profile --model mypkg.nets:build --input 3x224x224`."""

from torch import nn


def build(depth: int = 16, width: int = 64, num_classes: int = 1000) -> nn.Module:
    """A plain VGG-style network of ``depth`` 3x3 convolutions (with batch norm) in four stages; any callable
    that returns an ``nn.Module`` works as a factory, and ``--kwargs depth=50`` reaches it."""
    layers: list[nn.Module] = []
    channels = 3
    for stage in range(4):
        out = width * 2**stage
        for _ in range(max(1, depth // 4)):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

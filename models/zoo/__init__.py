"""The model zoo: PyTorch definitions of the networks the simulator reasons about, and their registry.

- `models.zoo.cnn`: the convolutional networks of the FireCaffe era (NiN, AlexNet, GoogLeNet, VGG, ResNet) and
  small CIFAR nets for real multi-process runs on a CPU;
- `models.zoo.transformers`: GPT-2, BERT, ViT-B/16, Llama 2 / 3, written here (no downloads);
- `models.zoo.registry`: every model by name (`build`, `get_spec`, `list_models`, `MODELS`).

Build by name with `build("gpt2")`; for a weightless model (profiling a 7B model costs no memory), build it
under `with torch.device("meta"):`.
"""

from models.zoo.registry import MODELS, PUBLISHED_PARAMS, ModelSpec, build, get_spec, list_models

__all__ = ["MODELS", "PUBLISHED_PARAMS", "ModelSpec", "build", "get_spec", "list_models"]

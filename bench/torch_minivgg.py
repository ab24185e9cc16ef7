"""The book's MiniVGGNet in PyTorch, as `trainer`'s mini-vgg builds it (models/src/zoo/mini_vgg.rs), for
the Python peers of bench/train_throughput.sh and bench/train_step_overhead.sh."""
from torch import nn


def unit(i, o):  # conv -> ReLU -> BN, Keras BN defaults as in models/src/zoo/mini_vgg.rs
    return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(o, eps=1e-3, momentum=0.01)]


def mini_vgg(classes=10):
    return nn.Sequential(
        *unit(1, 32), *unit(32, 32), nn.MaxPool2d(2), nn.Dropout(0.25),
        *unit(32, 64), *unit(64, 64), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.BatchNorm1d(512, eps=1e-3, momentum=0.01), nn.Dropout(0.5),
        nn.Linear(512, classes),
    )

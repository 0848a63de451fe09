"""mindscope: serve a trained CIFAR-10 All-Convolutional Network and show what happens inside it."""

__version__ = "0.1.0"

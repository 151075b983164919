"""Dataset sources: what a dataset is (classes, channels, size, statistics) and how to build
its splits, one module per family of files.

- :mod:`~sslkit.data.sources.base`: the interface, errors and the in-memory split.
- :mod:`~sslkit.data.sources.fashion_mnist`: Fashion-MNIST's idx files.
- :mod:`~sslkit.data.sources.torchvision_datasets`: CIFAR-10/100 and STL-10 through torchvision.
- :mod:`~sslkit.data.sources.folder`: any folder of images (class folders or a label CSV).
- :mod:`~sslkit.data.sources.volume_folder`: any folder of 3-D volumes (npy, npz, NIfTI).
"""

"""The original notebooks' PyTorch models, training steps, epoch pipeline and temperature code.

Importing this module imports torch (optional: `pip install -e '.[torch]' torch==2.13.0`); the
numpy ECE loop, which needs no torch, lives in `benchmarks.step_times`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

# The LeNet notebooks' Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).
CIFAR_MEAN = (0.5, 0.5, 0.5)
CIFAR_STD = (0.5, 0.5, 0.5)
# Seconds a DataLoader waits for a worker's batch before raising (instead of hanging).
WORKER_TIMEOUT_S = 120
# The notebooks' `device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")`.
DEVICE = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def set_threads() -> int:
    """Uses every core for intra-op parallelism (`torch.set_num_threads(os.cpu_count())`)."""
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


class LeNet5(nn.Module):
    """The first notebook's LeNet-5: conv 3->6 k5, max-pool, conv 6->16 k5, max-pool, 120, 84, 1."""

    def __init__(self, num_outputs: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, kernel_size=5)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, 32, 32] -> [B, num_outputs] logits."""
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MultiLayerNN(nn.Module):
    """The MNIST notebook's MLP: 784-512-512-10 with ReLU."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512)
        self.fc2 = nn.Linear(512, 512)
        self.fc3 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, 28, 28] -> [B, 10] logits."""
        x = x.view(-1, 784)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, with its parameter names."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_planes, H, W] -> [B, planes, H / stride, W / stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18 in plain torch.nn (torchvision cannot be imported here)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        in_planes = 64
        for i, planes in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            layer = nn.Sequential(
                BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)
            )
            setattr(self, f"layer{i}", layer)
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, num_classes] logits."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def lenet_step(batch_size: int, seed: int = 0) -> Callable[[], float]:
    """One notebook LeNet-5 step (BCEWithLogits, Adam 1e-3) on a fixed random batch.

    Returns:
        step() -> loss, doing zero_grad, forward, backward and optimizer.step().
    """
    torch.manual_seed(seed)
    net = LeNet5().to(DEVICE)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()
    inputs = torch.randn(batch_size, 3, 32, 32, device=DEVICE)
    labels = torch.randint(0, 2, (batch_size,), device=DEVICE).float().view(-1, 1)
    net.train()

    def step() -> float:
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def mlp_step(batch_size: int, seed: int = 0) -> Callable[[], float]:
    """One MNIST-notebook MLP step (CrossEntropy, SGD 0.01) on a fixed random batch."""
    torch.manual_seed(seed)
    net = MultiLayerNN().to(DEVICE)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    inputs = torch.rand(batch_size, 1, 28, 28, device=DEVICE)
    labels = torch.randint(0, 10, (batch_size,), device=DEVICE)
    net.train()

    def step() -> float:
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def resnet18_step(
    batch_size: int,
    size: int,
    trainable: tuple[str, ...],
    num_classes: int,
    lr: float,
    seed: int = 0,
) -> Callable[[], float]:
    """One ResNet18 fine-tuning step as the originals do it: frozen parameters have
    `requires_grad = False`, the optimiser (Adam) sees the trainable ones only, the model is in
    train mode (BatchNorm uses batch statistics everywhere, as `model.train()` does).

    Args:
        batch_size: images per step.
        size: image side (224 as the originals).
        trainable: top-level submodules that train, e.g. ("fc",) or ("layer4", "fc").
        num_classes: 1 (BCEWithLogits, the bird/cat notebook) or 2+ (CrossEntropy, cats vs dogs).
        lr: Adam learning rate.
        seed: torch seed for weights and the batch.

    Returns:
        step() -> loss.
    """
    torch.manual_seed(seed)
    net = ResNet18(num_classes).to(DEVICE)
    for name, param in net.named_parameters():
        param.requires_grad = name.split(".")[0] in trainable
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    inputs = torch.randn(batch_size, 3, size, size, device=DEVICE)
    if num_classes == 1:
        criterion: nn.Module = nn.BCEWithLogitsLoss()
        labels = torch.randint(0, 2, (batch_size,), device=DEVICE).float().view(-1, 1)
    else:
        criterion = nn.CrossEntropyLoss()
        labels = torch.randint(0, num_classes, (batch_size,), device=DEVICE)
    net.train()

    def step() -> float:
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


class UInt8ImageDataset(Dataset):
    """A torchvision-style dataset over uint8 [N, H, W, C] images with per-image transforms.

    `__getitem__` does what `transforms.Compose([ToTensor(), Normalize(mean, std)])` does to
    one image: HWC uint8 -> CHW float in [0, 1] -> (x - mean) / std.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean=CIFAR_MEAN, std=CIFAR_STD):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be [{images.shape[0]}], got {labels.shape}")
        self.images = images
        self.labels = labels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div(255.0)
        return (image - self.mean) / self.std, int(self.labels[index])


def workers_can_start() -> tuple[bool, str]:
    """Whether a DataLoader with 2 worker processes can start here, and why not if not."""
    try:
        loader = DataLoader(
            UInt8ImageDataset(np.zeros((2, 2, 2, 3), np.uint8), np.zeros(2, np.int64)),
            batch_size=1,
            num_workers=2,
            timeout=WORKER_TIMEOUT_S,
        )
        for _ in loader:
            pass
    except Exception as error:  # any start-up failure means: run with num_workers=0
        return False, f"{type(error).__name__}: {error}"
    return True, ""


def lenet_epoch(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    num_workers: int,
    batch_size: int = 64,
    seed: int = 0,
) -> Callable[[], float]:
    """The first notebook's pipeline: one training epoch plus a validation pass.

    A `DataLoader(batch_size=64, shuffle=True, num_workers=...)` over a dataset with per-image
    ToTensor + Normalize, the eager train loop (zero_grad, forward, BCEWithLogits, backward,
    Adam step, `loss.item()` every step) and a `no_grad` validation loop in eval mode.

    Args:
        train, val: (uint8 images [N, 32, 32, 3], int labels [N]).
        num_workers: DataLoader worker processes (2 in the notebook, 0 where they cannot start).
        batch_size: 64 as in the notebook.
        seed: torch seed for the weights and the shuffling.

    Returns:
        epoch() -> validation accuracy after the epoch (training continues across calls).
    """
    torch.manual_seed(seed)
    net = LeNet5().to(DEVICE)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()
    # Workers are forked, as in the notebook; the timeout turns a stuck worker into an error.
    timeout = WORKER_TIMEOUT_S if num_workers else 0
    train_loader = DataLoader(
        UInt8ImageDataset(*train),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        timeout=timeout,
    )
    val_loader = DataLoader(
        UInt8ImageDataset(*val),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        timeout=timeout,
    )

    def epoch() -> float:
        net.train()
        running_loss = 0.0
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(DEVICE), labels.to(DEVICE).float().view(-1, 1)
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        net.eval()
        correct = 0
        with torch.no_grad():
            for inputs, labels in val_loader:
                inputs, labels = inputs.to(DEVICE), labels.to(DEVICE)
                correct += int(((net(inputs)[:, 0] > 0).long() == labels).sum())
        return correct / len(val_loader.dataset)

    return epoch


def fit_scale_lbfgs(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    lr: float,
    max_iter: int,
    line_search_fn: str | None = None,
) -> float:
    """The notebook's temperature scaling: `a` (= 1/T) fitted by torch LBFGS on BCEWithLogits.

    Args:
        logits: [N] binary logits.
        labels: [N] labels in {0, 1}.
        lr, max_iter, line_search_fn: LBFGS settings (the notebook: lr=0.01, max_iter=50).

    Returns:
        The fitted temperature T = 1 / a.
    """
    logits_t = torch.tensor(logits, dtype=torch.float32, device=DEVICE).view(-1, 1)
    labels_t = torch.tensor(labels, dtype=torch.float32, device=DEVICE).view(-1, 1)
    a = nn.Parameter(torch.ones(1, device=DEVICE))
    optimizer = torch.optim.LBFGS([a], lr=lr, max_iter=max_iter, line_search_fn=line_search_fn)
    criterion = nn.BCEWithLogitsLoss()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(logits_t * a, labels_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    return 1.0 / a.item()

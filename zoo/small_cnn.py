"""The classic teaching CNN: the ideas of the ImageNet winners in five weighted layers."""

from __future__ import annotations

from torch import Tensor, nn


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Three 3×3 conv blocks (32, 64, 128 filters) with max-pooling, a 625-unit layer, then the classifier.

    Adaptive pooling to 4×4 before the fully connected layer lets it take any RGB input of 28 px or more
    (at 28 px the feature map is already 3×3, as in the MNIST original).
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(3, 32), _block(32, 64), _block(64, 128))
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, 625), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.classifier = nn.Linear(625, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.fc(self.pool(self.features(x))))

"""Image models: grayscale eigen-images (PCA) and pretrained CNN backbones."""

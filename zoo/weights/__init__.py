"""Pretrained weights: one module per source (torchvision's hub, timm's Hugging Face repositories, a pip package),
each implementing ``source.WeightSource``; reading and fitting a state dict (``loading``); listing and installing
files on a machine without internet (``installing``).

Every file is read with ``torch.load(weights_only=True)`` or safetensors. When a file is neither cached nor
downloadable, the error names the file, the folder to put it in, the URL and ``--weights none``.
"""

"""The model card of a bundle (``README.md`` in the Hugging Face layout), written from its ``zoo.json`` alone.

Front matter for the hub (pipeline, library, tags, base model), then what a user must know before relying on
the model: its data, classes, error on the held-out test images with the 95% interval, preprocessing, how to
load it, what it is for and where it fails.
"""

from __future__ import annotations

from typing import Any

import yaml

from zoo.bundle import BundleMetadata


def _percent(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}%"


def _interval(figures: dict[str, Any]) -> str:
    low_high = figures.get("top1_error_ci95")
    return f"{low_high[0]:.2f}–{low_high[1]:.2f}%" if low_high else "unknown"


def _hub_base_model(metadata: BundleMetadata) -> str | None:
    """The hub repository of the weights a timm entry started from (``timm/<model>.<tag>``), else None.

    A run records its starting weights as a tag (``in12k_ft_in1k``), ``none``, or a file's path.
    """
    tag = metadata.weights
    if not metadata.arch.startswith("timm/") or tag == "none" or "/" in tag or "\\" in tag or "." in tag:
        return None
    return f"{metadata.arch.partition('.')[0]}.{tag}"


def _front_matter(metadata: BundleMetadata) -> str:
    # zoo's own architectures (small_cnn) have library "zoo": the tag is not repeated.
    tags = list(dict.fromkeys(["image-classification", "zoo", *([metadata.library] if metadata.library else [])]))
    fields: dict[str, Any] = {"pipeline_tag": "image-classification", "tags": tags}
    if metadata.library == "timm":
        fields["library_name"] = "timm"
    base = _hub_base_model(metadata)
    if base:
        fields["base_model"] = base
    return "---\n" + yaml.safe_dump(fields, sort_keys=False, allow_unicode=True) + "---\n"


def _results(metadata: BundleMetadata) -> list[str]:
    rows = [("test", metadata.test, "held out: used to choose nothing"),
            ("validation", metadata.validation, "chose the checkpoint and the temperature: optimistic")]
    known = [(split, figures, role) for split, figures, role in rows if figures]
    if not known:
        return ["No error was measured on images of this model's data (the bundle was exported without them)."]
    k = next((figures.get("k") for _, figures, _ in known if figures.get("k")), None)
    lines = [f"| split | images | top-1 error | 95% interval |{f' top-{k} error |' if k else ''} role |",
             f"|---|---|---|---|{'---|' if k else ''}---|"]
    for split, figures, role in known:
        topk = f" {_percent(figures.get('topk_error'))} |" if k else ""
        lines.append(f"| {split} | {figures.get('num_images')} | {_percent(figures.get('top1_error'))} | "
                     f"{_interval(figures)} |{topk} {role} |")
    data = metadata.data or {}
    if "chance_top1_error" in data:
        lines += ["", f"Always answering the most frequent class would err on {_percent(data['chance_top1_error'])} "
                      f"of the {data.get('reported_on', 'test')} images."]
        if not data.get("learned", True):
            lines += ["", "**This model did not learn**: its error interval does not lie below that chance level. "
                          "Do not use it; train longer, with more images, or from pretrained weights."]
    return lines


def _data(metadata: BundleMetadata) -> list[str]:
    data = metadata.data
    lines = []
    if data:
        lines.append(f"Fine-tuned on the image folder `{data.get('folder')}`: {data.get('num_train')} training, "
                     f"{data.get('num_val')} validation and {data.get('num_test')} test images.")
    lines.append(f"Classes ({metadata.num_classes}, in the order of the outputs): "
                 + ", ".join(f"`{name}`" for name in metadata.classes) + ".")
    return lines


def _usage(metadata: BundleMetadata) -> list[str]:
    code = ["```python", "import zoo", "", 'model = zoo.load("BUNDLE")',
            'top = model.predict("image.jpg")  # [[(class, calibrated probability), …]], best first']
    if metadata.library == "timm":
        code += ["", "import timm  # timm alone, without zoo: same logits", "",
                 'model = timm.create_model("local-dir:BUNDLE", pretrained=True).eval()']
    elif metadata.library == "torchvision":
        args = "".join(f", {key}={value!r}" for key, value in (metadata.model_args or {}).items())
        code += ["", "import torchvision  # torchvision alone, without zoo: same logits",
                 "from safetensors.torch import load_file", "",
                 f'model = torchvision.models.get_model("{metadata.model_name}", num_classes={metadata.num_classes}'
                 f'{args})', 'model.load_state_dict(load_file("BUNDLE/model.safetensors"))', "model.eval()"]
    return [*code, "```"]


def model_card(metadata: BundleMetadata) -> str:
    """The ``README.md`` of a bundle whose ``zoo.json`` is ``metadata``."""
    test, preprocessing = metadata.test or {}, metadata.preprocessing
    folder = (metadata.data or {}).get("folder")
    title = f"{metadata.arch} fine-tuned{f' on {folder}' if folder else ''}"
    library = f"{metadata.library}'s `{metadata.model_name}`" if metadata.library else f"`{metadata.arch}`"
    # "(zoo's `resnet18`)" tells which registry entry a library's model is; for zoo's own model it would repeat it.
    if metadata.library not in (None, "zoo") or metadata.model_name != metadata.arch:
        library += f" (zoo's `{metadata.arch}`)"
    sections = [
        f"# {title}", "",
        f"An image classifier of {metadata.num_classes} classes: {library} with a new "
        f"classifier (dropout {metadata.dropout:g}, then a layer to the classes), "
        + ("trained from scratch with zoo." if metadata.weights == "none"
           else f"fine-tuned with zoo from the weights `{metadata.weights}`."), "",
        "## Data", "", *_data(metadata), "",
        "## Results", "", *_results(metadata), "",
        "## Preprocessing", "",
        f"Resize the shorter side to {preprocessing.resize} px ({preprocessing.interpolation}, antialiased), "
        f"centre-crop {metadata.image_size}×{metadata.image_size}, scale to 0–1, normalise with mean "
        f"{list(preprocessing.mean)} and std {list(preprocessing.std)} (RGB). The network outputs logits: divide them "
        f"by the temperature {metadata.temperature:.4g} "
        "(fitted on the validation images) before the softmax for calibrated probabilities.", "",
        "## How to use", "", *_usage(metadata), "",
        "## Intended use", "",
        f"Sorting images like those it was trained on into these {metadata.num_classes} classes, as a tool whose "
        "answers a person can check; not for decisions about people without that check.", "",
        "## Limitations", "",
        "- The figures hold for images like the test images: photos from another camera, place, time or source "
        "can be classified worse, by an amount this card cannot tell.",
        (f"- With {test['num_images']} test images the error is known only within its 95% interval "
         f"({_interval(test)}): differences smaller than that between models are noise." if test else
         "- No error was measured on held-out test images: the validation figure chose the checkpoint and is "
         "optimistic."),
        "- The model always answers one of its classes: an image of something else gets one of them, possibly "
        "with a high probability.",
        "- Whatever the training images over- or under-represent (classes, backgrounds, people) carries over.",
    ]
    return _front_matter(metadata) + "\n" + "\n".join(sections) + "\n"

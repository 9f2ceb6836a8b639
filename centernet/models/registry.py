"""Model registry in timm's manner: builders register by name, ``create_model`` builds by name."""

__all__ = ["register_model", "create_model", "list_models"]

_MODELS = {}


def register_model(builder):
    """Decorator: register ``builder`` under its function name (e.g. ``centernet_dla34``)."""
    name = builder.__name__
    if name in _MODELS and _MODELS[name] is not builder:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = builder
    return builder


def create_model(name, num_classes=80, weights=None, pretrained=False, pretrained_backbone=None, **kwargs):
    """Build the registered model ``name`` with ``num_classes`` classes (extra kwargs go to its
    builder). ``weights``: a PaddleDetection ``.pdparams``, an original CenterNet ``.pth``, one of
    our checkpoints or a ``.safetensors``, loaded strictly (see ``centernet.load_weights``).
    ``pretrained=True``: the published COCO weights of ``name``, downloaded once into the cache
    (``centernet.weights.hub``); with another ``num_classes`` all but the heatmap classifier load
    and a warning says so. ``pretrained_backbone``: ImageNet weights for the backbone alone (a path,
    or True for the file PaddleDetection trains ``name`` from, downloaded once into the cache; see
    ``centernet.weights.load_backbone_weights``); neck and head keep their initialisation.
    Unknown names raise ``ValueError`` listing the known ones."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if pretrained and weights is not None:
        raise ValueError("give weights=PATH or pretrained=True, not both")
    if pretrained_backbone and (pretrained or weights is not None):
        raise ValueError("pretrained_backbone sets the backbone only and weights / pretrained the whole "
                         "model: give one of them")
    model = _MODELS[name](num_classes=num_classes, **kwargs)
    model.model_name = name  # what it was built as (the server's GET /model says it)
    if pretrained_backbone:
        from ..weights import load_backbone_weights
        from ..weights.hub import backbone_weights

        load_backbone_weights(model, backbone_weights(name) if pretrained_backbone is True else pretrained_backbone)
    if pretrained or weights is not None:
        from ..weights import load_weights
        from ..weights.hub import zoo_weights

        if not pretrained:
            load_weights(model, weights)
        elif (report := load_weights(model, zoo_weights(name), num_classes_mismatch="reinit")).reinitialized:
            import warnings

            warnings.warn(str(report), stacklevel=2)
    return model


def list_models():
    """Names of all registered models, sorted."""
    return sorted(_MODELS)

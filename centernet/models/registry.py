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


def create_model(name, num_classes=80, weights=None, **kwargs):
    """Build the registered model ``name`` with ``num_classes`` classes (extra kwargs go to its
    builder). ``weights``: a PaddleDetection ``.pdparams``, an original CenterNet ``.pth`` or one of
    our checkpoints, loaded strictly (see ``centernet.load_weights``). Unknown names raise
    ``ValueError`` listing the known ones."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    model = _MODELS[name](num_classes=num_classes, **kwargs)
    if weights is not None:
        from ..weights import load_weights

        load_weights(model, weights)
    return model


def list_models():
    """Names of all registered models, sorted."""
    return sorted(_MODELS)

"""Model registry in timm's manner: builders register by name, ``build_model`` builds by name.

A builder defines structure only: the model it returns has its initialisation, no weights from any
file. Weights are :func:`centernet.create_model`'s business (``centernet/builder.py``), one layer up.
"""

__all__ = ["register_model", "build_model", "list_models"]

_MODELS = {}


def register_model(builder):
    """Decorator: register ``builder`` under its function name (e.g. ``centernet_dla34``)."""
    name = builder.__name__
    if name in _MODELS and _MODELS[name] is not builder:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = builder
    return builder


def build_model(name, num_classes=80, **kwargs):
    """The registered model ``name`` with ``num_classes`` classes, freshly initialised (extra kwargs
    go to its builder). Unknown names raise ``ValueError`` listing the known ones."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    model = _MODELS[name](num_classes=num_classes, **kwargs)
    model.model_name = name  # what it was built as (the server's GET /model says it)
    return model


def list_models():
    """Names of all registered models, sorted."""
    return sorted(_MODELS)

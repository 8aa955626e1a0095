"""torch.hub entry points: every registered senet model, with ``create_model``'s keywords.

    model = torch.hub.load("path/to/senet", "se_resnet50", source="local", pretrained=True)
    torch.hub.list("path/to/senet", source="local")
"""

from __future__ import annotations

from typing import Any, Callable

dependencies = ["torch", "safetensors", "huggingface_hub"]


def _entry(name: str) -> Callable[..., Any]:
    def entry(**kwargs: Any) -> Any:
        from senet import create_model

        return create_model(name, **kwargs)

    entry.__name__ = name
    entry.__doc__ = f"``senet.create_model({name!r}, **kwargs)``: pretrained=True for the released weights."
    return entry


def _register() -> list[str]:
    from senet import list_models

    names = list_models()
    globals().update({name: _entry(name) for name in names})
    return names


__all__ = _register()

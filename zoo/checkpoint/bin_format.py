"""Loading pickle-based PyTorch weights (``pytorch_model.bin``, ``*.pt``) the only safe way.

zoo never unpickles arbitrary objects: these files are opened with
``torch.load(weights_only=True)``, whose restricted unpickler accepts tensors and plain
containers and refuses anything else (a ``__reduce__`` that calls ``os.system`` included)
before it runs. This is used only when the caller opted in (``--convert-bin``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import InvalidCheckpointError, InvalidInputError, UnsafeFormatError

if TYPE_CHECKING:
    import torch

__all__ = ["PICKLE_SUFFIXES", "load_weights_only"]

#: File suffixes of pickle-based weights that zoo recognizes (and refuses by default).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def load_weights_only(path: Path) -> dict[str, torch.Tensor]:
    """Load a flat ``name -> tensor`` state dict from a pickle file with ``weights_only=True``.

    Args:
        path: a ``.bin`` / ``.pt`` / ``.pth`` file written by ``torch.save``.

    Returns:
        name -> contiguous CPU tensor, in the file's order.

    Raises:
        UnsafeFormatError: the pickle holds objects the restricted unpickler refuses.
        InvalidCheckpointError: the file is not a torch file, or not a flat state dict.
    """
    import torch

    from zoo.checkpoint.safetensors_format import dtype_code

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFormatError(
            f"{path} holds objects that safe loading (torch.load with weights_only=True) "
            f"refuses{_reason(exc)}; zoo will not unpickle it, so re-save its tensors as "
            "safetensors from a trusted environment.",
            path=str(path),
        ) from exc
    except Exception as exc:
        # Garbage fails the unpickler in any way: a text file with a KeyError from its
        # memo, a cut file with an EOFError that has no message.
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise InvalidCheckpointError(
            f"{path} cannot be read as a torch weights file ({detail.splitlines()[0]}); "
            "check that it is a complete file written by torch.save.",
            path=str(path),
        ) from exc
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise InvalidCheckpointError(
            f"{path} does not hold a flat name -> tensor state dict; save model.state_dict() "
            "itself, not a wrapper around it.",
            path=str(path),
        )
    out: dict[str, torch.Tensor] = {}
    for name, t in obj.items():
        if t.layout != torch.strided:
            raise InvalidCheckpointError(
                f"{path} holds tensor {name!r} with layout {t.layout}; convert it to a dense "
                "tensor first.",
                path=str(path),
            )
        try:
            dtype_code(t.dtype)
        except InvalidInputError as exc:
            raise InvalidCheckpointError(
                f"{path} holds tensor {name!r} of dtype {t.dtype}, which safetensors cannot "
                "store; cast it to a supported dtype first.",
                path=str(path),
            ) from exc
        out[name] = t.detach().contiguous()
    return out


def _reason(exc: BaseException) -> str:
    # torch's message opens with advice to retry with weights_only=False, which zoo must not
    # repeat; keep only the line that names the refused object.
    for line in str(exc).splitlines():
        if "GLOBAL" in line or "Unsupported" in line or "unsupported" in line:
            return f" ({line.strip().rstrip('.')})"
    return ""

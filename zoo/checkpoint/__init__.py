"""Reading checkpoints safely: safetensors parsing, HF layouts, manifests and names.

Importing this package imports neither torch nor huggingface_hub; functions that build
tensors import torch when called.
"""

from __future__ import annotations

from zoo.checkpoint.hf import LocalCheckpoint, TensorInfo, open_checkpoint
from zoo.checkpoint.manifest import canonical_json, manifest_hash
from zoo.checkpoint.names import validate_name
from zoo.checkpoint.safetensors_format import (
    DTYPE_ITEMSIZE,
    Header,
    TensorEntry,
    dtype_code,
    read_header,
    tensor_from_bytes,
    torch_dtype,
    write_safetensors,
)

__all__ = [
    "DTYPE_ITEMSIZE",
    "Header",
    "LocalCheckpoint",
    "TensorEntry",
    "TensorInfo",
    "canonical_json",
    "dtype_code",
    "manifest_hash",
    "open_checkpoint",
    "read_header",
    "tensor_from_bytes",
    "torch_dtype",
    "validate_name",
    "write_safetensors",
]

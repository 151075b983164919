"""``sslkit-export``: a pretrained encoder's weights as a plain state dict for the torchvision or
timm model of the same architecture, so the encoder can be used without sslkit.

sslkit-export outputs/pretrain/<run>/checkpoints/last.ckpt [--encoder teacher] [--out FILE]

Writes ``FILE`` (default: ``encoder_<encoder>.pt`` beside the checkpoint), a ``torch.save`` of the
state dict alone, and ``FILE`` with ``.json`` in place of its suffix: the library, the
constructor and its keyword arguments, and what to change on the model before
``load_state_dict`` (e.g. ``fc = torch.nn.Identity()``). The model's output is then the
encoder's pooled features, as sslkit's evaluation reads them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sslkit.build import load_checkpoint, restore_method, stored_config
from sslkit.run.files import atomic_write, write_json_atomic


def export_encoder(
    ckpt_path: str | Path, out: str | Path | None = None, encoder: str = "student"
) -> tuple[Path, Path]:
    """Write the state dict of the checkpoint's ``encoder`` (a name of the method's
    ``evaluation_encoders()``: ``student``, or ``teacher`` for methods with an EMA teacher) and
    its description; returns both paths."""
    checkpoint = load_checkpoint(ckpt_path)
    config = stored_config(checkpoint)
    method, _ = restore_method(config, checkpoint, ckpt_path)
    encoders = method.evaluation_encoders()
    if encoder not in encoders:
        raise ValueError(
            f"{type(method).__name__} has no encoder {encoder!r}; it has "
            f"{', '.join(sorted(encoders))}."
        )
    state, description = encoders[encoder].export()
    if description["library"] == "sslkit":  # sslkit's own class: the run's settings build it
        settings = OmegaConf.to_container(config.backbone, resolve=True)
        settings.pop("_target_", None)
        description["kwargs"] = {**settings, **description["kwargs"]}
    file = Path(out) if out is not None else Path(ckpt_path).parent / f"encoder_{encoder}.pt"
    meta = file.with_suffix(".json")
    description = {
        **description,
        "checkpoint": str(Path(ckpt_path).resolve()),
        "method": type(method).__name__,
        "encoder": encoder,
        "feature_dim": encoders[encoder].feature_dim,
    }
    atomic_write(file, lambda handle: torch.save(state, handle))
    write_json_atomic(meta, description)
    return file, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sslkit-export",
        description="Export a pretrained encoder as a plain state dict for torchvision or timm.",
    )
    parser.add_argument("ckpt_path", help="a checkpoint written by sslkit-train")
    parser.add_argument(
        "--encoder", default="student", help="student (default) or teacher (EMA-teacher methods)"
    )
    parser.add_argument("--out", default=None, help="the .pt file to write")
    args = parser.parse_args(argv)
    try:
        file, meta = export_encoder(args.ckpt_path, args.out, args.encoder)
    except (FileNotFoundError, ValueError) as exc:
        print(f"sslkit-export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {file} and {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

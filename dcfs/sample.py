"""A generated sample bucket: a few large files (models, checkpoints) and a
few hundred small ones in nested directories (a training set)."""

import random
from dataclasses import dataclass
from pathlib import Path

from dcfs.sizes import format_size


@dataclass(frozen=True)
class SampleSpec:
    large_files: int = 2
    large_size: int = 256 * 1024 * 1024
    small_files: int = 400
    small_size: int = 128 * 1024
    seed: int = 2026

    @property
    def total_bytes(self) -> int:
        return self.large_files * self.large_size + self.small_files * self.small_size + 200


def make_sample(root: Path, spec: SampleSpec = SampleSpec()) -> Path:
    """Write the sample under ``root`` (deterministic for a given spec)."""
    rng = random.Random(spec.seed)
    models = root / "models" / "llm-7b"
    models.mkdir(parents=True, exist_ok=True)
    chunk = 8 * 1024 * 1024
    for i in range(spec.large_files):
        path = models / f"model-{i + 1:05d}-of-{spec.large_files:05d}.safetensors"
        with path.open("wb") as out:
            remaining = spec.large_size
            while remaining:
                n = min(chunk, remaining)
                out.write(rng.randbytes(n))
                remaining -= n
    for i in range(spec.small_files):
        shard = root / "datasets" / "train" / f"shard-{i // 100:03d}"
        shard.mkdir(parents=True, exist_ok=True)
        # Vary the size a little so that files end at different offsets.
        size = max(1, spec.small_size - rng.randrange(0, 4096))
        (shard / f"sample-{i:05d}.bin").write_bytes(rng.randbytes(size))
    (root / "README.txt").write_text(
        f"dcfs sample bucket: {spec.large_files} x {format_size(spec.large_size)} model "
        f"shards, {spec.small_files} small samples.\n"
    )
    return root

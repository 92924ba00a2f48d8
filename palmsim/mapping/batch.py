"""Batch arithmetic and the peak lookup: the first pass of training and inference mapping."""

from __future__ import annotations

from dataclasses import dataclass

from palmsim.config.specs import DTYPE_BYTES, TRAINING_STORAGE_DTYPE, ExperimentSpec
from palmsim.errors import ConfigError, MappingError
from palmsim.workload.fp8 import FP8_SCALING

__all__ = ["Batch", "inference_batch", "training_batch"]


@dataclass(frozen=True, slots=True)
class Batch:
    """How an iteration's samples split into micro-batches, and the arithmetic it runs at."""

    num_microbatches: int  # per data-parallel replica
    samples_per_iteration: int
    tokens_per_iteration: int
    peak_flop_per_s: float  # per tile, at ``dtype`` (fp8 training: at bf16, its storage dtype)
    dtype: str
    elem_bytes: float  # bytes of one activation element in ``dtype`` (fp8 training: bf16's)
    fp8_peak_flop_per_s: float = 0.0  # per tile: fp8 training's linear GEMMs; else 0
    fp8_dtype: str = "fp8"  # the format those GEMMs run in (its recipe's; nvfp4 or fp8)

    @property
    def training_elem_bytes(self) -> int:
        """Bytes of one element of a training dtype (fp32, fp16, bf16: whole bytes), the
        unit of weights and gradients in the training memory and cost passes."""
        return int(self.elem_bytes)


def _microbatches(what: str, batch: int, dp: int, mbs: int, unit: str) -> int:
    if batch % (dp * mbs):
        raise MappingError(
            f"{what} {batch} is not a multiple of dp*micro_batch_size = {dp}*{mbs} = "
            f"{dp * mbs}; every {unit} must be simulated exactly once"
        )
    return batch // (dp * mbs)


def _peak(experiment: ExperimentSpec, dtype: str, whose: str) -> float:
    hw = experiment.hardware
    try:
        return hw.tile.peak_for(dtype)
    except KeyError:
        raise ConfigError.single(
            dict(experiment.sources).get("hardware", hw.name),
            f"tile.peak.{dtype}",
            ConfigError.MISSING,
            f"a peak FLOP/s for the {whose} dtype {dtype!r}",
        ) from None


def training_batch(experiment: ExperimentSpec) -> Batch:
    """Micro-batches of a training iteration and the peak at the training dtype.

    Raises:
        MappingError: the global batch is not a multiple of dp * micro_batch_size.
        ConfigError: the hardware has no peak for the workload's dtype.
    """
    training, mapping = experiment.workload.training, experiment.mapping
    num_microbatches = _microbatches(
        "global batch", training.global_batch_size, mapping.dp, mapping.micro_batch_size, "sample"
    )
    storage = TRAINING_STORAGE_DTYPE[training.dtype]
    fp8 = training.dtype == "fp8"
    gemm_dtype = FP8_SCALING[training.fp8_recipe].gemm_dtype
    return Batch(
        num_microbatches=num_microbatches,
        samples_per_iteration=training.global_batch_size,
        tokens_per_iteration=training.global_batch_size * training.seq_len,
        peak_flop_per_s=_peak(experiment, storage, "workload's"),
        dtype=training.dtype,
        elem_bytes=DTYPE_BYTES[storage],
        # a chip without the recipe's peak refuses the run, naming tile.peak.fp8 (or .nvfp4)
        fp8_peak_flop_per_s=_peak(experiment, gemm_dtype, "workload's") if fp8 else 0.0,
        fp8_dtype=gemm_dtype,
    )


def inference_batch(experiment: ExperimentSpec) -> Batch:
    """Micro-batches of a serving run (``batch`` requests) and the peak at its dtype.

    Raises:
        MappingError: indivisible batch, or prompt + output longer than the model's positions.
        ConfigError: the hardware has no peak for the inference dtype.
    """
    inf, mapping = experiment.workload.inference, experiment.mapping
    assert inf is not None, "mode 'inference' without an inference section (loader checks it)"
    num_microbatches = _microbatches(
        "inference batch", inf.batch, mapping.dp, mapping.micro_batch_size, "request"
    )
    max_positions = experiment.workload.model.max_position_embeddings
    if inf.prompt_len + inf.output_len > max_positions:
        raise MappingError(
            f"prompt_len + output_len = {inf.prompt_len + inf.output_len} exceeds the model's "
            f"max_position_embeddings {max_positions}"
        )
    return Batch(
        num_microbatches=num_microbatches,
        samples_per_iteration=inf.batch,
        tokens_per_iteration=inf.batch * inf.output_len,
        peak_flop_per_s=_peak(experiment, inf.dtype, "inference"),
        dtype=inf.dtype,
        elem_bytes=DTYPE_BYTES[inf.dtype],
    )

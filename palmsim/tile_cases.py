"""Cases of the tiled-accelerator measurement format (``schema: tile-validation-cases v1``).

``validation/tiles_measurements.yaml`` (a copy of ``shared/calibration/tiles_measurements.yaml``)
holds published measurements of Tenstorrent and Cerebras systems. A case names its hardware by
``hardware.hw_spec_ref``, a key path into ``tiles_hw_specs.yaml``, which :data:`HARDWARE_OF_SPEC`
maps to a shipped config; ``model``, ``scenario`` and ``measured`` are read as the file's
``conventions:`` block says (``measured`` exactly as published; ``derived`` values are never
compared). :func:`predict` returns ``(metric, measured, predicted)`` triples or raises
:class:`CannotExpressError` with the reason.

Kinds of case and how each is predicted:

- **GEMM** (``model`` has ``M``, ``K``, ``N``): one ``M x K x N`` matmul spread evenly over the
  case's core grid, :func:`palmsim.hardware.compute.op_time_s` with the cores' peak at the
  case's format and math fidelity and the config's GEMM efficiency for that format at that
  fidelity (:meth:`~palmsim.config.specs.TileSpec.efficiency_for`; an out-of-box call,
  ``matmul_config: auto``, at ``tile.auto_format_efficiency`` where given), against
  its DRAM operand traffic (in0/in1/out in DRAM) at the chip's DRAM bandwidth, after the
  chip's fixed op latency (``tile.op_latency``), and untraced (``trace: false``) no less
  than the host's dispatch of one op (``tile.host_dispatch``; of a tuned one, a program
  config of its own, ``tile.host_dispatch_tuned`` where given); ``time_ns``, or without it
  ``tflops`` (:func:`_time_or_rate`).
- **DRAM read**: a read of the chip's whole DRAM over all its channels; GB/s.
- **all-reduce** over ``n`` chips of ``S`` bytes, simulated alone by the engine on the first
  ``n`` chips in palmsim's TP ring order (its closed form is :func:`allreduce_time_s`);
  ``time_us``, or without it ``algbw_GBps`` or ``busbw_GBps``.
- **GEMV** (WaferLLM): ``[1, K] x [K, N]`` over the wafer's cores, weights in SRAM, partial sums
  all-reduced over each column of cores by the tree the case names (or a ring); ``time_ms``.
- **inference** rows (a model with ``hidden``/``layers``): simulated by palmsim's engine with
  the shipped config: a prefill of one request (``ttft_ms``, ``ttft_ms_per_user``, WaferLLM's
  ``prefill_tpr_tokens_per_s``), a batch's decode step at the case's KV length
  (``tokens_per_s_per_user``, ``tokens_per_s``, ``decode_ms_per_token``, WaferLLM's
  ``decode_tpr_tokens_per_s``) and a whole request (WaferLLM's ``e2e_tpr_tokens_per_s``).
  A WaferLLM row runs each phase as WaferLLM's programs do, one layer on its stated cores
  scaled by the layers (:func:`_wafer_simulate`, :func:`waferllm_model`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from palmsim.api import shipped_path
from palmsim.config.loader import hardware_assumptions, load_hardware, load_run, read_config_file
from palmsim.config.overrides import outside_sections
from palmsim.config.specs import (
    DTYPE_BYTES,
    MLP_OF_ACTIVATION,
    PARALLEL_BLOCKS,
    ExperimentSpec,
    HardwareSpec,
    InferenceSpec,
    MappingSpec,
    ModelSpec,
    TrainingSpec,
    WaferSpec,
    WorkloadSpec,
)
from palmsim.errors import ConfigError, MappingError, PalmsimError, value_repr
from palmsim.guard import check_layers
from palmsim.hardware.collectives import RING_STEPS, alltoall_shares, collective_steps
from palmsim.hardware.compute import mesh_gemm_terms, op_time_s
from palmsim.hardware.costs import attention_split_factor, tt_metal_sdpa_q_chunk_rows
from palmsim.units import format_quantity
from palmsim.workload.builders import num_parameters, unmodelled_architecture

__all__ = [
    "HARDWARE_OF_SPEC",
    "TENSTORRENT_FIDELITY",
    "TT_METAL_MLP_DOWN_FORMAT",
    "TT_TRANSFORMERS_EXPERT_FORMAT",
    "TT_TRANSFORMERS_OPS_PER_LAYER",
    "TT_TRANSFORMERS_PREFILL_CHUNK_TOKENS",
    "CannotExpressError",
    "TileFit",
    "allreduce_time_s",
    "calibrate_tiles",
    "case_model",
    "ccl_overrides_of_code",
    "format_tile_calibration",
    "is_tile_case",
    "line_tree_allreduce_time_s",
    "positive_count",
    "predict",
    "prefill_compute_cores",
    "prefill_weight_readers",
    "substitutions",
    "tt_metal_mlp_formats",
]


#: Shipped config of each ``hw_spec_ref`` (longest matching prefix wins).
HARDWARE_OF_SPEC: dict[str, str] = {
    "tenstorrent_wormhole_b0.systems.n150": "hw_configs/wormhole-n150.yaml",
    "tenstorrent_wormhole_b0.systems.n300": "hw_configs/wormhole-n300.yaml",
    "tenstorrent_wormhole_b0.systems.quietbox_t3000": "hw_configs/wormhole-t3000.yaml",
    "tenstorrent_wormhole_b0.systems.galaxy": "hw_configs/wormhole-galaxy.yaml",
    "tenstorrent_wormhole_b0.chip": "hw_configs/wormhole-n150.yaml",
    "tenstorrent_blackhole.systems.p150": "hw_configs/blackhole-p150.yaml",
    "tenstorrent_blackhole.systems.p100a": "hw_configs/blackhole-p100a.yaml",
    "tenstorrent_blackhole.systems.p300": "hw_configs/blackhole-p300.yaml",
    "tenstorrent_blackhole.systems.quietbox_bh": "hw_configs/blackhole-quietbox.yaml",
    "tenstorrent_blackhole.systems.galaxy_bh": "hw_configs/blackhole-galaxy.yaml",
    "tenstorrent_blackhole.chip": "hw_configs/blackhole-p150.yaml",
    "cerebras_wse2": "hw_configs/cerebras-wse2.yaml",
    "cerebras_wse3": "hw_configs/cerebras-wse3.yaml",
}

#: Math fidelity of Tenstorrent GEMMs by weight format where a case does not say: the
#: tt_transformers precision table (models/tt_transformers/PERF.md @040a27c1, quoted in the
#: cases' ``scenario.math_fidelity``): LoFi for bfp4, HiFi2 for bfp8, HiFi4 for bf16.
TENSTORRENT_FIDELITY: dict[str, str] = {"bfp4": "LoFi", "bfp8": "HiFi2", "bf16": "HiFi4"}

#: Device ops one decoder layer of tenstorrent/tt-metal's models/tt_transformers launches per
#: pass on one chip, read from its code (decoder.py @01229001, attention.py @00b769dd, mlp.py
#: @03f118e6, forward_decode): attention norm; QKV matmul, sharded_to_interleaved,
#: nlp_create_qkv_heads_decode, rotary embedding of Q and of K, paged_update_cache of K and of
#: V, SDPA decode, to_memory_config, nlp_concat_heads_decode, WO matmul, to_memory_config;
#: to_memory_config and residual add (decoder); FF norm; W1 and W3 matmuls, mul (SiLU fused),
#: to_memory_config, W2 matmul, to_memory_config; residual add. Its CCLs (TP > 1) are
#: palmsim's collectives and not counted here. Read for decode; its prefill path launches as
#: many (typecasts and paged_fill_cache in place of the layout moves).
TT_TRANSFORMERS_OPS_PER_LAYER = 23

#: The same decoder layer with a mixture of experts in place of its MLP (Mixtral): the MLP's 6
#: ops (W1, W3, mul, to_memory_config, W2, to_memory_config) give way to TtMoeLayer's 11 per
#: decode pass (models/tt_transformers/tt/mixtral_moe.py @07fed00b forward: gate matmul,
#: add of the top-8 mask, ttnn.moe (the top-2 weights), the chip's expert, the mul by its
#: weight, then after its all-reduce two to_memory_config; the expert, mixtral_mlp.py
#: @00b0fa3f: W1 (SiLU fused), W3, mul, W2, to_memory_config). Its reshapes of a 32-row
#: batch change no data and launch nothing.
TT_TRANSFORMERS_MOE_OPS_PER_LAYER = TT_TRANSFORMERS_OPS_PER_LAYER - 6 + 11

#: Device ops one decoder layer of tt_transformers launches on a Galaxy's 2-D mesh (TP = 32, its
#: ``is_galaxy`` path) beyond the one-chip count :data:`TT_TRANSFORMERS_OPS_PER_LAYER`, by the
#: model's width, read from its decode path (attention.py @00b769dd forward_decode, mlp.py
#: @03f118e6, ccl.py @013eaee3 tt_all_reduce; the CCL calls themselves are palmsim's
#: collectives). On a 2-D mesh tt_all_reduce is not one collective op but an all_gather_async
#: then a to_memory_config and a fast_reduce_nc of the gathered copies (+2; its typecasts do
#: not run: every input it gets is already in the CCL's ``ccl_dtype``, bfp8); at width 8192
#: the attention's output and W2's all-reduces are composite (``use_composite``: a
#: reduce-scatter and an all-gather, no extra op) and W1/W3 reduce-scatter. Narrower models:
#: the QKV all-reduce (+2), a batch-slicing matmul after it (+1), no sharded_to_interleaved
#: (-1), a to_memory_config and a user-selection matmul before WO (+2), the WO all-reduce
#: (+2), no final to_memory_config (-1): +5 in the attention; W1's and W3's all-reduces (+2
#: each), no to_memory_config before W2 (-1), W2's all-reduce (+2): +5 in the MLP; both norms
#: distributed (rms_norm_pre_all_gather and rms_norm_post_all_gather around an all-gather, +1
#: each): 12 in all. Width 8192: the QKV all-reduce (+2), the slicing matmul (+1), no
#: sharded_to_interleaved (-1), the to_memory_config and user-selection matmul (+2), no final
#: to_memory_config (-1): +3; the MLP's to_memory_config after its all-gather in place of the
#: one before W2: 0; the norms +2: 5 in all. Read for decode; a prefill takes the same count,
#: as it does the one-chip one (its tt_all_reduce also gathers, moves and reduces).
TT_TRANSFORMERS_MESH_EXTRA_OPS = {"composite": 5, "gathered": 12}
#: The model width at which tt_transformers' TG path runs its composite all-reduces
#: (``use_composite=True if self.hidden_size == 8192``; the same test picks W1/W3's
#: reduce-scatters).
TT_TRANSFORMERS_COMPOSITE_WIDTH = 8192

#: The shipped config whose collective settings are those of tt-metal's generic CCL ops
#: (ttnn.experimental.all_gather_async and reduce_scatter_minimal_async, the ops
#: tt_transformers calls on every mesh: ccl.py @013eaee3): fitted to the LoudBox's
#: measurements of those ops (tech_reports/CCLs summaries), on the same Wormhole chips and
#: Ethernet as a Galaxy. wormhole-galaxy.yaml describes the faster fused CCL ops of the
#: Galaxy Llama demo instead (its comment on system.link), so a tt_transformers run on a
#: Galaxy takes these settings of this file (:data:`TT_METAL_GENERIC_CCL_KEYS`); its link
#: count stays the Galaxy's (ccl.py get_num_links: "TG": (4, 3)).
TT_METAL_GENERIC_CCL_CONFIG = "hw_configs/wormhole-t3000.yaml"
TT_METAL_GENERIC_CCL_KEYS = (
    "collective_latency",
    "link.bandwidth",
    "link.latency",
    "composite_all_reduce",
    "reduce_scatter_efficiency",
    "reduce_scatter_step_latency",
    "injection_efficiency",
    "ring_fabric_efficiency",
)

#: The most chips tt_transformers runs its collectives over as rings: its
#: ``ModelArgs.ccl_topology`` (models/tt_transformers/tt/model_config.py) returns
#: ``ttnn.Topology.Ring`` for 8 devices only (a T3K; in later versions also a 6U Galaxy's
#: 8-chip submesh) and ``ttnn.Topology.Linear`` for every other mesh, the topology its
#: attention, MLP and norms pass to every CCL call (tt_all_reduce and tt_all_gather in ccl.py
#: @013eaee3 default to Linear too). A model over a whole Galaxy so runs its collectives as
#: lines, the torus's wrap-around links idle.
TT_TRANSFORMERS_RING_CHIPS = 8

#: Device ops one decoder layer of tenstorrent/tt-metal's models/demos/llama3_70b_galaxy
#: launches per decode pass on each of its 32 chips, as the demo's decoder device-perf test
#: measures them (tests/decoder_perf_targets_6u.json and _4u.json, one entry per op, kept
#: since PR #22615 of 2025-05-27 "based on average of 3 runs"): 16 ops a layer, of which 6
#: are CCLs alone, palmsim's collectives (mapping.tp_2d) and not counted here: AllGatherConcat
#: (the attention outputs' all-gather with the head concat fused, PR #19788),
#: LlamaReduceScatterCreateHeads (the QKV reduce-scatter with the head split), the all-gather
#: before W2, W3's reduce-scatter and the two AllReduceAsync. The other 10: two RMSAllGather
#: (each norm with its statistics all-gather and the residual add fused in one op: PR #19816
#: of 2025-03-27 joined the pre-norm and the all-gather, PR #21698 of 2025-05-06 the pre-
#: and post-norm and the residual add, "from 160 [adds] to 1"), the QKV matmul,
#: RotaryEmbeddingLlamaFusedQK, PagedUpdateCache, the SDPA decode, the WO matmul, Matmul_RS
#: (the W1 and W3 matmuls with W1's reduce-scatter fused), the mul (SiLU fused) and the W2
#: matmul. A later snapshot of the code (tt/llama_decoder.py @05a9b478, tt/distributed_norm.py
#: @0b50bdd8) calls the unfused norm (pre, all-gather, post), two residual adds and a
#: to_memory_config, its fused calls commented out: 15 ops; the Galaxy rows date from 25 July
#: 2025 (PERF.md), after the fusions.
GALAXY_LLAMA_OPS_PER_LAYER = 10

#: The same decoder layer's device ops per prefill pass (inference.prefill_ops_per_layer), read
#: from the same files' prefill paths (llama_decoder.py forward with mode "prefill";
#: llama_attention.py forward_prefill, a prompt of at most 1024 tokens or a batch, paged;
#: llama_mlp.py forward_prefill): the attention norm twice (the prefill branch calls it twice),
#: each rms_norm_pre_all_gather and rms_norm_post_all_gather; to_memory_config; the QKV
#: matmul, nlp_create_qkv_heads, typecast of Q to bf16, its rotary_embedding_llama, typecast
#: of K to bf16, its rotary embedding, typecasts of K and V to bfp8, paged_fill_cache of K and
#: of V, typecast of Q to bfp8, SDPA, nlp_concat_heads, WO matmul; residual add; FF norm (pre
#: and post); W1 matmul, W3 matmul, mul (SiLU fused), W2 matmul; residual add. Its CCLs (the
#: QKV and WO all-reduces, the norms' all-gathers, W1's and W3's reduce-scatters, the
#: all-gather before W2 and W2's all-reduce) are palmsim's collectives, as in decode.
GALAXY_LLAMA_PREFILL_OPS_PER_LAYER = 27

#: Links a direction between neighbouring chips the same demo's prefill collectives run on, on a
#: Wormhole Galaxy: 3 of its 4 (``hw.system.link.count``). Every prefill CCL call passes
#: ``num_links=3``: the QKV and WO all-reduces (llama_attention.py forward_prefill, in
#: models/demos/llama3_subdevices @0187679c before the rows' July 2025 runs and in
#: llama3_70b_galaxy @00d4c974 after them), W1's and W3's reduce-scatters, the all-gather before
#: W2 and W2's all-reduce (llama3_subdevices/tt/llama_mlp.py forward_prefill @008b6a3b;
#: llama3_70b_galaxy/tt/llama_mlp.py @0457767c: "Wormhole keeps main's fixed prefill link count
#: (3)"). Its decode keeps the configuration's links.
GALAXY_LLAMA_PREFILL_LINKS = 3

#: Device ops one decoder layer of tt-metal's Falcon 7B demos launches per decode step on one
#: chip (models/demos/wormhole/falcon7b, t3000/falcon7b and tg/falcon7b, all data-parallel
#: copies of models/demos/falcon7b_common), read from its code in the demos' decode
#: configuration 'BFLOAT16-L1_SHARDED' (falcon_decoder.py @755ebbd1, falcon_attention.py
#: @a4114eee, falcon_mlp.py @10fee464): interleaved_to_sharded, layer_norm,
#: sharded_to_interleaved; the fused QKV matmul, nlp_create_qkv_heads_falcon7b, rotary
#: embedding of Q and of K, update_cache of K, slice, interleaved_to_sharded, pad of Q (71 to 96
#: heads), transpose, reshape_on_device, interleaved_to_sharded, transpose of K, the Q.K^T
#: matmul, scale_mask_softmax_in_place, update_cache of V, slice, interleaved_to_sharded, the
#: scores.V matmul, sharded_to_interleaved, reshape_on_device, transpose, slice,
#: nlp_concat_heads, the dense matmul; the h-to-4h (GELU fused) and 4h-to-h matmuls; two adds.
#: Its attention is unfused (two matmuls and a softmax). Its prefill of 128 tokens launches 21.
FALCON7B_OPS_PER_LAYER = 31

#: The same for tt-metal's Falcon 40B demo (models/demos/t3000/falcon40b, tensor parallel over
#: 8 chips; decode configuration 'BFLOAT8_B-SHARDED'; falcon_decoder.py @7d67fadd,
#: falcon_attention.py and falcon_mlp.py @1a481dbe): 32 device ops a layer around its three
#: collectives (two all-gathers and a reduce-scatter, palmsim's TP collectives): the layer
#: norms of both branches, a sharded/interleaved move before and after each collective and
#: around QKV, the QKV matmul, create heads, rotary of Q and K, update_cache, slice and
#: interleaved_to_sharded of K and of V, a transpose, group_attn_matmul (Q.K^T), softmax,
#: group_attn_matmul (scores.V), concat heads, the dense, h-to-4h and 4h-to-h matmuls, two adds.
FALCON40B_OPS_PER_LAYER = 32

#: Passes tt-metal's Falcon demos replay from a trace: none. Their demo.py
#: (models/demos/falcon7b_common/demo/demo.py, models/demos/t3000/falcon40b/demo/demo.py
#: @006efec6) and perf tests run prefill and decode op by op, each op dispatched by the host.
FALCON_TRACE = "none"

#: Columns of the 2-D multicast matmul grid tt_transformers runs its prefill weight GEMMs on,
#: on Wormhole: ``dram_shard_grid_width = 8 if is_wormhole_b0() else self.dram_grid_size.x``
#: (models/tt_transformers/tt/model_config.py; each column's in1 sender reads one DRAM shard).
TT_TRANSFORMERS_WORMHOLE_PREFILL_COLUMNS = 8

#: Cores tt_transformers runs its prefill GEMMs and SDPA on, on any chip
#: (``inference.prefill_compute_cores``): models/tt_transformers/tt/model_config.py builds every
#: prefill matmul on ``find_prefill_grid(row_tiles, col_tiles)``, ``max_rows, max_cols = 8, 8``
#: ("TODO Improve configuration for BH (higher core grid than WH)"; ``prefill_rows = 8`` "TODO
#: if BH = 10"), 8 x 8 for every Llama width (a multiple of 8 tiles), and its prefill SDPA on
#: ``compute_with_storage_grid_size=(8, 8)`` (SDPA_PROGCFG). A Wormhole's compute grid is 8 x 8,
#: a Blackhole's 13 x 10 (p150) or 11 x 10 (p100a), of which the prefill uses 64.
TT_TRANSFORMERS_PREFILL_GRID_CORES = 8 * 8

#: Tokens per prefill pass of tt_transformers (``inference.prefill_chunk_tokens``): a longer
#: prompt is prefilled in chunks, each attending to the cached chunks before it (generator.py,
#: chunked SDPA over the paged cache). models/tt_transformers/tt/model_config.py sets the
#: chunk per model and device (MAX_PREFILL_CHUNK_SIZES_DIV1024, in units of 1024 tokens) and
#: falls back to 4 for a pair it does not list ("setting MAX_PREFILL_CHUNK_SIZE to 4 for
#: compatibility"); 4 is also the smallest it gives any listed model (Llama 3.1 8B and
#: Qwen 2.5 7B on an n150). palmsim runs every tt_transformers row at that fallback: the chunk
#: changes how often a long prompt's weights are re-read and how much activation memory a
#: pass holds, not its attention FLOP.
TT_TRANSFORMERS_PREFILL_CHUNK_TOKENS = 4 * 1024

#: The format tt_transformers' prefill reduce-scatters a layer block's output in on a 1-D
#: mesh (``inference.prefill_reduce_dtypes``). Its attention's WO writes bfp8
#: (models/tt_transformers/tt/attention.py @00b769dd, forward_prefill: ``dtype=
#: self.activation_dtype or ttnn.bfloat8_b``, no activation dtype in the performance
#: configs; older versions ``dtype=ttnn.bfloat8_b``), and tt_all_reduce on an N300 or a T3000
#: is a reduce_scatter_minimal_async of what it is given (ccl.py @013eaee3), the next norm
#: all-gathering the bf16 residual (distributed_norm.py @01229001). On a ring the attention
#: all-gathers its bfp8 heads before a column-split WO instead (use_fused_all_gather_matmul):
#: the same bytes, taken as the reduce-scatter. The MLP's W2 writes bf16 off a Galaxy in the
#: versions of mlp.py read that run it as ttnn.linear (``dtype=self.args.ccl_dtype if TG else
#: activation_dtype or ttnn.bfloat16``), so it keeps one bf16 all-reduce; the version that
#: runs it as minimal_matmul over 128 tokens (@03f118e6) keeps its bfp8 input's format, but
#: its date against the rows' releases is not established, so it is not taken.
TT_TRANSFORMERS_PREFILL_REDUCE_DTYPES = (("attn", "bfp8"),)

#: The attention core of tt-metal's model demos (tt_transformers and the Galaxy Llama demo):
#: ttnn.transformer.scaled_dot_product_attention, a flash-attention kernel over chunks of the
#: queries and keys (SDPAProgramConfig's q_chunk_size and k_chunk_size, tt_transformers
#: model_config.py SDPA_PROGCFG) with an online softmax: no s x s score tensor
#: (inference.attention_kernel 'fused'). WaferLLM's programs multiply QK^T and the scores by
#: V as two MeshGEMMs, its scores spread over the cores: 'unfused'.
TT_METAL_ATTENTION = "fused"

#: Passes the Galaxy demo replays from a trace: demo/text_demo.py @0009006b sets
#: ``enable_trace = True`` and ``prefill_enable_trace = True`` (inference.trace 'all').
GALAXY_LLAMA_TRACE = "all"

#: Passes whose layer weights the Galaxy demo streams with its DRAM prefetcher (the ops count
#: above is its prefetcher path): decode. tt/llama_model.py @00ab7c95: setup_decode builds
#: TtLlamaPrefetcherSetup with n_tensors=5 (a layer's QKV, WO, W1, W3 and W2 weights, read
#: by prefetcher cores into a global circular buffer the matmuls consume), setup_prefill
#: with n_tensors=0 (inference.weight_prefetch 'decode').
GALAXY_LLAMA_WEIGHT_PREFETCH = "decode"

#: Cores of the SDPA decode program grid the Galaxy demo builds, and the users it builds it
#: for on each chip: tt/model_config.py @c7dc9592 ``PAGED_SDPA_DECODE_PROGCFG`` (and the
#: non-paged one), ``compute_with_storage_grid_size=(8, 4)`` over 32 cores of its sub-core
#: grids; its 32 users split over the 4 row groups, ``batch_size_per_device_group`` 8
#: (tt/llama_attention.py), live or not. sdpa_decode_program_factory.cpp gives each user
#: ``num_cores_per_batch`` = cores / users of them: 4 (inference.decode_attention_cores).
GALAXY_LLAMA_SDPA_DECODE_CORES = 32
GALAXY_LLAMA_USERS_PER_CHIP = 8

#: Cores of tt_transformers' SDPA decode program grid: model_config.py
#: ``SDPA_DECODE_PROGCFG`` ``compute_with_storage_grid_size=(8, 8)``, built for the demo's
#: batch on every chip (its users are not split over TP ranks).
TT_TRANSFORMERS_SDPA_DECODE_CORES = 64

#: Math fidelity of the SDPA decode in tt_transformers and the Galaxy Llama demo
#: (``inference.decode_attention_fidelity``): HiFi2, where both prefill at HiFi4.
#: tt_transformers' precision sweep lists ``sdpa_decode: hifi2na`` against ``sdpa_prefill:
#: hifi4`` in every configuration (models/tt_transformers/PERF.md @040a27c1, "Llama 3 model
#: precision and math fidelity"); the Galaxy demo builds its ``SDPA_DECODE_COMPUTE_PROGCFG``
#: with ``math_fidelity=ttnn.MathFidelity.HiFi2`` (models/demos/llama3_70b_galaxy/tt/
#: model_config.py).
TT_METAL_SDPA_DECODE_FIDELITY = "HiFi2"

#: Cores tt-metal's SDPA decode gives one request's KV head at most
#: (``inference.decode_attention_cores_per_head``): ``SDPAProgramConfig.
#: max_cores_per_head_batch``, 16 by default (ttnn/cpp/ttnn/operations/transformer/
#: sdpa_config.hpp; tech_reports/FlashAttention/FlashDecode.md Sec. 3.1: "we limit the
#: maximum number of cores assigned to one work to 16"), which neither demo's program configs
#: set. A T3000's chip holds one KV head of a Llama 8B, so a one-request decode runs its
#: attention on 16 of the 64 cores.
TT_METAL_SDPA_DECODE_MAX_CORES_PER_HEAD = 16

#: The batch tt-inference-server serves tt_transformers models with, its vLLM's
#: ``max_num_seqs``: every tt_transformers entry of its model specs sets ``max_num_seqs`` 32
#: (``max_concurrency`` 32; tenstorrent/tt-inference-server model_specs_output.json
#: @12bc2e0d), so the SDPA decode of a served case that states no max_num_seqs is built for 32.
TT_INFERENCE_SERVER_MAX_NUM_SEQS = 32

#: Where the Galaxy demo keeps a user's KV cache (``inference.kv_placement``): whole on the 8
#: chips of the user's device group, one of the mesh's 4 (tt/llama_attention.py @00d4c974:
#: ``batch_size_per_device_group = max_batch_size // num_device_groups`` users a group, and
#: prefill_prepare_tensor_for_kv_cache fills the cache on "every 4th tensor starting from
#: user_id // 8" only), so with fewer users than groups the others hold none: 'request'.
GALAXY_LLAMA_KV_PLACEMENT = "request"

#: When the Galaxy demo began splitting a prefill's attention over the 4 ranks that hold the
#: same heads (``inference.prefill_attention_2d: split``): tenstorrent/tt-metal PR #28992
#: "Llama TG: integrate ring distributed SDPA", merged 2025-09-21, runs
#: ring_distributed_scaled_dot_product_attention for prompts over 1024 tokens at batch 1
#: (tt/llama_attention.py ``ring_distributed_sdpa = seq_len > 1024 and batch_size == 1``);
#: before it every rank computed its 8 heads' whole attention ('replicated').
GALAXY_RING_SDPA_SINCE = (2025, 9, 21)

#: When tt-metal's SDPA began dealing a causal pass's query-chunk pairs to its cores flat
#: (``inference.prefill_attention_split: pairs``): PR #44614 "SDPA: global Q scheduling for
#: single-chip path", 2026-05-18; before it the cores split the users, then the heads, then the
#: chunks ('heads_first'; :func:`palmsim.hardware.costs.attention_split_factor`).
TT_METAL_SDPA_PAIRS_SINCE = (2026, 5, 18)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "(" + "|".join(_MONTHS) + r")[a-z]*\.?"  # "Nov", "November", "Sept."
#: A date in a case's source: day month year ("section '25 July 2025'"), month day, year
#: ("'Last Update: Nov 3, 2025'") or ISO 8601 ("2025-07-25").
_DAY_MONTH_YEAR = re.compile(rf"\b(\d{{1,2}})\s+{_MONTH}\s+(20\d{{2}})\b")
_MONTH_DAY_YEAR = re.compile(rf"\b{_MONTH}\s+(\d{{1,2}}),\s*(20\d{{2}})\b")
_ISO_DATE = re.compile(r"\b(20\d{2})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\b")


def _source_date(case: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """The latest date the texts of ``case``'s ``source`` give, as (year, month, day), or
    None."""
    source = case.get("source") or {}
    texts = " ".join(map(str, source.values())) if isinstance(source, Mapping) else str(source)
    dates = [(int(y), _MONTHS.index(m) + 1, int(d)) for d, m, y in _DAY_MONTH_YEAR.findall(texts)]
    dates += [(int(y), _MONTHS.index(m) + 1, int(d)) for m, d, y in _MONTH_DAY_YEAR.findall(texts)]
    dates += [(int(y), int(m), int(d)) for y, m, d in _ISO_DATE.findall(texts)]
    return max(dates) if dates else None


def tt_metal_attention_split(case: Mapping[str, Any]) -> str:
    """``inference.prefill_attention_split`` of a row run on tt-metal's SDPA: 'heads_first'
    for a row dated before :data:`TT_METAL_SDPA_PAIRS_SINCE` (its source's date,
    :func:`_source_date`), else 'pairs' (an undated row runs the later code)."""
    date = _source_date(case)
    return "heads_first" if date is not None and date < TT_METAL_SDPA_PAIRS_SINCE else "pairs"


def galaxy_prefill_attention(case: Mapping[str, Any], prompt_len: int, batch: int) -> str:
    """``inference.prefill_attention_2d`` of a Galaxy Llama demo row: 'split' where the demo's
    code ran its ring-distributed SDPA (:data:`GALAXY_RING_SDPA_SINCE`, a prompt over 1024
    tokens prefilled one user at a time: its README's batched prefill takes 32 users together
    up to 2048 tokens), 'replicated' otherwise or for a row dated before it (the date in the
    case's ``source``, e.g. PERF.md's section title; an undated row runs the later code)."""
    date = _source_date(case)
    if date is not None and date < GALAXY_RING_SDPA_SINCE:
        return "replicated"
    one_at_a_time = batch == 1 or prompt_len > 2048
    return "split" if prompt_len > 1024 and one_at_a_time else "replicated"


#: The mesh the Galaxy demo shards every weight over, (cluster axis 0, axis 1): its code
#: builds the model on the Galaxy's 8x4 mesh with ``ShardTensor2dMesh`` of WQKV, WO and
#: W1-W3 (llama_attention.py @00d4c974, llama_mlp.py @0457767c), so a row of that demo on 32
#: chips runs 2-D tensor parallelism whether or not its text says so.
GALAXY_LLAMA_TP_2D = (8, 4)

#: Spellings of number formats in the cases.
_FORMATS = {
    "bfloat16": "bf16",
    "bf16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "bfloat8_b": "bfp8",
    "bfp8": "bfp8",
    "bfloat4_b": "bfp4",
    "bfp4": "bfp4",
}


#: Most decode steps or micro-batches a case may ask palmsim to simulate one by one.
MAX_STEPS = 100_000


class CannotExpressError(Exception):
    """A case palmsim cannot express; the message says why."""


def is_tile_case(case: Mapping[str, Any]) -> bool:
    """Whether ``case`` is in this format (its hardware is named by ``hw_spec_ref``)."""
    hardware = case.get("hardware")
    return isinstance(hardware, Mapping) and "hw_spec_ref" in hardware


#: The systems of a chip family in tiles_hw_specs.yaml, for a ``hw_spec_ref`` that names the
#: family alone (its root key, a path into the file as any other): each system's words in a
#: ``hardware.name`` and its chips (tiles_hw_specs.yaml ``systems``: an n300 card holds two
#: Wormholes, a T3000 eight, a Galaxy 32; a p300 two Blackholes, a Blackhole QuietBox four
#: p300 cards, a Blackhole Galaxy 32). A family root with neither takes the family's chip.
FAMILY_SYSTEMS: dict[str, tuple[tuple[str, str, int], ...]] = {
    "tenstorrent_wormhole_b0": (
        ("n150", r"n150", 1),
        ("n300", r"n300", 2),
        ("quietbox_t3000", r"t3000|t3k|quiet\s*box|loud\s*box", 8),
        ("galaxy", r"galaxy|(?<![a-z])tg(?![a-z])", 32),
    ),
    "tenstorrent_blackhole": (
        ("p100a", r"p100", 1),
        ("p150", r"p150", 1),
        ("p300", r"p300", 2),
        ("quietbox_bh", r"quiet\s*box", 8),
        ("galaxy_bh", r"galaxy", 32),
    ),
}


def _family_system(case: Mapping[str, Any], family: str) -> str:
    """The ``hw_spec_ref`` of the system a case naming the chip family ``family`` alone runs
    on (:data:`FAMILY_SYSTEMS`): the system its ``hardware.name`` names, else the one with
    its ``hardware.system.chips``, else the family's chip."""
    systems = FAMILY_SYSTEMS[family]
    name = str(case["hardware"].get("name") or "").lower()
    named = [key for key, words, _ in systems if re.search(words, name)]
    if len(named) == 1:
        return f"{family}.systems.{named[0]}"
    given = _system(case).get("chips")
    chips = [key for key, _, n in systems if given is not None and str(given).strip() == str(n)]
    if given is not None and str(given).strip() != "1" and len(chips) == 1:
        return f"{family}.systems.{chips[0]}"
    return f"{family}.chip"


def spec_ref(case: Mapping[str, Any]) -> str:
    """The case's ``hardware.hw_spec_ref``, a chip family's root resolved to the system the
    case names (:func:`_family_system`)."""
    ref = str(case["hardware"]["hw_spec_ref"]).strip()
    return _family_system(case, ref) if ref in FAMILY_SYSTEMS else ref


def hardware_config(case: Mapping[str, Any]) -> tuple[str, str]:
    """The shipped config a case runs on (:data:`HARDWARE_OF_SPEC`, the longest key its
    ``hardware.hw_spec_ref`` starts with, :func:`spec_ref`) and why, for the report.

    Raises:
        CannotExpressError: no shipped config matches the reference.
    """
    ref = spec_ref(case)
    matches = [key for key in HARDWARE_OF_SPEC if ref == key or ref.startswith(key + ".")]
    if not matches:
        known = ", ".join(HARDWARE_OF_SPEC)
        raise CannotExpressError(f"no shipped config for hw_spec_ref {ref!r} (known: {known})")
    key = max(matches, key=len)
    return HARDWARE_OF_SPEC[key], f"hardware.hw_spec_ref {key}"


def _hardware_path(case: Mapping[str, Any]) -> str:
    return shipped_path(hardware_config(case)[0])


def _system(case: Mapping[str, Any]) -> Mapping[str, Any]:
    """The case's ``hardware.system`` mapping; ``{}`` when absent (a field it needs is then
    named as missing)."""
    hardware = case.get("hardware")
    system = hardware.get("system") if isinstance(hardware, Mapping) else None
    return system if isinstance(system, Mapping) else {}


#: The serving code a Tenstorrent model row runs where neither its ``scenario.demo`` nor its
#: source names one: tt-metal's general LLM code (models/tt_transformers, which the
#: models/README.md LLM table's rows run but for the Galaxy Llama and Falcon demos), so the
#: row takes its op count, trace, readers and CCL settings (``validate`` marks it).
TT_METAL_DEFAULT_CODE = "models/tt_transformers"


def _names_no_code(case: Mapping[str, Any]) -> bool:
    """Whether a Tenstorrent model row names no serving code (no ``scenario.demo``, a source
    path of none whose code palmsim has read, :func:`_demo_ops_per_layer`)."""
    scenario = case.get("scenario")
    demo = scenario.get("demo") if isinstance(scenario, Mapping) else None
    hardware = case.get("hardware")
    ref = str(hardware.get("hw_spec_ref", "")) if isinstance(hardware, Mapping) else ""
    path = _source_path(case)
    return (
        ref.startswith("tenstorrent")
        and not str(demo or "").strip()
        and _demo_ops_per_layer(path) == 0
    )


def _serving_code(case: Mapping[str, Any]) -> str:
    """The text naming the serving code a case ran: its ``scenario.demo`` and source path,
    or :data:`TT_METAL_DEFAULT_CODE` for a Tenstorrent row that names none."""
    scenario = case.get("scenario") or {}
    code = f"{scenario.get('demo', '')} {_source_path(case)}"
    return f"{code} {TT_METAL_DEFAULT_CODE}" if _names_no_code(case) else code


def _source_path(case: Mapping[str, Any]) -> str:
    """The path of the code or document a case cites: ``source.path``, or ``source`` itself
    when it is one line of text."""
    source = case.get("source")
    if isinstance(source, Mapping):
        return str(source.get("path", ""))
    return "" if source is None else str(source)


def _number(value: Any) -> float | None:
    """A measured number, or None for ranges and text (e.g. '239-260')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


#: The range of a figure :func:`calibrate_tiles` fits, in its own unit (ns, GB/s, bytes):
#: wide beyond any measurement, and narrow enough that a fit can square and invert it,
#: scaled to SI, without leaving floating point's range.
_FIGURE_RANGE = (1e-100, 1e100)


def _positive(value: Any, what: str) -> float:
    """``value`` (a number, or its text) as a finite number > 0, or CannotExpressError naming
    ``what``: a measured time or rate, or a size, that :func:`calibrate_tiles` divides by."""
    number = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise CannotExpressError(f"{what} {value_repr(value)} is not a positive number")
    low, high = _FIGURE_RANGE
    if not low <= number <= high:
        raise CannotExpressError(f"{what} {value_repr(value)} is not between {low:g} and {high:g}")
    return number


def _measured(figures: Mapping[str, Any], key: str) -> float:
    """The measured figure ``key`` (:func:`_positive`)."""
    if figures.get(key) is None:
        raise CannotExpressError(f"no measured {key}")
    return _positive(figures[key], f"measured {key}")


def positive_count(value: Any, what: str) -> int:
    """``value`` as an int >= 1, or CannotExpressError naming ``what``. Text may give the
    number with its unit word after it, as a table writes it ("32 users", "1,024 tokens")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CannotExpressError(f"{what} {value!r} is not a positive number")
    text = value
    if isinstance(value, str):
        worded = re.fullmatch(
            r"\s*(\d[\d,]*(?:\.\d+)?)(?:\s+(?!(?:[kmg]|thousand|million)\b|x\s*\d)[a-z(].*)?\s*",
            value,
            re.IGNORECASE,
        )
        text = worded.group(1).replace(",", "") if worded else value
    try:
        number = float(text)
    except ValueError:
        raise CannotExpressError(f"{what} {value!r} is not a positive number") from None
    if not (number >= 1 and math.isfinite(number)):
        raise CannotExpressError(f"{what} {value!r} is not a positive number")
    if number != int(number):
        raise CannotExpressError(f"{what} {value!r} is not a whole number")
    if number > 2**53:  # a float counts exactly up to 2^53
        raise CannotExpressError(f"{what} {value!r} is too large to count")
    return int(number)


def _format(text: Any) -> str:
    key = str(text).strip().lower()
    if key not in _FORMATS:
        raise CannotExpressError(
            f"number format {text!r} is not modelled (known: {', '.join(_FORMATS)})"
        )
    return _FORMATS[key]


def _untraced(scenario: Mapping[str, Any]) -> bool:
    """Whether a microbenchmark ran without trace (``scenario.trace: false``)."""
    return str(scenario.get("trace", "")).strip().lower() in ("false", "no", "off")


def _auto_config(scenario: Mapping[str, Any]) -> bool:
    """Whether a GEMM ran tt-metal's auto-selected program config (``matmul_config: auto``,
    the GEMM report's out-of-box tables), not a tuned one."""
    return str(scenario.get("matmul_config", "")).strip().lower() == "auto"


def _grid(text: Any) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", str(text))
    if not match:
        raise CannotExpressError(f"core grid {text!r} is not 'ROWSxCOLS'")
    return positive_count(match.group(1), "core grid rows"), positive_count(
        match.group(2), "core grid cols"
    )


def _size(text: str) -> int:
    """'16K' -> 16384."""
    match = re.fullmatch(r"(\d+)([KkMm]?)", text.strip())
    if not match:
        raise CannotExpressError(f"dimension {text!r} is not a number")
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return int(match.group(1)) * scale


def _cores_of(hw: HardwareSpec) -> int:
    """Physical cores in one simulated tile."""
    return hw.wafer.unit_rows * hw.wafer.unit_cols if hw.wafer is not None else 1


def _core_peak(hw: HardwareSpec, dtype: str, fidelity: str | None) -> float:
    passes = dict(hw.tile.fidelity_passes)
    if fidelity and passes and fidelity not in passes:
        raise CannotExpressError(
            f"math fidelity {fidelity!r} is not one of {hw.name}'s ({', '.join(passes)})"
        )
    try:
        return hw.tile.peak_for(dtype, fidelity) / _cores_of(hw)
    except KeyError:
        raise CannotExpressError(f"{hw.name} has no peak for {dtype}") from None


def _chip_grid(text: Any, hw: HardwareSpec) -> tuple[int, int]:
    """A microbenchmark's core grid (``'ROWSxCOLS'``), at most the cores of one chip."""
    rows, cols = _grid(text)
    assert hw.wafer is not None
    chip = hw.wafer.tile_rows * hw.wafer.unit_rows * hw.wafer.tile_cols * hw.wafer.unit_cols
    if rows * cols > chip:
        raise CannotExpressError(f"core grid {text!r}: {hw.name}'s chip has {chip} cores")
    return rows, cols


def _dram_bandwidth(hw: HardwareSpec) -> float:
    """One chip's DRAM bandwidth: the sum over the DRAM channels of die 0."""
    from palmsim.hardware.chip import Chip

    chip = Chip.from_spec(hw)
    ports = [p for p in chip.dram_ports if chip.die_of(p.tile) == 0]
    if not ports or hw.dram.capacity_bytes == 0:
        raise CannotExpressError(f"{hw.name} has no off-chip memory")
    return sum(chip.channels[p.channel].bandwidth_bytes_per_s for p in ports)


# ----------------------------------------------------------------------------- microbenchmarks


def _mesh_gemm_terms(case: Mapping[str, Any], hw: HardwareSpec) -> list[int] | None:
    """A GEMM microbenchmark's MeshGEMM terms on its core grid, the times ``tile.mesh_gemm``'s
    four costs are multiplied by (:func:`mesh_gemm_time_s`): ``P`` steps, ``P Kt`` register
    loads, ``P Kt Nt`` vector instructions and ``P Mt Kt Nt`` multiply-accumulates; None
    where the chip runs no MeshGEMM or the GEMM has fewer rows than the grid (a GEMV)."""
    if hw.tile.mesh_gemm is None:
        return None
    model, scenario = case["model"], case["scenario"]
    m, k, n = (positive_count(model[d], f"GEMM {d}") for d in ("M", "K", "N"))
    rows, cols = _chip_grid(scenario.get("core_grid") or _system(case).get("parallelism"), hw)
    if m < rows:
        return None
    return list(mesh_gemm_terms(m, k, n, mesh_rows=rows, mesh_cols=cols))


def _gemm(case: Mapping[str, Any], hw: HardwareSpec) -> list[tuple[str, float, float]]:
    model, scenario, measured = case["model"], case["scenario"], case["measured"]
    m, k, n = (positive_count(model[d], f"GEMM {d}") for d in ("M", "K", "N"))
    dtype = _format(scenario.get("dtype"))
    fidelity = scenario.get("math_fidelity")
    rows, cols = _chip_grid(scenario.get("core_grid") or _system(case).get("parallelism"), hw)
    cores = rows * cols
    flop = 2.0 * m * k * n
    elem = DTYPE_BYTES[dtype]
    sram_bytes = cores * hw.tile.sram_capacity_bytes / _cores_of(hw)
    if hw.dram.capacity_bytes == 0 and (m * k + k * n + m * n) * elem > sram_bytes:
        raise CannotExpressError(
            f"GEMM {m}x{k}x{n}: its operands exceed the {format_quantity(sram_bytes, 'bytes')} "
            f"of SRAM of its {rows}x{cols} cores, and {hw.name} has no off-chip memory"
        )
    mesh, terms = hw.tile.mesh_gemm, _mesh_gemm_terms(case, hw)
    if mesh is not None and terms is not None:
        # a wafer's GEMM over the case's cores: a MeshGEMM (TileSpec.mesh_gemm)
        costs = (mesh.step_s, mesh.per_k_s, mesh.per_column_s, mesh.per_mac_s)
        time_s = sum(t * c for t, c in zip(terms, costs, strict=True))
        return _time_or_rate(measured, "time_ns", 1e-9, time_s, _tflops_rate(flop))
    # operands in DRAM unless the case says otherwise; a chip without off-chip memory (a
    # wafer's) holds them in its cores' SRAM
    default = "DRAM" if hw.dram.capacity_bytes > 0 else "SRAM"
    dram_bytes = sum(
        size * elem
        for size, where in ((m * k, "in0_storage"), (k * n, "in1_storage"), (m * n, "out_storage"))
        if str(scenario.get(where, default)).upper().startswith("DRAM")
    )
    auto = _auto_config(scenario)
    # an out-of-box call's output reaches DRAM after its math (:func:`_auto_output_bytes`)
    written = _auto_output_bytes(case) if auto else 0.0
    compute_s = op_time_s(
        flop / cores,
        0.0,
        peak_flop_per_s=_core_peak(hw, dtype, fidelity),
        # an out-of-box call (matmul_config: auto) runs at its own fitted efficiency
        efficiency=hw.tile.efficiency_for(dtype, fidelity, auto_config=auto),
        sram_bandwidth_bytes_per_s=hw.tile.sram_bandwidth_bytes_per_s,
    )
    # one op: its fixed launch time, then its compute against its DRAM traffic
    bandwidth = _dram_bandwidth(hw) if dram_bytes or written else math.inf
    time_s = (
        hw.tile.op_latency_s
        + max(compute_s, (dram_bytes - written) / bandwidth)
        + written / bandwidth
    )
    # Run untraced (``trace: false``), back to back, each op is also dispatched by the host
    # while the device runs the one before: it lasts at least tile.host_dispatch, as a
    # pass that is not traced does in inference (inference.trace); called with a program
    # config of its own (the GEMM report's tuned loop), tile.host_dispatch_tuned where given.
    if _untraced(scenario):
        tuned = hw.tile.host_dispatch_tuned_s and not _auto_config(scenario)
        time_s = max(time_s, hw.tile.host_dispatch_tuned_s if tuned else hw.tile.host_dispatch_s)
    return _time_or_rate(measured, "time_ns", 1e-9, time_s, _tflops_rate(flop))


def _tflops_rate(flop: float) -> list[tuple[str, float]]:
    """The rate a GEMM's or an attention kernel's table may give instead of its time,
    ``(metric, work)`` with the rate work / time: TFLOP/s, its ``flop`` (2MNK; attention's
    4 per (query, key) pair per head dimension) over the time."""
    return [("tflops", flop / 1e12)]


def _collective_rates(kind: str, n: int, size_bytes: float) -> list[tuple[str, float]]:
    """The rates a collective's table may give instead of its time, ``(metric, work)`` with the
    rate work / time, in the order they are read: nccl-tests' bandwidths (doc/PERFORMANCE.md),
    as tt-metal's CCL report computes them (tech_reports/CCLs/report.py: algbw = size / time,
    busbw = algbw x 2(n-1)/n for an all-reduce and x (n-1)/n for the rest, the ring steps
    over n), in GB/s."""
    return [
        ("algbw_GBps", size_bytes / 1e9),
        ("busbw_GBps", size_bytes * RING_STEPS[kind](n) / n / 1e9),
    ]


def _single_op_figure(
    figures: Mapping[str, Any], time_key: str, rates: Sequence[tuple[str, float]]
) -> tuple[str, float | None] | None:
    """The figure a single-op case is compared on and fitted to, ``(metric, work)``: its time
    ``time_key`` (work None) where it gives it as a number, else the first of ``rates``
    (``(metric, work)``, the rate work / time: a GEMM's TFLOP/s, a collective's bandwidths)
    it gives as one; None when it gives none. A rate restates the time, so a case is never
    read on both; text and ranges are no figure (:func:`_number`)."""
    for metric, work in ((time_key, None), *rates):
        if _number(figures.get(metric)) is not None:
            return metric, work
    return None


def _measured_time_s(
    figures: Mapping[str, Any],
    time_key: str,
    time_unit_s: float,
    rates: Sequence[tuple[str, float]],
) -> float:
    """A single-op case's measured time [s] (:func:`_single_op_figure`): ``time_key`` in
    units of ``time_unit_s``, or work / its rate; CannotExpressError without a figure, naming
    one given as text, or for a figure no run can have (:func:`_measured`)."""
    chosen = _single_op_figure(figures, time_key, rates)
    if chosen is None:
        for metric in (time_key, *(metric for metric, _ in rates)):
            if figures.get(metric) is not None:
                _measured(figures, metric)  # raises, naming a figure that is not a number
        names = ", ".join(metric for metric, _ in rates)
        raise CannotExpressError(f"no measured {time_key} (nor {names}) given as a number")
    metric, work = chosen
    value = _measured(figures, metric)
    return value * time_unit_s if work is None else work / value


def _time_or_rate(
    measured: Mapping[str, Any],
    time_key: str,
    time_unit_s: float,
    time_s: float,
    rates: Sequence[tuple[str, float]],
) -> list[tuple[str, float, float]]:
    """The single-op case's figure (:func:`_single_op_figure`) against ``time_s``, as
    ``(metric, measured, predicted)``: its time in units of ``time_unit_s``, or its rate.
    A number no run can have (0, below it, NaN) is still the case's figure: validate names
    it."""
    chosen = _single_op_figure(measured, time_key, rates)
    if chosen is None:
        return []
    metric, work = chosen
    predicted = time_s / time_unit_s if work is None else work / time_s
    return [(metric, float(measured[metric]), predicted)]


def _auto_output_bytes(case: Mapping[str, Any]) -> float:
    """The bytes an out-of-box GEMM (``matmul_config: auto``) writes to DRAM after its math
    (at the chip's DRAM bandwidth): its output's, where ``out_storage`` is DRAM.

    ttnn's auto-selected config for interleaved operands (matmul_program_config.cpp,
    create_matmul_program_config: a 2-D multicast matmul with per_core_M = Mt / grid rows
    and per_core_N = Nt / grid columns) gives each core its whole output as one block and
    an inner block of ``in0_block_w`` = 4 tiles (the largest of 4, 3, 2, 1 dividing Kt), so
    its compute kernel (bmm_large_block_zm_fused_bias_activation.cpp) spills partial sums
    through every inner block and packs the output only in the last, which its writer then
    sends to DRAM: the write follows the math instead of overlapping it."""
    model, scenario = case["model"], case["scenario"]
    if not str(scenario.get("out_storage", "DRAM")).upper().startswith("DRAM"):
        return 0.0
    m, n = (positive_count(model[d], f"GEMM {d}") for d in ("M", "N"))
    return m * n * DTYPE_BYTES[_format(scenario.get("dtype"))]


def _attention_pairs(q_len: int, cached_len: int, causal: bool) -> float:
    """(query, key) pairs of an attention of ``q_len`` new tokens over ``cached_len`` cached
    ones and themselves: every cached key, and of the new ones all (``causal`` False) or
    those at or before the query (half the square, the FLOP convention of tt-metal's
    tech_reports/FlashAttention/FlashAttention.md: 2 b s^2 h d for a causal s)."""
    return q_len * cached_len + (q_len * q_len / 2 if causal else q_len * q_len)


def _attention_terms(
    case: Mapping[str, Any], hw: HardwareSpec
) -> tuple[float, float, str | None, float]:
    """(FLOP, peak FLOP/s of its cores at its fidelity, fidelity, busiest core's share) of an
    attention microbenchmark: 4 FLOP per (query, key) pair per head dimension (QK^T and
    scores x V), and how much longer than its work spread evenly over its ``core_grid`` it
    runs (:func:`attention_split_factor`: tt-metal's SDPA of the case's date,
    :func:`tt_metal_attention_split`, dealing its query chunks of ``scenario.q_chunk`` rows,
    else the demos' :func:`tt_metal_sdpa_q_chunk_rows`)."""
    model, scenario = case["model"], case["scenario"]
    heads = positive_count(model.get("heads"), "model.heads")
    head_dim = positive_count(model.get("head_dim"), "model.head_dim")
    q_len = positive_count(scenario.get("q_len"), "scenario.q_len")
    cached_raw = scenario.get("cached_len", 0)
    cached = positive_count(cached_raw, "scenario.cached_len") if cached_raw else 0
    causal_text = str(scenario.get("causal", True)).strip().lower()
    if causal_text not in ("true", "false"):
        raise CannotExpressError(f"scenario.causal {scenario.get('causal')!r} is not true or false")
    causal = causal_text == "true"
    batch = positive_count(scenario.get("batch", 1), "scenario.batch")
    flop = 4.0 * batch * heads * head_dim * _attention_pairs(q_len, cached, causal)
    rows, cols = _chip_grid(scenario.get("core_grid"), hw)
    dtype = _format(scenario.get("dtype"))
    fidelity = scenario.get("math_fidelity")
    q_chunk = scenario.get("q_chunk")
    split = attention_split_factor(
        tt_metal_attention_split(case),
        users=batch,
        heads=heads,
        q_rows=q_len,
        cached_rows=cached,
        q_chunk_rows=positive_count(q_chunk, "scenario.q_chunk")
        if q_chunk is not None
        else tt_metal_sdpa_q_chunk_rows(q_len),
        cores=rows * cols,
        causal=causal,
    )
    return flop, rows * cols * _core_peak(hw, dtype, fidelity), fidelity, split


#: Query rows of an SDPA chunk from which its steps' math outweighs their fixed costs: tt-metal
#: issue #56692 (p100a, kernels of 2026-07-22) measures about 3,300 cycles of fixed front end
#: per k-chunk step, 21.5% of the wall at q128 k128, and #55758 the math busy 22% of the wall
#: at q64 against 37-60% from q128 up. Chunks below it are the small-step regime a decode's
#: one tile of query rows runs in (``tile.decode_attention_efficiency``), the rest the
#: prefill's (``tile.attention_efficiency``); the demos take 64 below 2048 tokens, 256 above.
SDPA_LARGE_CHUNK_ROWS = 128


def _small_chunks(case: Mapping[str, Any]) -> bool:
    """Whether an attention microbenchmark runs in chunks under
    :data:`SDPA_LARGE_CHUNK_ROWS` query rows (a case stating no ``q_chunk`` does not)."""
    q_chunk = case["scenario"].get("q_chunk")
    return q_chunk is not None and positive_count(q_chunk, "scenario.q_chunk") < (
        SDPA_LARGE_CHUNK_ROWS
    )


def _attention(case: Mapping[str, Any], hw: HardwareSpec) -> list[tuple[str, float, float]]:
    """A fused attention kernel alone (tt-metal's SDPA): the op latency, then its FLOP at
    ``tile.attention_efficiency`` of its cores' peak at its fidelity (in small chunks,
    :func:`_small_chunks`, ``tile.decode_attention_efficiency`` where the tile gives one;
    else the GEMM efficiency of its format)."""
    flop, peak, fidelity, split = _attention_terms(case, hw)
    dtype = _format(case["scenario"].get("dtype"))
    small = hw.tile.decode_attention_efficiency if _small_chunks(case) else 0.0
    efficiency = small or hw.tile.attention_efficiency or hw.tile.efficiency_for(dtype, fidelity)
    time_s = hw.tile.op_latency_s + flop * split / (peak * efficiency)
    return _time_or_rate(case["measured"], "time_ms", 1e-3, time_s, _tflops_rate(flop))


#: A DRAM read microbenchmark's figures palmsim predicts: the bank-adjacent readers' (the
#: configs' DRAM bandwidth is fitted to them) and the same readers at arbitrary places
#: (``dram.interleaved_read_efficiency`` of that); the spec, 14 GT/s, in-model and per-tile
#: read figures are other set-ups.
_DRAM_READ_ADJACENT = ("ubench_GBps_at_12GTps", "GBps_bank_adjacent_noc0")
_DRAM_READ_INTERLEAVED = ("GBps_16KB_packets_arbitrary_cores",)


def _dram_read(case: Mapping[str, Any], hw: HardwareSpec) -> list[tuple[str, float, float]]:
    adjacent = _dram_bandwidth(hw) / 1e9
    rates = dict.fromkeys(_DRAM_READ_ADJACENT, adjacent) | dict.fromkeys(
        _DRAM_READ_INTERLEAVED, adjacent * hw.dram.interleaved_read_efficiency
    )
    out = [
        (metric, float(value), rates[metric])
        for metric, value in case["measured"].items()
        if metric in rates and _number(value)
    ]
    if not out:
        raise CannotExpressError("no DRAM read figure palmsim predicts in 'measured'")
    return out


def _host_read(case: Mapping[str, Any], hw: HardwareSpec) -> list[tuple[str, float, float]]:
    """The host's rate reading a device tensor back (``tile.host_read_bandwidth``): the case's
    ``GBps``."""
    if hw.tile.host_read_bandwidth_bytes_per_s <= 0:
        raise CannotExpressError(f"{hw.name} gives no tile.host_read_bandwidth")
    measured = _number(case["measured"].get("GBps"))
    return [("GBps", measured, hw.tile.host_read_bandwidth_bytes_per_s / 1e9)] if measured else []


def allreduce_time_s(
    size_bytes: float,
    n: int,
    *,
    ring: bool,
    link_bandwidth_bytes_per_s: float,
    hop_latency_s: float,
) -> float:
    """All-reduce of ``size_bytes`` over ``n`` chips in a line or a ring [s].

    Reduce-scatter then all-gather, ``2(n-1)`` steps each paying one hop latency (Patarasuk &
    Yuan, JPDC 2009). On a **line** by the line algorithm, each chip's piece passed hop by hop
    towards both ends (:func:`palmsim.hardware.collectives.line_shares`): the end links carry
    a ring edge's ``2(n-1)/n * S`` bytes each way. On a physical **ring** two rings run in
    opposite directions, each on half the buffer: ``2(n-1)/n * S/2`` per link direction
    (tt-metal's FABRIC_1D_RING uses both directions: tech_reports/CCLs, busbw = 2 x link
    bandwidth on a ring), whose reduce-scatter half runs ``ceil((n-1)/2)`` steps and its
    all-gather half ``n-1`` (:func:`~palmsim.hardware.collectives.collective_steps`). No
    collective startup (``system.collective_latency``) is counted.
    """
    assert n >= 2 and size_bytes >= 0
    per_direction = 2 * (n - 1) / n * size_bytes / (2 if ring else 1)
    hops = collective_steps("allreduce", RING_STEPS["allreduce"](n), ring_fabric=ring)[0]
    return hops * hop_latency_s + per_direction / link_bandwidth_bytes_per_s


def line_tree_allreduce_time_s(
    size_bytes: float, n: int, *, link_bandwidth_bytes_per_s: float, hop_latency_s: float
) -> float:
    """All-reduce of ``size_bytes`` over a line of ``n`` cores by a reduction tree [s].

    The partial sums flow from both ends towards the middle core, adding at every core, and
    the total flows back out, pipelined: ``2 * ceil((n-1)/2)`` hops of latency, and every
    link direction carries the buffer once (WaferLLM's MeshGEMV all-reduces by a K-tree; this
    is its latency bound on a line, He et al., OSDI'25, Sec. 5).
    """
    assert n >= 1 and size_bytes >= 0
    if n == 1:
        return 0.0
    return 2 * math.ceil((n - 1) / 2) * hop_latency_s + size_bytes / link_bandwidth_bytes_per_s


def _allreduce(case: Mapping[str, Any], hw: HardwareSpec) -> list[tuple[str, float, float]]:
    assert hw.wafer is not None
    n = positive_count(_system(case).get("chips"), "hardware.system.chips")
    topology = str(_system(case).get("topology", ""))
    if n < 2:
        raise CannotExpressError("a collective needs at least 2 chips")
    ring = "ring" in topology
    if ring and n < 3:
        ring = False
    fabric = "ring" if ring else "line" if "line" in topology else "mesh"
    w = hw.wafer
    if (w.tile_rows, w.tile_cols) != (1, 1):
        raise CannotExpressError(f"{hw.name} is not simulated one tile per chip")
    if n > hw.num_tiles:
        raise CannotExpressError(f"{n} chips: {hw.name} has {hw.num_tiles}")
    per_direction = _links_per_direction(case)
    kind = _collective_kind(case)
    # Simulated: the collective alone on the first n chips in TP ring order (a physical ring
    # when the chips close one, as the T3000's 2x4 mesh does for all 8; a line of 2 else), on
    # as many links per neighbour as the case used.
    w = dataclasses.replace(
        w,
        inter_die_links=min(max(w.inter_die_links, 1), per_direction),
        bidirectional_rings=w.bidirectional_rings and ring,
    )
    size = float(positive_count(case["scenario"]["size_bytes"], "size_bytes"))
    time_s = _simulate_collective(dataclasses.replace(hw, wafer=w), kind, n, size, fabric=fabric)
    return _time_or_rate(
        case["measured"], "time_us", 1e-6, time_s, _collective_rates(kind, n, size)
    )


def _collective_kind(case: Mapping[str, Any]) -> str:
    """The collective a microbenchmark times (a key of :data:`RING_STEPS`), read from its
    ``model.name`` as tt-metal's ops are named (``ttnn.all_gather``,
    ``ttnn.experimental.all_to_all_async_generic``: letters only, lower case)."""
    name = re.sub(r"[^a-z]", "", str(case.get("model", {}).get("name", "")).lower())
    for kind in RING_STEPS:
        if kind in name:
            return kind
    raise CannotExpressError(
        f"model.name {case.get('model', {}).get('name')!r} names no collective palmsim "
        f"simulates ({', '.join(RING_STEPS)})"
    )


def _links_per_direction(case: Mapping[str, Any]) -> int:
    """Links a direction between neighbouring chips the case's collective ran on
    (``scenario.links_per_direction``, a count and an optional note; 1 without it)."""
    return positive_count(
        case["scenario"].get("links_per_direction", 1), "scenario.links_per_direction"
    )


def _simulate_collective(
    hw: HardwareSpec, kind: str, n: int, size_bytes: float, *, fabric: str = "mesh"
) -> float:
    """One collective of ``kind`` on ``size_bytes`` over the first ``n`` tiles of ``hw`` (snake
    order, the TP ring palmsim builds), simulated by the engine alone [s].

    An all-to-all on tt-metal's 1-D fabric travels the chips' order, not the chip's shortest
    routes, which on a mesh take links the fabric does not: on a ``fabric`` 'ring' each
    chunk goes forward to the n // 2 chips after its sender and backward to the others
    (all_to_all_async_generic's sender_writer @0326e6f5 multicasts its start semaphore
    forward over n / 2 chips and backward over n - n / 2 - 1, and unicasts each chunk in the
    direction of its offset); on a 'line' every chunk goes the one way the line allows, so
    the middle link carries floor(n/2) ceil(n/2) chunks a direction (tech_reports/CCLs/
    CCL_bandwidth.md @1080d1c4, "Bytes through the bottleneck link"). 'mesh' routes each
    chunk the chip's shortest way. A ring fabric's routers slow every packet
    (``system.ring_fabric_efficiency`` f): the all-to-all's links run at f of their rate
    there, the several chunks on a link together (a ring-kind collective's one flow a link
    direction is capped so by its communicator)."""
    from palmsim.engine.simulator import Simulator
    from palmsim.hardware.chip import Chip, Route
    from palmsim.mapping.communicators import communicators
    from palmsim.mapping.placement import place
    from palmsim.mapping.plan import (
        CollectiveFlow,
        CollectiveKind,
        CollectiveStep,
        ComputeStep,
        MappingPlan,
        MemoryBreakdown,
        StageProgram,
    )

    w = hw.wafer
    if kind == "alltoall" and fabric == "ring" and w is not None:
        link = dataclasses.replace(
            w.inter_die,
            bandwidth_bytes_per_s=w.inter_die.bandwidth_bytes_per_s * w.ring_fabric_efficiency,
        )
        hw = dataclasses.replace(hw, wafer=dataclasses.replace(w, inter_die=link))
    chip = Chip.from_spec(hw)
    stage_tiles = place(chip, "snake", 1, n, 1)
    tiles = stage_tiles[0][0]
    idle = ComputeStep("idle", 0.0, 0.0, 0.0, 0.0, 0.0)
    program = StageProgram(
        stage=0,
        layers=(0, 1),
        forward=(CollectiveStep(kind, CollectiveKind(kind), size_bytes),),
        backward=(),
        recompute=(),
        activation_bytes_per_microbatch=0.0,
        send_bytes=0.0,
        optimizer=idle,
        steps=(("F", 0),),
    )
    memory = MemoryBreakdown(0, 0, 0, 0, 0, 0)
    comms, _, _ = communicators(chip, stage_tiles, pipeline_wraps=False, symmetric_replicas=False)
    if kind == "alltoall":  # every member sends S/n to every other, routed (no ring)
        position = {t: i for i, t in enumerate(tiles)}

        def route(src: int, dst: int) -> Route:
            if fabric == "mesh":
                return chip.route(src, dst)
            i, j = position[src], position[dst]
            forward = (j - i) % n
            if fabric == "ring":
                step, count = (1, forward) if forward <= n // 2 else (-1, n - forward)
            else:  # a line: no wrap
                step, count = (1, j - i) if j > i else (-1, i - j)
            hops = [
                chip.route(tiles[(i + k * step) % n], tiles[(i + (k + 1) * step) % n])
                for k in range(count)
            ]
            return Route(tuple(c for h in hops for c in h.channels), sum(h.latency_s for h in hops))

        routed = [(s, route(s.src, s.dst)) for s in alltoall_shares(tiles)]
        flows = tuple(
            CollectiveFlow(s.src, s.dst, s.share, r.channels, r.latency_s, s.sources)
            for s, r in routed
        )
        comms = tuple(dataclasses.replace(c, flows=flows, exclusive=False) for c in comms)
    plan = MappingPlan(
        mapping=MappingSpec(tp=n),
        num_microbatches=1,
        stage_tiles=stage_tiles,
        programs=(program,),
        dram_port_of_tile=(),
        memory=tuple((t, memory) for t in tiles),
        placement="snake",
        model_flop_per_iteration=0.0,
        peak_flop_per_s=1.0,
        samples_per_iteration=1,
        tokens_per_iteration=1,
        communicators=comms,
    )
    return Simulator(chip, plan).run().end_time_s


def _gemv(case: Mapping[str, Any], hw: HardwareSpec) -> list[tuple[str, float, float]]:
    assert hw.wafer is not None
    shape = str(case["scenario"].get("shape", ""))
    match = re.fullmatch(r"\s*\[\s*1\s*,\s*(\w+)\s*\]\s*x\s*\[\s*(\w+)\s*,\s*(\w+)\s*\]\s*", shape)
    if not match:
        raise CannotExpressError(f"GEMV shape {shape!r} is not '[1,K] x [K,N]'")
    k, k2, n = (_size(g) for g in match.groups())
    if k != k2:
        raise CannotExpressError(f"GEMV shape {shape!r}: inner dimensions differ")
    dtype = "fp16"
    rows = hw.wafer.tile_rows * hw.wafer.unit_rows
    cols = hw.wafer.tile_cols * hw.wafer.unit_cols
    cores = rows * cols
    elem = DTYPE_BYTES[dtype]
    # Every core multiplies its (K/rows) x (N/cols) block of W from its SRAM ...
    compute_s = op_time_s(
        2.0 * k * n / cores,
        elem * k * n / cores,
        peak_flop_per_s=_core_peak(hw, dtype, None),
        efficiency=hw.tile.compute_efficiency,
        sram_bandwidth_bytes_per_s=hw.tile.sram_bandwidth_bytes_per_s / _cores_of(hw),
    )
    # ... then the partial sums of each column of cores (N/cols values) are all-reduced over
    # the column's ``rows`` cores: by the tree the case names (MeshGEMV's K-tree), else by a
    # ring, one core hop per step.
    link = hw.wafer.intra_die
    size = elem * n / cols
    if "tree" in str(case["scenario"].get("algorithm", "")).lower():
        reduce_s = line_tree_allreduce_time_s(
            size,
            rows,
            link_bandwidth_bytes_per_s=link.bandwidth_bytes_per_s,
            hop_latency_s=link.latency_s,
        )
    else:
        reduce_s = allreduce_time_s(
            size,
            rows,
            ring=False,
            link_bandwidth_bytes_per_s=link.bandwidth_bytes_per_s,
            hop_latency_s=link.latency_s,
        )
    measured = _number(case["measured"].get("time_ms"))
    return [("time_ms", measured, (compute_s + reduce_s) * 1e3)] if measured else []


# ----------------------------------------------------------------------------- inference


#: How far a case's stated ``params_b`` may exceed the dense transformer its shapes describe
#: before the case is refused: its parameter count is what the shapes leave out (the
#: experts of a mixture, a vision encoder, a state-space block), not rounding.
PARAMS_TOLERANCE = 0.15


#: A case's mixture-of-experts keys (``model.``, as in the training measurement files; then
#: Hugging Face's names) and the :class:`ModelSpec` fields they set.
_MOE_KEYS = (
    (("num_experts", "num_local_experts", "n_routed_experts", "experts"), "num_experts"),
    (("top_k", "num_experts_per_tok", "experts_per_token"), "num_experts_per_tok"),
    (("moe_ffn", "moe_intermediate_size"), "moe_intermediate_size"),
    (("shared_experts", "n_shared_experts"), "num_shared_experts"),
    (("first_dense_layers", "first_k_dense_replace"), "first_k_dense_replace"),
    (("moe_layer_step", "interleave_moe_layer_step", "decoder_sparse_step"), "moe_layer_step"),
)


def _moe_fields(m: Mapping[str, Any]) -> dict[str, int]:
    """The mixture-of-experts fields a case's ``model`` gives (none for a dense model); both
    the experts and the top-k are needed, the experts' width defaults to ``ffn`` (Mixtral's)."""
    out: dict[str, int] = {}
    for keys, field in _MOE_KEYS:
        value = next((m[k] for k in keys if m.get(k) is not None), None)
        if value is not None:
            positive = field in ("num_experts", "moe_layer_step")
            out[field] = positive_count(value, field) if positive else int(value)
    if out and not {"num_experts", "num_experts_per_tok"} <= set(out):
        raise CannotExpressError(
            "a mixture of experts needs model.num_experts and model.top_k (got "
            f"{', '.join(sorted(out))})"
        )
    return out


#: Model families whose MLP is the plain (ungated) one, GeLU (ReLU for OPT: the same cost)
#: and 4·hidden wide, as their published configs give it: GPT-2/3 (Radford et al. 2019;
#: Megatron-LM's --ffn-hidden-size defaults to 4 * hidden_size), GPT-J and GPT-NeoX, BERT,
#: OPT, BLOOM, StarCoder and the first Falcons (falcon-7b 18176 = 4·4544, falcon-40b
#: 32768 = 4·8192, falcon-180b, falcon-rw). A row of one of them that leaves ``act`` or
#: ``ffn`` out takes these (:func:`substitutions` marks it). GPT-OSS (gated experts) and
#: Falcon 3 (a Llama-style decoder) are none of them; other families (Llama, Mistral, Qwen,
#: ...) run a gated (SwiGLU) MLP whose width is chosen per model: their ``ffn`` has no
#: default.
_PLAIN_MLP_FAMILY = re.compile(
    r"(?<![a-z])(gpt(?![-_ ]?oss)|bert|opt(?![a-z])|bloom|starcoder"
    r"|falcon(?=[-_ ]?(7b|40b|180b|rw)))",
    re.IGNORECASE,
)
#: The width of a :data:`_PLAIN_MLP_FAMILY` model's MLP, in multiples of its hidden size.
PLAIN_MLP_WIDTH = 4


#: The first Falcons run attention and MLP side by side (``model.parallel_block``):
#: Falcon-7B from one LayerNorm ('one_norm'; HF FalconConfig ``parallel_attn``; tt-metal's
#: falcon7b_common/tt/falcon_decoder.py feeds one ``layernorm_output`` to both), the new
#: decoder architecture of Falcon-40B and 180B from a LayerNorm each ('two_norms';
#: ``new_decoder_architecture``, ``ln_attn`` and ``ln_mlp``; t3000/falcon40b's
#: falcon_decoder.py the same), their outputs added to the residual together.
_FALCON_BLOCKS = (
    (re.compile(r"falcon[-_ ]?7b", re.IGNORECASE), "one_norm"),
    (re.compile(r"falcon[-_ ]?(40b|180b)", re.IGNORECASE), "two_norms"),
)


def stated_parallel_block(value: Any) -> str:
    """A case's stated ``model.parallel_block``: one of
    :data:`palmsim.config.specs.PARALLEL_BLOCKS`, or a yes (one norm) or no (none).

    Raises:
        CannotExpressError: anything else.
    """
    text = str(value).strip().lower()
    if text in PARALLEL_BLOCKS:
        return text
    if text in ("true", "yes", "on", "1"):
        return "one_norm"
    if text in ("false", "no", "off", "0"):
        return "none"
    raise CannotExpressError(
        f"model.parallel_block: got {value!r}; expected one of {', '.join(PARALLEL_BLOCKS)} "
        "or true/false"
    )


def _parallel_block(m: Mapping[str, Any]) -> str:
    """The case's ``parallel_block``: as stated (:func:`stated_parallel_block`), else a first
    Falcon's (:data:`_FALCON_BLOCKS`), else 'none'.

    Raises:
        CannotExpressError: a stated value that is neither a block nor true/false.
    """
    stated = m.get("parallel_block")
    if stated is not None:
        return stated_parallel_block(stated)
    named = f"{m.get('arch') or ''} {m.get('name') or ''}"
    return next((block for pattern, block in _FALCON_BLOCKS if pattern.search(named)), "none")


def _plain_mlp_family(m: Mapping[str, Any]) -> bool:
    """Whether the case's model names a family of :data:`_PLAIN_MLP_FAMILY`."""
    return _PLAIN_MLP_FAMILY.search(f"{m.get('arch') or ''} {m.get('name') or ''}") is not None


#: Model families whose MLP is gated whatever activation their configs name: Google's Gemma
#: (Hugging Face modeling_gemma.py, gemma2, gemma3 ``GemmaMLP``: ``down_proj(act(gate_proj(x))
#: * up_proj(x))``, GeGLU, where the config's ``hidden_activation`` is gelu_pytorch_tanh).
_GATED_MLP_FAMILY = re.compile(r"(?<![a-z])gemma", re.IGNORECASE)


def _model_mlp(m: Mapping[str, Any]) -> str | None:
    """The case's MLP, as ``ModelSpec.hidden_act`` names it: 'silu' (gated, three matrices)
    or 'gelu' (two). ``act`` as stated (:data:`MLP_OF_ACTIVATION`, whatever its letter case,
    spaces or dashes: "SwiGLU", "GeGLU", "squared ReLU"), gated in a
    :data:`_GATED_MLP_FAMILY` model; unstated, GeLU for a :data:`_PLAIN_MLP_FAMILY` model and
    SwiGLU for any other (the decoders tt-metal's and WaferLLM's rows run). None for an
    activation palmsim does not know."""
    act = m.get("act")
    named = f"{m.get('arch') or ''} {m.get('name') or ''}"
    if act is not None and str(act).strip():
        kind = MLP_OF_ACTIVATION.get(re.sub(r"[\s-]+", "_", str(act).strip().lower()))
        return "silu" if kind and _GATED_MLP_FAMILY.search(named) else kind
    return "gelu" if _plain_mlp_family(m) else "silu"


def _gated(kind: str | None) -> bool:
    """Whether ``kind`` (:func:`_model_mlp`) is a gated MLP."""
    return kind == "silu"


def _model_ffn(m: Mapping[str, Any], hidden: int) -> int:
    """The case's MLP width: ``ffn`` as stated, else :data:`PLAIN_MLP_WIDTH` x ``hidden`` for a
    plain-MLP model (:data:`_PLAIN_MLP_FAMILY`).

    Raises:
        CannotExpressError: no ``ffn`` for a gated MLP, whose width has no default.
    """
    if m.get("ffn") is not None:
        return positive_count(m["ffn"], "ffn")
    if _plain_mlp_family(m) and not _gated(_model_mlp(m)):
        return PLAIN_MLP_WIDTH * hidden
    raise CannotExpressError(
        "model.ffn is missing: a gated (SwiGLU) MLP's width is chosen per model, so it has no "
        "default; give model.ffn"
    )


def _sliding_window(m: Mapping[str, Any]) -> tuple[int | None, int]:
    """``(sliding_window, global_attention_interval)`` of :class:`ModelSpec` from a case's
    sliding-window attention, under Hugging Face's names: ``model.sliding_window`` keys a
    query attends to, on every layer but every ``global_attention_interval``-th
    (``sliding_window_pattern``: Gemma 3's 6), which attends to the whole sequence; (None, 0)
    without a window."""
    if m.get("sliding_window") is None:
        return None, 0
    every = next(
        (m[k] for k in ("global_attention_interval", "sliding_window_pattern") if m.get(k)), None
    )
    return positive_count(m["sliding_window"], "sliding_window"), (
        0 if every is None else positive_count(every, "global_attention_interval")
    )


def case_model(case: Mapping[str, Any], max_tokens: int) -> ModelSpec:
    """The decoder the case's ``model`` fields describe (``head_dim`` where it differs from
    hidden / heads, as Qwen3's 128 on a 5120 hidden): dense, or a mixture of experts when it
    gives ``num_experts`` and ``top_k`` (:data:`_MOE_KEYS`). A plain-MLP family's ``act`` and
    ``ffn`` may be left out (:data:`_PLAIN_MLP_FAMILY`).

    Raises:
        CannotExpressError: a field is missing, or ``params_b`` exceeds that decoder's
            parameters by more than :data:`PARAMS_TOLERANCE` (the fields leave part of the
            model out: a mixture of experts, say, whose experts they do not give).
    """
    m = case["model"]
    why = unmodelled_architecture(f"{m.get('arch') or ''} {m.get('name') or ''}")
    if why is not None:
        raise CannotExpressError(f"model {m.get('name') or m.get('arch')!r}: {why}")
    try:
        moe = _moe_fields(m)
        hidden, heads = positive_count(m["hidden"], "hidden"), positive_count(m["heads"], "heads")
        layers = positive_count(m["layers"], "layers")
        check_layers(layers)
        act = _model_mlp(m)
        window, every = _sliding_window(m)
        if act is None:
            raise CannotExpressError(
                f"model.act: got {m.get('act')!r}; expected a known activation: "
                + ", ".join(sorted(MLP_OF_ACTIVATION))
            )
        head_dim = m.get("head_dim")
        model = ModelSpec(
            name=str(m.get("name", case.get("id", "model"))),
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=positive_count(m.get("kv_heads", heads), "kv_heads"),
            intermediate_size=_model_ffn(m, hidden),
            num_hidden_layers=layers,
            vocab_size=positive_count(m["vocab"], "vocab"),
            max_position_embeddings=max_tokens,
            hidden_act=act,
            norm="rmsnorm" if "rms" in str(m.get("norm", "")).lower() else "layernorm",
            position_embedding="rope",
            use_bias=False,
            tie_word_embeddings=bool(m.get("tied_embeddings", False)),
            attention_head_dim=(
                positive_count(head_dim, "head_dim")
                if head_dim is not None and int(head_dim) * heads != hidden
                else None
            ),
            num_experts=moe.get("num_experts", 0),
            num_experts_per_tok=moe.get("num_experts_per_tok", 0),
            moe_intermediate_size=moe.get("moe_intermediate_size"),
            num_shared_experts=moe.get("num_shared_experts", 0),
            first_k_dense_replace=moe.get("first_k_dense_replace", 0),
            moe_layer_step=moe.get("moe_layer_step", 1),
            parallel_block=_parallel_block(m),
            sliding_window=window,
            global_attention_interval=every,
        )
    except KeyError as error:
        raise CannotExpressError(f"model.{error.args[0]} is missing; give it") from None
    except (TypeError, ValueError) as error:
        raise CannotExpressError(f"model fields incomplete: {error}") from None
    stated = _number(m.get("params_b"))
    if stated is not None:
        counted = num_parameters(model) / 1e9
        if stated > counted * (1 + PARAMS_TOLERANCE):
            kind = "mixture of experts" if model.is_moe else "dense decoder"
            raise CannotExpressError(
                f"model.params_b {stated:g} is more than the {counted:.3g}B parameters of the "
                f"{kind} its fields describe (experts the fields do not give, or another part "
                "they leave out, is not expressible here)"
            )
    return model


_FORMAT_WORD = r"(bfloat8_b|bfloat4_b|bfloat16|bfloat8|bfp8|bfp4|bf16|fp16|fp8|int8)"


def _format_word(word: str) -> str:
    return {"bfloat8_b": "bfp8", "bfloat8": "bfp8", "bfloat4_b": "bfp4", "bfloat16": "bf16"}.get(
        word, word
    )


def _squash(name: str) -> str:
    """A model name for matching: lower case, without spaces, dashes, underscores or dots."""
    return re.sub(r"[\s._-]", "", name.lower())


def _precision_exception(scenario: Mapping[str, Any], model_name: str) -> str | None:
    """The entry of ``scenario.weight_precision_exceptions`` ('Name: text; Name: text') that
    names the case's model (its squashed name starts with the entry's), or None. An entry
    for some layers only ('bfp8 MLP in layer 32, bfp4 elsewhere') gives None: one format
    per weight kind holds for every layer, and the rule's is the rest's."""
    given = scenario.get("weight_precision_exceptions") or ""
    if isinstance(given, Mapping):  # {name: text}, as a transcriber may write it
        entries = [(str(k), str(v)) for k, v in given.items()]
    else:
        entries = [(n, f) for n, sep, f in (e.partition(":") for e in str(given).split(";")) if sep]
    model = _squash(model_name)
    for name, formats in entries:
        if model and _squash(name) and model.startswith(_squash(name)):
            return None if re.search(r"\blayers?\b", formats, re.IGNORECASE) else formats
    return None


#: The weight formats of a tiled-system row that does not state them: tt-metal's LLM demos'
#: default, tt_transformers' performance configuration (simple_text_demo.py's performance
#: runs, ``DecodersPrecision.performance``; PERF.md @040a27c1's precision table: bfp4 MLP
#: FF1/FF3, bfp8 attention and KV cache; FF2 stays bfp8, :data:`TT_METAL_MLP_DOWN_FORMAT`).
TT_METAL_DEFAULT_PRECISION = "bfp4 MLP, bfp8 attention"


def _states_precision(scenario: Mapping[str, Any], model_name: str) -> bool:
    """Whether the scenario gives its weights' formats (a ``weight_precision`` text or an
    exception naming the model); else :data:`TT_METAL_DEFAULT_PRECISION` holds."""
    given = scenario.get("weight_precision")
    stated = given is not None and str(given).strip() != ""
    return stated or _precision_exception(scenario, model_name) is not None


def _weight_formats(
    scenario: Mapping[str, Any], wafer_fp16: bool, model_name: str = ""
) -> tuple[str, str, str]:
    """(attention weights, MLP weights, KV cache) formats from the scenario's text.

    ``<fmt> MLP`` names the MLP's format, ``<fmt> attention`` or ``others <fmt>`` the rest; a
    text naming one format gives it to every weight. ``weight_precision_exceptions`` may
    name the case's model with its own text (tt_transformers' PERF.md: "Qwen2.5-7B: bfp8 MLP
    + bf16 attention"), which then replaces ``weight_precision``; a scenario giving neither
    takes :data:`TT_METAL_DEFAULT_PRECISION` (``validate`` marks it). The KV cache takes
    ``kv_cache_precision`` or the attention's format.
    """
    if wafer_fp16:
        return "fp16", "fp16", "fp16"
    exception = _precision_exception(scenario, model_name)
    if not _states_precision(scenario, model_name):
        exception = TT_METAL_DEFAULT_PRECISION
    text = str(exception or scenario.get("weight_precision", "")).lower()
    words = [_format_word(w) for w in re.findall(_FORMAT_WORD, text)]
    if not words:
        raise CannotExpressError(f"weight precision {text!r} not understood")
    mlp_m = re.search(_FORMAT_WORD + r"\s+mlp", text)
    attn_m = re.search(_FORMAT_WORD + r"\s+attention", text) or re.search(
        r"others\s+" + _FORMAT_WORD, text
    )
    mlp = _format_word(mlp_m.group(1)) if mlp_m else None
    attn = _format_word(attn_m.group(1)) if attn_m else None
    if attn is None:
        attn = next((w for w in words if w != mlp), words[0])
    kv_words = re.findall(_FORMAT_WORD, str(scenario.get("kv_cache_precision", "")).lower())
    kv = _format_word(kv_words[0]) if kv_words else attn
    return attn, mlp or attn, kv


#: The format tt-metal's model demos store an MLP's down projection (FF2, W2) in beside
#: bfp4 gate and up projections: bfp8, at its HiFi2 fidelity. tt_transformers' performance
#: configuration sets only FF1/FF3 to bfp4 (models/tt_transformers/tt/model_config.py
#: @0039cbf0, ``ModelOptimizations.performance``: ``{TensorGroup.FF1_FF3: BFP4}``; FF2 keeps
#: ``_default_settings``' BFP8 at HIFI2_FP16; PERF.md @040a27c1: "bfp4 MLP FF1+FF3"); the
#: Galaxy Llama demo loads ``w2`` as ``ttnn.bfloat8_b`` whatever its ``bfp4_mlp``
#: (models/demos/llama3_70b_galaxy/tt/llama_mlp.py @0457767c).
TT_METAL_MLP_DOWN_FORMAT = "bfp8"

#: The format tt_transformers stores a mixture's experts in, all three projections: the
#: decoder's ``dtype`` (models/tt_transformers/tt/decoder.py: ``TtMixtralMLP(...,
#: dtypes={"w1": dtype, "w2": dtype, "w3": dtype})``), bfp8 in its demo
#: (demo/simple_text_demo.py ``dtype=ttnn.bfloat8_b``); its precision table's FF1/FF3 do not
#: reach them.
TT_TRANSFORMERS_EXPERT_FORMAT = "bfp8"


def tt_metal_mlp_formats(code: str, mlp: str, moe: bool) -> tuple[str, str | None]:
    """(MLP, down projection) weight formats the tt-metal demo ``code`` names runs for an MLP
    its precision table gives as ``mlp``: :data:`TT_TRANSFORMERS_EXPERT_FORMAT` for a
    tt_transformers mixture of experts, :data:`TT_METAL_MLP_DOWN_FORMAT` for a bfp4 MLP's down
    projection; None (the MLP's) otherwise and for other code."""
    if "tt_transformers" in code and moe:
        return TT_TRANSFORMERS_EXPERT_FORMAT, None
    demo = "tt_transformers" in code or "llama3_70b_galaxy" in code
    return mlp, TT_METAL_MLP_DOWN_FORMAT if demo and mlp == "bfp4" else None


def substitutions(case: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(key, value, why)`` of each setting palmsim simulates in place of one the case ran
    and palmsim cannot express; the case's figures rest on them (``validate`` marks them)."""
    with contextlib.suppress(CannotExpressError):  # predict names a field given twice
        case = _normalized(case)
    system = _system(case)
    text = str(system.get("parallelism", ""))
    out = []
    stated = bool(text.strip())
    if not stated and "hidden" in (case.get("model") or {}):
        with contextlib.suppress(CannotExpressError):
            if _chips(case) > 1:
                out.append(
                    (
                        "hardware.system.parallelism",
                        _parallelism_text(case),
                        "not stated: one model tensor-parallel over all the system's chips, "
                        "as tt-metal's LLM code runs on a mesh (2-D on a Galaxy's 32)",
                    )
                )
    if re.search(r"2-?D", text, re.IGNORECASE) and _tp_2d(case) is None:
        out.append(
            (
                "mapping.tp",
                f"{_degree(text, 'TP') or '?'} as one ring",
                "the case's 2-D tensor parallelism over the mesh's rows and columns is not "
                "expressible: palmsim's mapping has one TP group per stage replica, so "
                "each KV head is replicated on tp / kv_heads chips (that many times the "
                "cache reads) and every all-reduce runs over one ring of all tp chips",
            )
        )
    scenario = case.get("scenario") or {}
    demo = str(scenario.get("demo", ""))
    if "hidden" in (case.get("model") or {}):
        # a model row runs on the whole config: its assumptions (what no measurement of
        # that hardware gives) carry over; a microbenchmark uses only its fitted rates
        try:
            path = _hardware_path(case)
        except CannotExpressError:
            path = None
        if path is not None:
            out += [(f"hw.{key}", value, why) for key, value, why in hardware_assumptions(path)]
    if "hidden" in (case.get("model") or {}) and demo and _demo_ops_per_layer(demo) == 0:
        out.append(
            (
                "inference.ops_per_layer",
                "the op graph's",
                f"the op count of {demo.split()[0]} was not read from its code",
            )
        )
    model = case.get("model") or {}
    hardware = str((case.get("hardware") or {}).get("hw_spec_ref", ""))
    try:
        moe = bool(_moe_fields(model)) if isinstance(model, Mapping) else False
    except (CannotExpressError, TypeError, ValueError):
        moe = False
    if moe and hardware.startswith("tenstorrent"):
        out.append(
            (
                "mapping.ep",
                "1 (every expert split over the TP chips)",
                "tt_transformers' Mixtral holds one whole expert per chip and runs it on every "
                "token, weighted by its gate (models/tt_transformers/tt/mixtral_moe.py: "
                "ttnn.mul by the top-k weights, then an all-reduce): the same weights per chip, "
                "E/k times the expert FLOP palmsim counts",
            )
        )
    name = str(model.get("name", "")) if isinstance(model, Mapping) else ""
    tenstorrent_row = "hidden" in model and hardware.startswith("tenstorrent")
    if tenstorrent_row and _names_no_code(case):
        out.append(
            (
                "inference.serving_code",
                TT_METAL_DEFAULT_CODE,
                "not stated: tt-metal's general LLM code, which its models/README.md LLM "
                "table's rows run (its op count, trace, matmul readers and CCL calls)",
            )
        )
    if tenstorrent_row and not _states_precision(scenario, name):
        out.append(
            (
                "inference.weight_dtype",
                f"{TT_METAL_DEFAULT_PRECISION} (KV cache bfp8)",
                "not stated: tt-metal's LLM demos' default, tt_transformers' performance "
                "configuration (PERF.md @040a27c1's precision table)",
            )
        )
    cores = scenario.get("cores")
    if cores is None and "hidden" in model and hardware.startswith("cerebras"):
        out.append(
            (
                "inference.prefill_chunk_tokens",
                "2^k: the largest a layer's cores hold (decode), the shortest prefill (TTFT)",
                "the service publishes no chunking of the prompts its layer pipeline streams "
                "(_pipeline_simulate)",
            )
        )
    if cores is not None:
        # a prefill of MeshGEMMs runs on its whole grid, one region (_wafer_simulate)
        mesh = False
        with contextlib.suppress(CannotExpressError, ConfigError):
            mesh = load_hardware(_hardware_path(case)).tile.mesh_gemm is not None
        sides = set()
        for phase in ("decode",) if mesh else ("prefill", "decode"):
            found = re.search(phase + r"\s+(\d+)\s*x", str(cores)) or re.match(
                r"\s*(\d+)\s*x\s*\d+\s*$", str(cores)
            )
            if found:
                sides.add(int(found.group(1)))
        for side in sorted(x for x in sides if x % WAFER_REGIONS):
            kept = side // WAFER_REGIONS * WAFER_REGIONS
            out.append(
                (
                    "hw.chip.cores",
                    f"{kept}x{kept} for {side}x{side}",
                    f"{WAFER_REGIONS}x{WAFER_REGIONS} regions of whole cores: "
                    f"{100 * (1 - (kept / side) ** 2):.1f}% of the cores left out (the "
                    f"layer's shape keeps the padding of {side})",
                )
            )
    if "llama3_70b_galaxy" in demo and "not verified" in str(scenario.get("tracing", "")):
        out.append(
            (
                "inference.trace",
                GALAXY_LLAMA_TRACE,
                "prefill and decode traced as in the demo's text_demo.py @0009006b; the case's "
                "own tt-metal release was not read",
            )
        )
    if isinstance(model, Mapping) and "hidden" in model:
        out += _model_defaults(model)
        kv = _stated_decode_kv(scenario)
        if kv is not None and kv[2] is None:
            out.append(
                (
                    f"scenario.{kv[0]}",
                    "the prompt's length",
                    f"{kv[1]!r} is no token count: the decode figures taken at the first "
                    "token after the prompt",
                )
            )
    if hardware.strip() in FAMILY_SYSTEMS:
        out.append(
            (
                "hardware.hw_spec_ref",
                spec_ref(case),
                "the chip family alone: the system its hardware.name names, else the one "
                "with its chips, else the family's chip",
            )
        )
    return out


def _model_defaults(m: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(key, value, why)`` of the model fields a model row leaves out and
    :func:`case_model` takes a default for (:data:`_PLAIN_MLP_FAMILY`,
    :data:`_FALCON_BLOCKS`)."""
    out = []
    act = _model_mlp(m)
    if not str(m.get("act") or "").strip():
        why = (
            f"not stated: {m.get('name') or m.get('arch')}'s family runs a plain GeLU MLP"
            if act == "gelu"
            else "not stated: the gated MLP of the decoders tt-metal's and WaferLLM's rows run"
        )
        out.append(("model.act", "GeLU" if act == "gelu" else "SwiGLU", why))
    if m.get("ffn") is None and _plain_mlp_family(m) and not _gated(act):
        out.append(
            (
                "model.ffn",
                f"{PLAIN_MLP_WIDTH} x hidden",
                "not stated: the plain MLP's width in GPT, BERT, OPT, BLOOM and Falcon's "
                "published configs",
            )
        )
    block = "none" if m.get("parallel_block") is not None else _parallel_block(m)
    if block != "none":
        out.append(
            (
                "model.parallel_block",
                block,
                "not stated: the first Falcons' attention and MLP side by side (HF "
                "FalconConfig parallel_attn, new_decoder_architecture; tt-metal's "
                "falcon_decoder.py)",
            )
        )
    return out


def _demo_ops_per_layer(code: str, moe: bool = False) -> int:
    """The device ops per layer of the serving code ``code`` names (a case's demo and
    source path) for a dense model or a mixture of experts (``moe``), read from that code;
    0: not read (palmsim's op graph)."""
    if "tt_transformers" in code:
        return TT_TRANSFORMERS_MOE_OPS_PER_LAYER if moe else TT_TRANSFORMERS_OPS_PER_LAYER
    if "llama3_70b_galaxy" in code:
        return GALAXY_LLAMA_OPS_PER_LAYER
    if "falcon40b" in code:
        return FALCON40B_OPS_PER_LAYER
    if "falcon7b" in code:
        return FALCON7B_OPS_PER_LAYER
    return 0


def _demo_mesh_ops(code: str, tp_2d: tuple[int, int] | None, hidden: int, moe: bool) -> int:
    """Device ops a layer of the serving code ``code`` names launches beyond its one-chip
    count when it runs 2-D tensor parallelism (``tp_2d``) at model width ``hidden``:
    :data:`TT_TRANSFORMERS_MESH_EXTRA_OPS` for a dense tt_transformers model (its MoE path on
    a mesh was not read: 0); 0 otherwise."""
    if tp_2d is None or moe or "tt_transformers" not in code:
        return 0
    composite = hidden == TT_TRANSFORMERS_COMPOSITE_WIDTH
    return TT_TRANSFORMERS_MESH_EXTRA_OPS["composite" if composite else "gathered"]


def ccl_overrides_of_code(code: str, hw_path: str, chips: int = 0) -> list[str]:
    """Hardware settings (``--set`` items) of the collectives the serving code ``code`` names
    calls on ``hw_path``, where they are not the config's: tt_transformers' generic CCL ops on
    a Wormhole Galaxy take :data:`TT_METAL_GENERIC_CCL_CONFIG`'s settings, and over
    ``chips`` (the chips its tensor parallelism spans; 0: not known) beyond
    :data:`TT_TRANSFORMERS_RING_CHIPS` run as lines, the Galaxy's torus taken as a mesh."""
    galaxy = "tenstorrent_wormhole_b0.systems.galaxy"
    if "tt_transformers" not in code or not _shipped_for(hw_path, galaxy):
        return []
    system = read_config_file(shipped_path(TT_METAL_GENERIC_CCL_CONFIG))["system"]
    out = []
    for key in TT_METAL_GENERIC_CCL_KEYS:
        value: Any = system
        for part in key.split("."):
            value = value[part]
        out.append(f"hw.system.{key}={value}")
    if chips > TT_TRANSFORMERS_RING_CHIPS:
        out.append("hw.system.topology=mesh")
    return out


def _demo_prefill_ops_per_layer(code: str) -> int:
    """``inference.prefill_ops_per_layer`` of the serving code ``code`` names where its prefill
    path was read and launches another number of ops than its decode; 0: as decode."""
    return GALAXY_LLAMA_PREFILL_OPS_PER_LAYER if "llama3_70b_galaxy" in code else 0


def _demo_prefill_overrides(code: str, hw_path: str) -> list[str]:
    """Hardware settings (``--set`` items) the serving code ``code`` names runs its prefill
    with on ``hw_path``, where they differ from its decode's: the Galaxy Llama demo's prefill
    collectives on :data:`GALAXY_LLAMA_PREFILL_LINKS` links a direction on a Wormhole."""
    if "llama3_70b_galaxy" in code and _wormhole(hw_path):
        return [f"hw.system.link.count={GALAXY_LLAMA_PREFILL_LINKS}"]
    return []


def _demo_trace(code: str) -> str:
    """``inference.trace`` of the serving code ``code`` names: the Galaxy Llama demo traces
    both passes, the Falcon demos neither, tt_transformers (and palmsim's default) decode."""
    if "llama3_70b_galaxy" in code:
        return GALAXY_LLAMA_TRACE
    falcon = "tt_transformers" not in code and ("falcon7b" in code or "falcon40b" in code)
    return FALCON_TRACE if falcon else "decode"


#: The source of tt_transformers' PERF.md tables (deprecated at @040a27c1): their rows ran
#: models/tt_transformers/demo/simple_text_demo.py before its on-device sampling (tt-metal
#: PR #31046 of 2025-11-05).
TT_TRANSFORMERS_PERF_MD = "models/tt_transformers/PERF.md"


def _demo_logits_to_host(code: str) -> str:
    """``inference.logits_to_host`` of the serving code ``code`` names. tt_transformers'
    simple_text_demo.py of the PERF.md tables samples on the host: each user's prefill
    returns its logits tile (generator.prefill_forward_text, model.process_output_prefill)
    and the first token is the host's argmax; decode samples on device only for one user a
    data-parallel group (``argmax_on_device = False if global_batch_size // data_parallel >
    1``; else sample_host on the logits decode_forward_text reads back). The Falcon demos
    sample every decode step on the host from the logits they read back (demo.py @006efec6:
    ``tt_tensors_to_torch_tensors(tt_logits, ...)`` in models/demos/falcon7b_common, then
    argmax or top-k/top-p in torch; models/demos/t3000/falcon40b ``ttnn.to_torch`` of the
    logits gathered over its chips), Falcon 7B's prefill by an on-device argmax ('decode'),
    Falcon 40B's from the prefill's logits too ('prefill_and_decode'). Other code, including
    the models README's tt_transformers rows of later releases, samples on device as far as
    palmsim knows ('none')."""
    if TT_TRANSFORMERS_PERF_MD in code:
        return "prefill_and_batch_decode"
    if "tt_transformers" not in code and "falcon40b" in code:
        return "prefill_and_decode"
    if "tt_transformers" not in code and "falcon7b" in code:
        return "decode"
    return "none"


def _shipped_for(hw_path: str, ref: str) -> bool:
    """Whether ``hw_path`` is the shipped config of an entry of :data:`HARDWARE_OF_SPEC`
    whose ``hw_spec_ref`` starts with ``ref``."""
    target = Path(hw_path).resolve()
    return any(
        key.startswith(ref) and Path(shipped_path(path)).resolve() == target
        for key, path in HARDWARE_OF_SPEC.items()
    )


def _wormhole(hw_path: str) -> bool:
    """Whether ``hw_path`` is the shipped config of a Tenstorrent Wormhole system."""
    return _shipped_for(hw_path, "tenstorrent_wormhole")


def prefill_weight_readers(code: str, hw_path: str) -> int:
    """``inference.prefill_weight_readers`` of the serving code ``code`` names: tt_transformers
    runs its prefill weight GEMMs as 2-D multicast matmuls over ``dram_shard_grid_width``
    columns, 8 on a Wormhole and the chip's DRAM banks otherwise ("7 for P100, 8 for P150";
    models/tt_transformers/tt/model_config.py, PREFILL_MLP_W1_W3_PRG_CONFIG,
    WO_PREFILL_PROGCFG and XQKV_PREFILL_PROGCFG); 0 for other code (its weights stream at
    the DRAM rate)."""
    if "tt_transformers" not in code:
        return 0
    if _wormhole(hw_path):
        return TT_TRANSFORMERS_WORMHOLE_PREFILL_COLUMNS
    return len((read_config_file(hw_path).get("dram") or {}).get("positions") or ())


def prefill_reduce_dtypes(code: str) -> tuple[tuple[str, str], ...]:
    """``inference.prefill_reduce_dtypes`` of the serving code ``code`` names:
    :data:`TT_TRANSFORMERS_PREFILL_REDUCE_DTYPES` for tt_transformers, none for other code."""
    return TT_TRANSFORMERS_PREFILL_REDUCE_DTYPES if "tt_transformers" in code else ()


#: The model width above which tt_transformers runs a prefill's norms distributed on a 1-D
#: mesh (models/tt_transformers/tt/model_config.py ``is_distributed_norm``: "Somewhere between
#: 4k and 8k WH runs out of L1 if not distributed", ``self.dim > 4096 and mode == "prefill"``).
TT_TRANSFORMERS_DISTRIBUTED_NORM_WIDTH = 4096


def residual_split(code: str, tp_2d: tuple[int, int] | None, hidden: int) -> str:
    """``inference.residual_split`` of the serving code ``code`` names on a 1-D mesh
    (``tp_2d`` None) at model width ``hidden``: tt_transformers keeps the residual stream
    fractured across its chips (decoder.py @01229001: "x is fractured across devices", the
    residual adds on the fractured tensors, its tt_all_reduce a reduce-scatter on an N300 or a
    T3000) and its norms gather the stream first (distributed_norm.py: all_gather_async, then
    the norm), or in a prefill of a model wider than
    :data:`TT_TRANSFORMERS_DISTRIBUTED_NORM_WIDTH` run on the fractured stream and gather
    their output ('adds_and_prefill_norms'); other code, and 2-D meshes, 'none'."""
    if "tt_transformers" not in code or tp_2d is not None:
        return "none"
    return "adds_and_prefill_norms" if hidden > TT_TRANSFORMERS_DISTRIBUTED_NORM_WIDTH else "adds"


def prefill_compute_cores(code: str) -> int:
    """``inference.prefill_compute_cores`` of the serving code ``code`` names:
    :data:`TT_TRANSFORMERS_PREFILL_GRID_CORES` for tt_transformers, 0 (every core) for other
    code."""
    return TT_TRANSFORMERS_PREFILL_GRID_CORES if "tt_transformers" in code else 0


def decode_readers_per_bank(code: str) -> int:
    """``inference.decode_readers_per_bank`` of the serving code ``code`` names: tt_transformers
    runs its decode weight GEMMs and LM head as DRAM-sharded matmuls with one worker core per
    DRAM bank (model_config.py ``dram_matmul_config``, lm_head.py; the chip's ``dram.banks``:
    12 on a Wormhole, 8 on a p150, 7 on a p100), so 1; 0 for other code."""
    return 1 if "tt_transformers" in code else 0


def decode_attention_cores(code: str, users: int) -> int:
    """``inference.decode_attention_cores`` of the serving code ``code`` names serving
    ``users`` requests per replica: its SDPA decode grid's cores over the users that grid is
    built for (the Galaxy demo: :data:`GALAXY_LLAMA_SDPA_DECODE_CORES` over
    :data:`GALAXY_LLAMA_USERS_PER_CHIP`; tt_transformers:
    :data:`TT_TRANSFORMERS_SDPA_DECODE_CORES` over ``users``, at least one); 0 for other
    code."""
    if "llama3_70b_galaxy" in code:
        return GALAXY_LLAMA_SDPA_DECODE_CORES // GALAXY_LLAMA_USERS_PER_CHIP
    if "tt_transformers" in code:
        return max(TT_TRANSFORMERS_SDPA_DECODE_CORES // max(users, 1), 1)
    return 0


def decode_attention_settings(code: str, users: int) -> dict[str, Any]:
    """The ``inference`` (or ``serving``) settings of the decode attention the serving code
    ``code`` names runs for ``users`` requests per replica: its cores per request
    (:func:`decode_attention_cores`), at most :data:`TT_METAL_SDPA_DECODE_MAX_CORES_PER_HEAD`
    per KV head, at :data:`TT_METAL_SDPA_DECODE_FIDELITY`; the defaults for other code."""
    cores = decode_attention_cores(code, users)
    if cores == 0:
        return {"decode_attention_cores": 0}
    return {
        "decode_attention_cores": cores,
        "decode_attention_cores_per_head": TT_METAL_SDPA_DECODE_MAX_CORES_PER_HEAD,
        "decode_attention_fidelity": TT_METAL_SDPA_DECODE_FIDELITY,
    }


#: A parallelism's name spelled out, as its abbreviation (:func:`_degree`).
_PARALLELISM_WORDS = (
    (r"tensor[-_ ]?parallel(?:ism)?", "TP"),
    (r"data[-_ ]?parallel(?:ism)?", "DP"),
    (r"pipeline[-_ ]?parallel(?:ism)?", "PP"),
)


def _degree(text: str, kind: str) -> int | None:
    """The degree a ``hardware.system.parallelism`` text gives the parallelism ``kind`` ('PP',
    'TP' or 'DP'), however a table writes it ('TP=8', 'tp = 8', 'TP 8', 'TP8', 'TP: 8',
    'TP x8', '8-way TP', 'TP over 8 chips', the name spelled out: 'tensor parallel 8',
    '8-way data parallelism'); None where it names none."""
    for words, short in _PARALLELISM_WORDS:
        text = re.sub(words, short, text, flags=re.IGNORECASE)
    for pattern in (
        rf"(?<![A-Za-z]){kind}\s*[=:x]?\s*(\d+)",
        rf"(?<![\d.])(\d+)\s*-?\s*way\s+{kind}(?![A-Za-z])",
        rf"(?<![A-Za-z]){kind}\s+(?:over|across|on)\s+(\d+)",
    ):
        m = re.search(pattern, text, re.IGNORECASE)
        if m:
            return int(m.group(1))
    return None


def _tp_2d(case: Mapping[str, Any]) -> tuple[int, int] | None:
    """``mapping.tp_2d`` of a case whose parallelism reads '2-D ... over the AxB mesh' (or of
    a TP = 32 row of the Galaxy demo, which always runs its 8x4 mesh): tt-metal's
    mesh shape (A, B) lists its cluster axis 0 first, the axis the Galaxy demo splits the heads
    and MLP columns over (llama_attention.py @00d4c974: ``ShardTensor2dMesh(dims=(3, 2))`` of
    WQKV, axis 0 over its output columns, axis 1 over the hidden input; llama_mlp.py
    @0457767c: W1/W3 ``dims=(-1, -2)``, W2 ``dims=(-2, -1)``), so ``[A, B]``; None otherwise."""
    text = _parallelism_text(case)
    m = re.search(r"2-?D\b.*?(\d+)\s*x\s*(\d+)\s*mesh", text, re.IGNORECASE)
    if m:
        return int(m.group(1)), int(m.group(2))
    # A row of the Galaxy demo over its 32 chips runs the demo's mesh (GALAXY_LLAMA_TP_2D).
    code = _serving_code(case)
    a, b = GALAXY_LLAMA_TP_2D
    if "llama3_70b_galaxy" in code and _degree(text, "TP") == a * b:
        return GALAXY_LLAMA_TP_2D
    return None


def _chips(case: Mapping[str, Any]) -> int:
    """``hardware.system.chips``; where the case does not give them, the chips of the system
    its ``hw_spec_ref`` names (the product of its shipped config's ``system.chips``)."""
    given = _system(case).get("chips")
    if given is not None:
        return positive_count(given, "hardware.system.chips")
    grid = read_config_file(_hardware_path(case)).get("system", {}).get("chips", [1])
    counts = grid if isinstance(grid, list) else [grid]
    return math.prod(positive_count(n, "system.chips") for n in counts)


def _parallelism_text(case: Mapping[str, Any]) -> str:
    """The case's ``hardware.system.parallelism`` text; where it states none ('none' on one
    chip), the model runs as tt-metal's LLM code runs one on a mesh: tensor-parallel over all
    its devices (tt_transformers' ModelArgs takes the mesh's devices as its TP ranks), 2-D
    over tt-metal's 8 x 4 mesh on 32 of them (model_config.py: ``is_galaxy = num_devices ==
    32`` takes its 2-D path; the mesh is the Galaxy demo's, :data:`GALAXY_LLAMA_TP_2D`)."""
    given = _system(case).get("parallelism")
    if given is not None and str(given).strip():
        return str(given)
    chips = _chips(case)
    a, b = GALAXY_LLAMA_TP_2D
    if chips == a * b:
        return f"TP={chips} (2-D tensor parallel over the {a}x{b} mesh)"
    return f"TP={chips}" if chips > 1 else "none"


def _parallelism(case: Mapping[str, Any]) -> tuple[int, int, int]:
    """(pp, tp, dp) from ``hardware.system.parallelism`` (e.g. 'TP=8', 'TP=4 DP=2';
    :func:`_parallelism_text`), whose product is the case's chips (:func:`_chips`)."""
    text = _parallelism_text(case)
    degrees = {kind: _degree(text, kind) or 1 for kind in ("PP", "TP", "DP")}
    chips = _chips(case)
    if degrees == {"PP": 1, "TP": 1, "DP": 1} and chips > 1 and "none" not in text.lower():
        raise CannotExpressError(f"parallelism {text!r} not understood")
    pp, tp, dp = degrees["PP"], degrees["TP"], degrees["DP"]
    if pp * tp * dp != chips:
        raise CannotExpressError(
            f"hardware.system.chips {chips} is not PP x TP x DP = {pp * tp * dp} "
            f"(parallelism {text!r})"
        )
    return pp, tp, dp


def _simulate(
    hw_path: str,
    overrides: list[str],
    model: ModelSpec,
    inference: InferenceSpec,
    mapping: MappingSpec,
) -> dict[str, Any]:
    from palmsim.api import simulate, summarize_result

    hardware = load_hardware(hw_path, overrides)
    workload = WorkloadSpec(
        model=model,
        training=TrainingSpec(seq_len=inference.prompt_len, global_batch_size=1),
        mode="inference",
        inference=inference,
    )
    experiment = ExperimentSpec(
        hardware,
        workload,
        mapping,
        load_run(overrides),
        (("hardware", hw_path), ("workload", "case")),
    )
    return summarize_result(simulate(experiment))


#: Tensor parallelism of a layer on a wafer: its cores as 4 x 4 regions, tensor-parallel over
#: all 16 (the layer on every one of its cores, as WaferLLM's fine-grained partition). A side
#: that 4 does not divide (WaferLLM's 375 and 750) is simulated rounded down to a multiple of
#: 4, at most 3 rows and columns of cores left out (:func:`substitutions` marks it).
#: WaferLLM's layer is tensor-parallel over both axes of its grid: MeshGEMM and MeshGEMV tile
#: every weight over the P x P cores and reduce partial sums along a row or a column (He et
#: al., OSDI'25, Secs. 5.3 and 6.2; Decode/WSE-2/src/decode.csl: each core holds dim/P x dim/P
#: of Q, K, V and O and dim/P x ffn/P of the MLP, and every GEMV ends in an all-reduce along
#: x or y), so its 4 x 4 regions run 2-D tensor parallelism (``mapping.tp_2d``). A prefill on
#: a chip that runs MeshGEMMs (``tile.mesh_gemm``) is one region: the measured step costs of
#: the GEMM hold its shifts between cores.
WAFER_REGIONS = 4
WAFER_TP = WAFER_REGIONS**2


def _wafer_grids(
    case: Mapping[str, Any], hw: HardwareSpec, layers: int
) -> dict[str, tuple[int, int]]:
    """The cores one layer runs on in a wafer case's prefill and decode.

    - The case's ``cores`` (WaferLLM's rows: ``720x720``, or ``prefill 660x660, decode
      360x360`` when the phases differ): its programs run each layer on all of them.
    - No ``cores`` (Cerebras's own inference service): a layer pipeline, every layer on its
      own region of the wafers (Llama-3.1-70B "spread over 4 CS-3 systems (layer pipeline)",
      tiles_hw_specs.yaml ``cerebras_wse3.multi_system_inference``), so a layer has the
      wafers' cores over the layers, as the largest square of 4 x 4 regions that fits.
    """
    scenario = case["scenario"]
    text = scenario.get("cores")
    if text is None:
        w = hw.wafer
        if w is None:
            raise CannotExpressError(f"{hw.name} is not a grid of cores to split over layers")
        wafers = positive_count(_system(case).get("chips", 1), "hardware.system.chips")
        per_layer = w.tile_rows * w.unit_rows * w.tile_cols * w.unit_cols * wafers // layers
        side = math.isqrt(per_layer) // WAFER_REGIONS * WAFER_REGIONS
        if side < WAFER_REGIONS:
            raise CannotExpressError(f"{layers} layers leave fewer than 4x4 cores a layer")
        return {"prefill": (side, side), "decode": (side, side)}
    grids: dict[str, tuple[int, int]] = {}
    for phase in ("prefill", "decode"):
        m = re.search(phase + r"\s+(\d+)\s*x\s*(\d+)", str(text)) or re.match(
            r"\s*(\d+)\s*x\s*(\d+)\s*$", str(text)
        )
        if not m:
            raise CannotExpressError(f"cores {text!r} not understood")
        r, c = int(m.group(1)), int(m.group(2))
        if r != c or r < WAFER_REGIONS:
            raise CannotExpressError(f"WaferLLM's programs run on P x P cores, not {r}x{c}")
        w = hw.wafer
        if w is not None:
            rows, cols = w.tile_rows * w.unit_rows, w.tile_cols * w.unit_cols
            if r > rows or c > cols:
                raise CannotExpressError(f"cores {r}x{c}: {hw.name} has {rows}x{cols}")
        grids[phase] = (r, c)
    return grids


def waferllm_model(model: ModelSpec, side: int, regions: int = WAFER_REGIONS) -> ModelSpec:
    """The layer WaferLLM's released programs run for ``model`` on ``side x side`` cores,
    simulated as ``regions x regions`` tensor-parallel tiles (:func:`_wafer_simulate`).

    - One attention head of the model's width (``n_heads = n_kv_heads = 1``, ``head_dim =
      dim``; MeshInfra/WaferLLM Decode/WSE-2/launch_sim.py and Prefill/WSE-2/launch_sim.py
      @63c40e9 load Q, K and V weights of ``dim x dim`` each and a KV cache of ``dim`` per
      token). Its K and V are as wide as Q, so for their weights, FLOP and cache it is the
      model with as many KV heads as query heads. TP needs heads to split, so the one head
      is built as :data:`WAFER_TP` heads, one per rank, the fewest TP allows (the
      attention's FLOP, ``2 s^2 dim``, do not depend on the head count; its softmax has
      16 score matrices where the programs have one).
    - Every dimension padded to a multiple of the grid's side: each core holds ``dim / P``
      of a row (``dim_p_pe = dim // P`` in both programs), and the configs pad to it
      (Decode/WSE-3/model_config/llama8B_4k_controlled_16_360.json @6bd086a: ``dim`` 4320,
      ``ffn_dim`` 14400, ``seq_len`` 4320 for LLaMA3-8B's 4096, 14336 and 4k on 360x360).
      The head width is the padded ``dim`` over the heads, rounded up to a whole number,
      the MLP width is rounded up to a multiple of the TP ranks (``regions^2``, as TP
      splits it), and ``dim`` to a multiple of the region columns that split it (2-D TP;
      only a side 4 does not divide, as 375 and 750, needs it: 5250 becomes 5252).
    - One region (``regions`` 1, a prefill of MeshGEMMs): one head of the model's width,
      as the programs run it.
    """
    dim = _padded(_padded(model.hidden_size, side), regions)
    # then to a multiple of the TP ranks that split it (at most ranks - 1 columns more)
    heads = regions * regions
    ffn = _padded(_padded(model.intermediate_size, side), heads)
    return dataclasses.replace(
        model,
        hidden_size=dim,
        intermediate_size=ffn,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        attention_head_dim=-(-dim // heads) if dim % heads else None,
    )


def _padded(size: int, side: int) -> int:
    """``size`` rounded up to a multiple of ``side``."""
    return -(-size // side) * side


def _wafer_simulate(
    hw_path: str,
    grid: tuple[int, int],
    model: ModelSpec,
    inference: InferenceSpec,
    *,
    pipeline: bool,
    user: Sequence[str] = (),
    regions: int = WAFER_REGIONS,
) -> dict[str, float]:
    """A wafer phase, one layer on ``grid`` cores, times the model's layers: a layer's time is
    the difference of a two-layer and a one-layer run (no embedding, LM head or fixed cost).
    The layer's cores are simulated as ``regions x regions`` tiles, tensor-parallel over all
    of them (2-D on WaferLLM's grid): one tile for a prefill of MeshGEMMs, whose every GEMM
    spans the whole grid (``tile.mesh_gemm``).

    - ``pipeline`` False, WaferLLM: its released benchmark programs hold one layer's weights
      on the P x P cores and time its steps (Decode/WSE-2/launch_sim.py, Prefill/WSE-2/
      launch_sim.py @63c40e9: one set of Q/K/V/O/up/gate/down weights, 'Mean cycle count' of
      the repeats), and the paper scales layer subsets for its larger models (He et al.,
      OSDI'25, Sec. 7.1: "we evaluate a subset of layers and scale the results"): both runs
      on the same cores, and the whole model need not fit in them at once; the layer is 2-D
      tensor parallel over the regions (:data:`WAFER_REGIONS`).
    - ``pipeline`` True, a layer pipeline (every layer on its own ``grid``): the two layers
      run as two stages on two such grids, so a layer's time includes its hand-over to the
      next.
    """
    # whole regions: a side 4 does not divide loses at most 3 rows or columns of cores
    r, c = (side // regions * regions for side in grid)
    ranks = regions * regions

    def run(layers: int) -> dict[str, Any]:
        stages = layers if pipeline else 1
        overrides = [
            f"hw.chip.cores=[{r * stages}, {c}]",
            f"hw.chip.granularity=[{r // regions}, {c // regions}]",
            *user,
        ]
        mapping = MappingSpec(
            pp=stages,
            tp=ranks,
            dp=1,
            micro_batch_size=inference.batch,
            # a layer pipeline (Cerebras's own service) has no published partition: 1-D
            tp_2d=None if pipeline or ranks == 1 else (regions, regions),
        )
        # the embedding and the LM head cancel in the difference: a vocabulary of one entry
        # per rank keeps them from crowding a layer's cores
        layer_model = dataclasses.replace(model, num_hidden_layers=layers, vocab_size=ranks)
        return _simulate(hw_path, overrides, layer_model, inference, mapping)

    one, two = run(1), run(2)
    layers = model.num_hidden_layers
    return {key: layers * (two[key] - one[key]) for key in ("ttft_s", "tpot_s")}


#: The most chunks a layer pipeline's prompt is cut into when palmsim looks for the chunking
#: whose prefill is shortest (:func:`_pipeline_simulate`): the chunks it tries run from the
#: largest that fits down to 1/64 of the prompt, which bounds the passes it simulates.
PIPELINE_MAX_CHUNKS = 64


def _pipeline_simulate(
    hw_path: str,
    grid: tuple[int, int],
    model: ModelSpec,
    spec: InferenceSpec,
    user: Sequence[str],
    *,
    prefill: bool,
) -> dict[str, float]:
    """A layer pipeline's phase (Cerebras's own service: every layer on its own ``grid`` of the
    wafers' cores, no off-wafer memory), from :func:`_wafer_simulate`'s layer times.

    - The prompt runs in chunks of 2^k tokens (or whole), ``inference.prefill_chunk_tokens``:
      a layer's cores cannot hold a long prompt's activations whole, and the service
      publishes no chunking. The decode step (``tpot_s``) does not depend on it: the largest
      chunk that fits is taken.
    - The chunks stream through the layers, each layer working on chunk ``k`` while the next
      works on ``k - 1`` (a pipeline of ``L`` stages and ``C`` chunks, GPipe's
      ``(C + L - 1) x`` a stage's time; Huang et al., 2019, Sec. 2.2): the prefill (``ttft_s``)
      is ``(C + L - 1) / C`` times one layer's time over the whole prompt, the chunks' mean
      (the later chunks, attending to more cached tokens, take longer). Its chunk is the one,
      of those that fit down to 1/:data:`PIPELINE_MAX_CHUNKS` of the prompt, that gives the
      shortest prefill: smaller chunks fill the pipeline sooner and pay their fixed costs
      more often. A decode run (``prefill`` False) looks for no chunking beyond the largest.

    Raises:
        MappingError: not even one token a pass fits.
    """
    layers = model.num_hidden_layers
    one_layer = dataclasses.replace(model, num_hidden_layers=1)
    prompt = spec.prompt_len

    def run(chunk: int) -> dict[str, float]:
        chunked = dataclasses.replace(spec, prefill_chunk_tokens=0 if chunk >= prompt else chunk)
        return _wafer_simulate(hw_path, grid, one_layer, chunked, pipeline=True, user=user)

    chunk, largest = prompt, None
    while largest is None:
        try:
            largest = run(chunk)
        except MappingError:
            if chunk <= 1:
                raise
            chunk = 1 << ((chunk - 1).bit_length() - 1)  # the next power of two below
    best_s = math.inf
    candidate, times = chunk, largest
    while prefill:
        chunks = -(-prompt // candidate)
        best_s = min(best_s, (chunks + layers - 1) / chunks * times["ttft_s"])
        candidate = 1 << ((candidate - 1).bit_length() - 1) if candidate > 1 else 0
        if candidate < 1 or -(-prompt // candidate) > PIPELINE_MAX_CHUNKS:
            break
        times = run(candidate)
    return {"ttft_s": best_s if prefill else math.nan, "tpot_s": layers * largest["tpot_s"]}


def _inference(
    case: Mapping[str, Any], hw_path: str, user: Sequence[str]
) -> list[tuple[str, float, float]]:
    scenario, measured = case["scenario"], case["measured"]
    hw = load_hardware(hw_path, user)
    wafer = hw.dram.capacity_bytes == 0  # WaferLLM: everything in SRAM
    grids: dict[str, tuple[int, int]] = {}
    if wafer:
        grids = _wafer_grids(case, hw, positive_count(case["model"]["layers"], "layers"))
        pp, tp, dp = 1, WAFER_TP, 1
    else:
        pp, tp, dp = _parallelism(case)
    attn, mlp, kv = _weight_formats(scenario, wafer, str((case.get("model") or {}).get("name", "")))
    # The serving code's own op count where the case names it (tt_transformers demos).
    code = _serving_code(case)
    galaxy = "llama3_70b_galaxy" in code
    trace = _demo_trace(code)
    weight_prefetch = GALAXY_LLAMA_WEIGHT_PREFETCH if galaxy else "none"
    batch = positive_count(scenario.get("batch", 1), "batch")
    attention = decode_attention_settings(code, batch // dp)
    kv_placement = GALAXY_LLAMA_KV_PLACEMENT if galaxy else "sequence"
    readers = prefill_weight_readers(code, hw_path)
    ccl_overrides = ccl_overrides_of_code(code, hw_path, tp)
    prefill_overrides = _demo_prefill_overrides(code, hw_path)
    per_bank = decode_readers_per_bank(code)
    # tt-metal's SDPA in its Llama-family demos; the Falcon demos and WaferLLM multiply
    # QK^T and the scores by V as separate ops
    kernel = TT_METAL_ATTENTION if "tt_transformers" in code or galaxy else "unfused"
    tp_2d = None if wafer else _tp_2d(case)
    dtype = "fp16" if wafer else "bf16"
    fidelity = () if wafer else tuple(sorted(TENSTORRENT_FIDELITY.items()))
    if scenario.get("prefill_len") is None and scenario.get("context_len") is None:
        raise CannotExpressError(
            "scenario gives no prefill_len (nor context_len): the prompt a TTFT prefills and "
            "the KV length a decode step reads"
        )
    # a context given as text ('4096 (the demo default)') gives its first word
    context = str(scenario.get("context_len", "0")).split() or [""]
    from_context = not scenario.get("prefill_len") and scenario.get("context_len") is not None
    prompt = positive_count(
        scenario.get("prefill_len") or context[0],
        "context_len" if from_context else "prefill_len",
    )
    decode_kv = _decode_kv_len(scenario, prompt)
    # The generated tokens matter only to an end-to-end row (t/s/u is the first decode step);
    # a text such as 'up to 200 (demo default)' gives its first number.
    output = 2
    if "e2e_tpr_tokens_per_s" in measured:
        text = str(scenario.get("output_len", ""))
        first = re.search(r"\d+", text)
        output = max(positive_count(first.group(0) if first else text, "output_len"), 2)
    if output > MAX_STEPS:
        raise CannotExpressError(f"output_len {output}: more than {MAX_STEPS} decode steps")
    model = case_model(case, max(prompt, decode_kv) + output + 1)
    mlp, down = tt_metal_mlp_formats(code, mlp, model.is_moe)
    ops_per_layer = _demo_ops_per_layer(code, model.is_moe) + _demo_mesh_ops(
        code, tp_2d, model.hidden_size, model.is_moe
    )
    chunk = TT_TRANSFORMERS_PREFILL_CHUNK_TOKENS if "tt_transformers" in code else 0
    if model.is_moe and scenario.get("cores") is not None:
        raise CannotExpressError(
            "a mixture of experts in WaferLLM's set-up: its programs run dense layers only"
        )

    def inference(requests: int, output_len: int, prompt_len: int = prompt) -> InferenceSpec:
        return InferenceSpec(
            prompt_len=prompt_len,
            output_len=output_len,
            batch=requests,
            dtype=dtype,
            weight_dtype=attn,
            kv_dtype=kv,
            mlp_weight_dtype=mlp,
            mlp_down_weight_dtype=down,
            math_fidelity=fidelity,
            ops_per_layer=ops_per_layer,
            prefill_ops_per_layer=_demo_prefill_ops_per_layer(code),
            trace=trace,
            weight_prefetch=weight_prefetch,
            kv_placement=kv_placement,
            prefill_weight_readers=readers,
            prefill_compute_cores=prefill_compute_cores(code),
            decode_readers_per_bank=per_bank,
            **attention,
            prefill_chunk_tokens=chunk,
            attention_kernel=kernel,
            prefill_attention_2d=galaxy_prefill_attention(case, prompt, batch)
            if galaxy
            else "split",
            prefill_attention_split=tt_metal_attention_split(case)
            if kernel == TT_METAL_ATTENTION
            else "even",
            logits_to_host=_demo_logits_to_host(code),
            prefill_reduce_dtypes=prefill_reduce_dtypes(code),
            residual_split=residual_split(code, tp_2d, model.hidden_size),
            # WaferLLM's programs multiply Q, K, V, gate and up apart (prefill.csl)
            fused_projections=not (wafer and scenario.get("cores") is not None),
        )

    def simulate(
        requests: int, output_len: int, phase: str, prompt_len: int = prompt
    ) -> dict[str, Any]:
        if wafer:
            # WaferLLM's rows state their cores; a case without runs a layer pipeline
            grid, spec = grids[phase], inference(requests, output_len, prompt_len)
            if scenario.get("cores") is None:
                return _pipeline_simulate(
                    hw_path, grid, model, spec, user, prefill=phase == "prefill"
                )
            side = grid[0]
            if grid[1] != side:
                raise CannotExpressError(f"WaferLLM's programs run on P x P cores, not {grid}")
            # its sequence is padded as its dimensions are (waferllm_model)
            spec = dataclasses.replace(spec, prompt_len=_padded(spec.prompt_len, side))
            # a prefill's GEMMs each span the whole grid where the chip runs MeshGEMMs
            mesh = phase == "prefill" and hw.tile.mesh_gemm is not None
            regions = 1 if mesh else WAFER_REGIONS
            layer = dataclasses.replace(
                waferllm_model(model, side, regions),
                max_position_embeddings=spec.prompt_len + spec.output_len + 1,
            )
            return _wafer_simulate(
                hw_path, grid, layer, spec, pipeline=False, user=user, regions=regions
            )
        share = replica_share(requests)
        # a prefill run (its TTFT) takes the prefill's own hardware settings; a decode run's
        # step is the decode's
        overrides = [*ccl_overrides, *(prefill_overrides if phase == "prefill" else []), *user]
        spec = inference(share, output_len, prompt_len)
        return _simulate(hw_path, overrides, model, spec, mapping(share))

    def replica_share(requests: int) -> int:
        """The requests one data-parallel replica serves; one request runs on one replica.
        Inference replicas share nothing (each holds the whole model and its own users' KV
        cache), so palmsim simulates one of them on its pp x tp chips: the case may spread
        them over separate systems (two p150 cards, 'DP=2') that no config joins."""
        replicas = dp if requests > 1 else 1
        if requests % replicas:
            raise CannotExpressError(f"batch {requests} does not split over DP={dp}")
        return requests // replicas

    def mapping(requests: int) -> MappingSpec:
        """A replica's requests in one micro-batch (a decode step of its share of the batch)."""
        return MappingSpec(pp=pp, tp=tp, dp=1, micro_batch_size=requests, tp_2d=tp_2d)

    out: list[tuple[str, float, float]] = []
    wants_prefill = {"ttft_ms", "ttft_ms_per_user", "prefill_tpr_tokens_per_s"} & set(measured)
    wants_decode = {
        "tokens_per_s_per_user",
        "tokens_per_s",
        "decode_ms_per_token",
        "decode_tpr_tokens_per_s",
    } & set(measured)
    if wants_prefill:
        # TTFT: one user's prefill (tt-metal's TTFT is per user; WaferLLM's batch is 1).
        s = simulate(1, 1, "prefill")
        ttft_ms = s["ttft_s"] * 1e3
        for metric in ("ttft_ms", "ttft_ms_per_user"):
            if _number(measured.get(metric)):
                out.append((metric, float(measured[metric]), ttft_ms))
        if _number(measured.get("prefill_tpr_tokens_per_s")):
            out.append(
                (
                    "prefill_tpr_tokens_per_s",
                    float(measured["prefill_tpr_tokens_per_s"]),
                    prompt / s["ttft_s"],
                )
            )
    if wants_decode:
        # The first decode step of the batch after a prompt of the KV length the case measured
        # it at (t/s/u = 1 / its latency): the prompt's own unless it says otherwise.
        s = simulate(batch, 2, "decode", decode_kv)
        tpot = s["tpot_s"]
        figures = {
            "tokens_per_s_per_user": 1.0 / tpot,
            "tokens_per_s": batch / tpot,
            "decode_ms_per_token": tpot * 1e3,
            "decode_tpr_tokens_per_s": 1.0 / tpot,
        }
        out += [
            (metric, float(measured[metric]), value)
            for metric, value in figures.items()
            if _number(measured.get(metric))
        ]
    if _number(measured.get("e2e_tpr_tokens_per_s")):
        # WaferLLM Table 2: decode tokens generated / (prefill + decode time), one request,
        # each phase on its own cores (WaferLLM Sec. 4.4: the KV cache and weights are
        # reshuffled between them over the NoC, "completing instantly").
        ttft_s = simulate(1, 1, "prefill")["ttft_s"]
        tpot_s = simulate(1, output, "decode")["tpot_s"]
        total_s = ttft_s + (output - 1) * tpot_s
        out.append(
            ("e2e_tpr_tokens_per_s", float(measured["e2e_tpr_tokens_per_s"]), output / total_s)
        )
    if not out:
        raise CannotExpressError(
            f"none of its measured figures ({', '.join(measured)}) is predicted"
        )
    return out


def _stated_decode_kv(scenario: Mapping[str, Any]) -> tuple[str, Any, int | None] | None:
    """``(key, value, count)`` of the KV length a row states its decode figures at:
    ``kv_len_at_measurement``, else a ``context_len`` given beside ``prefill_len`` (a decode at
    a longer context than the TTFT's prompt); ``count`` is the value read as a count (which
    may carry its words, '1024 (after 896 generated tokens)', :func:`positive_count`), None
    where no count reads from it ('prefill_len + 1'). None where the row states neither."""
    if scenario.get("kv_len_at_measurement") is not None:
        key, value = "kv_len_at_measurement", scenario["kv_len_at_measurement"]
    elif scenario.get("prefill_len") and scenario.get("context_len") is not None:
        key, value = "context_len", scenario["context_len"]
    else:
        return None
    try:
        return key, value, positive_count(value, f"scenario.{key}")
    except CannotExpressError:
        return key, value, None


def _decode_kv_len(scenario: Mapping[str, Any], prompt: int) -> int:
    """The KV length a row's decode figures were measured at (:func:`_stated_decode_kv`), else
    the prompt (t/s/u at the first token after it), as for a length no count reads from
    (:func:`substitutions` marks it)."""
    stated = _stated_decode_kv(scenario)
    return prompt if stated is None or stated[2] is None else stated[2]


def _first(scenario: Mapping[str, Any], keys: tuple[str, ...], default: Any = None) -> Any:
    for key in keys:
        if scenario.get(key) is not None:
            return scenario[key]
    if default is None:
        raise CannotExpressError(f"scenario gives none of {', '.join(keys)}")
    return default


def _training(
    case: Mapping[str, Any], hw_path: str, user: Sequence[str]
) -> list[tuple[str, float, float]]:
    """A training row: one iteration simulated with the case's model, batch, sequence length
    and parallelism; ``samples_per_s`` and ``tokens_per_s`` are its throughput."""
    from palmsim.api import simulate, summarize_result

    hardware = load_hardware(hw_path, user)
    scenario, measured = case["scenario"], case["measured"]
    pp, tp, dp = _parallelism(case)
    seq = positive_count(
        _first(scenario, ("seq_len", "sequence_length", "seq_length", "prefill_len")), "seq_len"
    )
    batch = positive_count(
        _first(scenario, ("global_batch_size", "global_batch", "batch")), "batch"
    )
    mbs = positive_count(_first(scenario, ("micro_batch_size", "micro_batch"), 1), "micro_batch")
    if batch > MAX_STEPS * mbs * dp:
        raise CannotExpressError(f"batch {batch}: more than {MAX_STEPS} micro-batches per replica")
    words = re.findall(r"(fp32|fp16|bf16|bfloat16|float16)", str(scenario).lower())
    dtype = {"bfloat16": "bf16", "float16": "fp16"}.get(words[0], words[0]) if words else "bf16"
    recompute = str(scenario.get("activation_recompute", "none")).lower()
    workload = WorkloadSpec(
        model=case_model(case, seq),
        training=TrainingSpec(seq_len=seq, global_batch_size=batch, dtype=dtype),
        mode="training",
    )
    mapping = MappingSpec(
        pp=pp,
        tp=tp,
        dp=dp,
        micro_batch_size=mbs,
        recompute=recompute if recompute in ("none", "selective", "full") else "none",
    )
    experiment = ExperimentSpec(
        hardware, workload, mapping, load_run(user), (("hardware", hw_path), ("workload", "case"))
    )
    try:
        result = simulate(experiment)
    except MappingError as error:
        if hardware.wafer is None or hardware.dram.capacity_bytes > 0:
            raise
        # a model whose training state the wafer's SRAM cannot hold
        raise CannotExpressError(
            f"{error}; Cerebras trains such a model in weight-streaming mode, its weights and "
            "optimizer state in the MemoryX store and streamed to the wafer layer by layer "
            "over SwarmX (tiles_hw_specs.yaml cerebras_wse2/wse3.external_memory), which "
            "palmsim does not model"
        ) from None
    summary = summarize_result(result)
    figures = {
        "samples_per_s": summary["throughput_samples_per_s"],
        "tokens_per_s": summary["throughput_tokens_per_s"],
    }
    out = [(m, float(measured[m]), v) for m, v in figures.items() if _number(measured.get(m))]
    if not out:
        raise CannotExpressError(
            f"none of its measured figures ({', '.join(measured)}) is predicted"
        )
    return out


# ----------------------------------------------------------------------------- dispatch


#: Other names of a case's ``model`` fields: Hugging Face's config.json names and Megatron's,
#: read as the case format's own (:func:`_normalized`).
_MODEL_KEY_ALIASES = {
    "hidden_size": "hidden",
    "num_hidden_layers": "layers",
    "num_layers": "layers",
    "n_layers": "layers",
    "num_attention_heads": "heads",
    "n_heads": "heads",
    "num_key_value_heads": "kv_heads",
    "num_kv_heads": "kv_heads",
    "n_kv_heads": "kv_heads",
    "num_query_groups": "kv_heads",
    "intermediate_size": "ffn",
    "ffn_hidden_size": "ffn",
    "vocab_size": "vocab",
    "tie_word_embeddings": "tied_embeddings",
    "hidden_act": "act",
}


#: Other names of an inference row's ``measured`` figures, as serving benchmarks and papers
#: write them, with the factor to the case format's own unit (a figure the row also gives
#: under the format's name is compared under that one alone).
_MEASURED_KEY_ALIASES: dict[str, tuple[str, float]] = {
    "ttft_s": ("ttft_ms", 1e3),
    "time_to_first_token_ms": ("ttft_ms", 1.0),
    "tpot_ms": ("decode_ms_per_token", 1.0),
    "tpot_s": ("decode_ms_per_token", 1e3),
    "itl_ms": ("decode_ms_per_token", 1.0),
    "inter_token_latency_ms": ("decode_ms_per_token", 1.0),
    "ms_per_token": ("decode_ms_per_token", 1.0),
    "t_s_u": ("tokens_per_s_per_user", 1.0),
    "tokens_per_second_per_user": ("tokens_per_s_per_user", 1.0),
    "tokens_per_sec_per_user": ("tokens_per_s_per_user", 1.0),
    "tokens_per_second": ("tokens_per_s", 1.0),
    "tokens_per_sec": ("tokens_per_s", 1.0),
}


def _measured_number(value: Any) -> Any:
    """A measured figure written as text ("26.0", "1,234") as its number; anything else
    (a number, a range such as '239-260', a note) as it is."""
    if isinstance(value, str):
        text = re.sub(r"[\s,]", "", value)
        if re.fullmatch(r"[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
            return float(text)
    return value


#: Other names of an inference row's ``scenario`` fields, as serving benchmarks write them
#: (input and output sequence lengths, the batch), read as the case format's own.
_SCENARIO_KEY_ALIASES = {
    "isl": "prefill_len",
    "input_len": "prefill_len",
    "input_length": "prefill_len",
    "input_tokens": "prefill_len",
    "prompt_len": "prefill_len",
    "prompt_length": "prefill_len",
    "osl": "output_len",
    "output_length": "output_len",
    "output_tokens": "output_len",
    "batch_size": "batch",
    "context_length": "context_len",
    "kv_len": "context_len",
}


def _normalized(case: Mapping[str, Any]) -> Mapping[str, Any]:
    """``case`` with its ``model`` and ``scenario`` fields under the case format's names
    (:data:`_MODEL_KEY_ALIASES`, :data:`_SCENARIO_KEY_ALIASES`) and its ``measured`` figures
    written as text read as numbers.

    Raises:
        CannotExpressError: a section that is not a mapping of fields, or a field given under
            two names with different values.
    """
    hardware = case.get("hardware")
    sections = [(name, case.get(name)) for name in ("hardware", "model", "scenario", "measured")]
    if isinstance(hardware, Mapping):
        sections.append(("hardware.system", hardware.get("system")))
    for name, value in sections:
        if value is not None and not isinstance(value, Mapping):
            raise CannotExpressError(f"{name}: got {value!r}; expected a mapping of fields")
    # a section left empty (null) is one with no fields
    out = {k: {} if v is None and k in ("model", "scenario") else v for k, v in case.items()}
    for section, aliases in (("model", _MODEL_KEY_ALIASES), ("scenario", _SCENARIO_KEY_ALIASES)):
        given = case.get(section)
        if isinstance(given, Mapping):
            fields: dict[str, Any] = {}
            for key, value in given.items():
                name = aliases.get(str(key).lower(), str(key))
                if name in fields and fields[name] != value:
                    raise CannotExpressError(
                        f"{section}.{name} is given twice, as {fields[name]!r} and {value!r}"
                    )
                fields[name] = value
            out[section] = fields
    measured = case.get("measured")
    if isinstance(measured, Mapping):
        figures = {k: _measured_number(v) for k, v in measured.items()}
        for key, value in list(figures.items()):
            alias = _MEASURED_KEY_ALIASES.get(str(key).lower())
            if alias is not None and alias[0] not in figures:
                number = _number(value)
                figures[alias[0]] = number * alias[1] if number is not None else value
        out["measured"] = figures
    return out


#: The ``--set`` sections a tiled-system case takes: its model, inference and mapping come
#: from its own fields, so only the hardware and the run settings can be changed.
CASE_OVERRIDE_SECTIONS = ("hw", "run")


def predict(
    case: Mapping[str, Any], overrides: Sequence[str] = ()
) -> list[tuple[str, float, float]]:
    """``(metric, measured, predicted)`` for each figure of ``case`` palmsim predicts
    (its fields read as :func:`_normalized` says), with ``overrides`` (``--set`` strings of
    :data:`CASE_OVERRIDE_SECTIONS`) applied after the case's own settings.

    Raises:
        CannotExpressError: the case needs something palmsim does not model, its fields are
            malformed or an override is of another section; the message says which. Never any
            other exception for a bad case.
        ConfigError: an override the case's config refuses (the command line's mistake:
            ``validate`` blames it on that ``--set``, its problems' ``override``).
    """
    other = outside_sections(overrides, CASE_OVERRIDE_SECTIONS)
    if other:
        raise CannotExpressError(
            f"--set {other[0]}: a tiled-system case takes its model, inference and mapping "
            "from its own fields; only hw.* and run.* apply"
        )
    try:
        load_run(overrides)  # a run setting is checked for every case, not only those it reaches
        case = _normalized(case)
        figures = _predict(case, tuple(overrides))
    except (CannotExpressError, ConfigError):
        raise
    except PalmsimError as error:  # e.g. MappingError: weights do not fit
        raise CannotExpressError(f"{type(error).__name__}: {error}") from None
    except (LookupError, TypeError, ValueError, AttributeError, ArithmeticError) as error:
        raise CannotExpressError(f"malformed case ({type(error).__name__}: {error})") from None
    if not figures:
        measured = ", ".join(str(k) for k in case["measured"])
        raise CannotExpressError(f"none of its measured figures ({measured}) is predicted")
    return figures


def _microbenchmark(
    case: Mapping[str, Any],
) -> Callable[[Mapping[str, Any], HardwareSpec], list[tuple[str, float, float]]] | None:
    """The predictor of ``case`` if it measures a single operator or a collective (a GEMM:
    ``model`` gives M, K and N; otherwise by its ``scenario.phase``), None for an end-to-end
    run (an inference or training row)."""
    model = case.get("model") or {}
    if all(d in model for d in ("M", "K", "N")):
        return _gemm
    phase = str((case.get("scenario") or {}).get("phase", "")).lower()
    predictors = (
        ("memory microbenchmark", _dram_read),
        ("host read microbenchmark", _host_read),
        ("attention microbenchmark", _attention),
        ("collective", _allreduce),
        ("gemv", _gemv),
    )
    return next((predictor for words, predictor in predictors if words in phase), None)


def figure_kind(case: Mapping[str, Any]) -> str:
    """``microbenchmark`` for a case that measures a single operator or a collective,
    ``end_to_end`` for an inference or training row: issue 14's two kinds of figure, held to
    different errors and only the first fitted by ``palmsim calibrate --tiles``."""
    try:
        return "end_to_end" if _microbenchmark(_normalized(case)) is None else "microbenchmark"
    except (CannotExpressError, LookupError, TypeError, ValueError, AttributeError):
        return "end_to_end"


def _predict(case: Mapping[str, Any], user: Sequence[str]) -> list[tuple[str, float, float]]:
    """The figures of ``case`` by its kind (see the module docstring), with the ``--set``
    overrides ``user`` applied last."""
    hw_path = _hardware_path(case)
    model = case.get("model") or {}
    scenario = case.get("scenario") or {}
    phase = str(scenario.get("phase", "")).lower()
    if not isinstance(case.get("measured"), Mapping):
        raise CannotExpressError("no 'measured' figures")
    microbenchmark = _microbenchmark(case)
    if microbenchmark is not None:
        return microbenchmark(case, load_hardware(hw_path, user))
    if "hidden" in model and "layers" in model:
        if "train" in phase or "samples_per_s" in case["measured"]:
            return _training(case, hw_path, user)
        return _inference(case, hw_path, user)
    raise CannotExpressError(f"a case of phase {phase!r} without a model palmsim knows")


# ----------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class TileFit:
    """One fitted number of a tiled chip's config, with the cases it came from.

    ``key`` is the config key (``tile.format_efficiency.bf16``, ``dram.bandwidth``,
    ``system.link.bandwidth``), ``value`` in SI units, ``errors`` the relative error of the
    fitted model on each case.
    """

    key: str
    value: float
    dimension: str
    cases: tuple[str, ...]
    errors: tuple[float, ...]


def _fit_inverse(scale: list[float], offset: list[float], measured: list[float]) -> float:
    """The ``x`` minimising sum((offset_i + scale_i * x) / measured_i - 1)^2 (closed form);
    the caller fits only a group of cases with a positive scale."""
    assert any(scale), "no case to fit"
    a = [sc / m for sc, m in zip(scale, measured, strict=True)]
    b = [1 - o / m for o, m in zip(offset, measured, strict=True)]
    return sum(ai * bi for ai, bi in zip(a, b, strict=True)) / sum(ai * ai for ai in a)


def _fit_collective(
    columns: list[list[float]],
    measured: list[float],
    rates: tuple[int, ...] = (2,),
    offsets: list[float] | None = None,
) -> list[float] | None:
    """The coefficients ``c`` minimising sum((o_i + sum_j c_j columns[j][i]) / measured_i -
    1)^2 (``offsets`` o, known terms; none by default) with every ``c_j >= 0`` and ``c_j > 0``
    for ``j`` in ``rates`` (the inverse bandwidths: always free), by weighted least squares:
    the best of the fits with the other coefficients free or bound at 0; or None where the
    cases cannot separate them (fewer cases than coefficients, or columns alike).
    Collectives: the columns are a case's calls (startups), steps, reduce-scatter steps,
    bytes a link direction (on lines, then on rings, where they are apart) and bytes it
    reduce-scatters (:func:`calibrate_tiles`)."""
    m = np.asarray(measured, dtype=float)
    weighted = (np.asarray(columns, dtype=float) / m).T
    target = np.ones_like(m) - (np.asarray(offsets, dtype=float) / m if offsets else 0.0)
    k = weighted.shape[1]
    if len(m) < k or np.linalg.matrix_rank(weighted) < k:
        return None
    others = [j for j in range(k) if j not in rates]
    best: tuple[float, list[float]] | None = None
    for size in range(len(others), -1, -1):
        for bound in itertools.combinations(others, len(others) - size):
            free = [j for j in range(k) if j not in bound]
            solution = np.zeros(k)
            solution[free] = np.linalg.lstsq(weighted[:, free], target, rcond=None)[0]
            if solution.min() < 0 or min(solution[list(rates)]) <= 0:
                continue
            residual = float(np.sum((weighted @ solution - target) ** 2))
            if best is None or residual < best[0]:
                best = (residual, [float(v) for v in solution])
    return best[1] if best else None


def _fit_host_dispatch(untraced_s: list[float], traced_s: list[float]) -> float:
    """The host's dispatch time ``h`` of one untraced op, from GEMMs timed without and with
    trace: untraced back to back, the host issues each op while the device runs the one
    before, so an op takes the later of the two, ``untraced = max(h, traced)`` (the traced
    time is the device's alone). ``h`` minimises sum(max(h, t_i) / u_i - 1)^2: on each
    interval between sorted traced times the ops slower than ``h`` on the device drop out
    and the rest give the closed form sum(1/u) / sum(1/u^2), clipped to the interval."""
    bounds = sorted({0.0, *traced_s, max(untraced_s)})

    def cost(h: float) -> float:
        return sum((max(h, t) / u - 1) ** 2 for u, t in zip(untraced_s, traced_s, strict=True))

    best = bounds[0]
    for lo, hi in itertools.pairwise(bounds):
        host_bound = [u for u, t in zip(untraced_s, traced_s, strict=True) if t <= lo]
        if not host_bound:
            continue
        h = sum(1 / u for u in host_bound) / sum(1 / u**2 for u in host_bound)
        h = min(max(h, lo), hi)
        if cost(h) < cost(best):
            best = h
    return best


def _fit_latency(t_peak: list[float], t_one: list[float], measured: list[float]) -> float:
    """The ``a`` of the ``(a, q)`` minimising sum((a + t_peak_i + t_one_i * q) / measured_i -
    1)^2 (weighted least squares)."""
    m = np.asarray(measured, dtype=float)
    columns = np.stack([np.ones_like(m), np.asarray(t_one, dtype=float)]) / m
    target = 1.0 - np.asarray(t_peak, dtype=float) / m
    return float(np.linalg.lstsq(columns.T, target, rcond=None)[0][0])


def _gemm_terms(case: Mapping[str, Any], hw: HardwareSpec) -> tuple[float, float]:
    """A GEMM case's math time on its core grid at its fidelity's peak and at one pass's
    (``t_peak``, ``t_1`` of :func:`calibrate_tiles`' GEMM model)."""
    model, scenario = case["model"], case["scenario"]
    dtype = _format(scenario.get("dtype"))
    rows, cols = _chip_grid(scenario.get("core_grid"), hw)
    m, k, n = (positive_count(model[d], f"GEMM {d}") for d in ("M", "K", "N"))
    flop = 2.0 * m * k * n
    peak = rows * cols * _core_peak(hw, dtype, scenario.get("math_fidelity"))
    return flop / peak, flop / (rows * cols * _core_peak(hw, dtype, None))


def calibrate_tiles(
    cases: list[Mapping[str, Any]], hw_path: str
) -> tuple[list[TileFit], list[tuple[str, str]]]:
    """Fit a tiled chip's achievable rates to its microbenchmarks in ``cases``.

    Only single-operator and collective cases whose ``hw_spec_ref`` maps to ``hw_path`` are
    used; end-to-end rows never are. Fits (each minimising the squared relative error of the
    model :func:`predict` uses):

    - ``tile.op_latency`` and the efficiency of one format together: the GEMMs of the format
      with most cases of at least two sizes, ``time = a + t_peak + t_1 (1 - e) / e`` with
      ``t_peak`` the math at the case's fidelity and ``t_1`` at one pass (the intercept a is
      the chip's op latency, shared by its other formats);
    - ``tile.format_efficiency.<format>`` (at one pass, :meth:`TileSpec.efficiency_for`):
      GEMMs of that format, the same model;
    - ``tile.attention_efficiency``: fused attention microbenchmarks (``phase: attention
      microbenchmark``), ``time = a + t_peak / e`` with ``t_peak`` their FLOP at the peak of
      their cores at their fidelity; ``tile.decode_attention_efficiency``: the same of those
      run in chunks under :data:`SDPA_LARGE_CHUNK_ROWS` query rows;
    - ``tile.host_read_bandwidth``: the host's reads of a device tensor (``phase: host read
      microbenchmark``, ``GBps``);
    - ``dram.bandwidth`` (per channel): DRAM read microbenchmarks, their bank-adjacent
      readers' rate; ``dram.interleaved_read_efficiency``: the same readers' rate at arbitrary
      places over it;
    - ``system.link.bandwidth``, with ``system.link.latency`` (a ring or line step) and
      ``system.collective_latency`` (the startup) where the cases span sizes and chip counts
      enough to separate them: collectives, ``time = startup + steps * latency +
      bytes_per_direction / B`` (the latencies of the config where they do not);
    - ``tile.host_dispatch``: out-of-box GEMMs (``scenario.matmul_config: auto``) timed
      without trace (``time_ns``) and with it (``traced_time_ns``), ``untraced = max(h,
      traced)`` (:func:`_fit_host_dispatch`); ``tile.host_dispatch_tuned``: the tuned GEMMs
      timed both ways, alike.

    - ``tile.mesh_gemm`` (its ``step``, ``per_k``, ``per_column`` and ``per_mac``): GEMMs
      on a chip that runs them as MeshGEMMs, ``time = P (step + Kt per_k + Kt Nt per_column
      + Mt Kt Nt per_mac)`` on their ``P x P`` cores (:func:`_fit_mesh_gemm`);

    - ``tile.auto_format_efficiency.<format>``: out-of-box GEMMs timed with trace (the
      device's time), the GEMM model above with the op latency above, their output's write
      after the math (:func:`_auto_output_bytes`) and their own efficiency.

    Out-of-box GEMMs run auto-selected program configs on DRAM-interleaved operands, not the
    tuned kernels whose efficiency the other GEMMs give, so they enter only the host-dispatch
    fit and their own efficiency's; a tuned GEMM timed both ways, its untraced time the
    host's, only the tuned one's.

    Returns the fits and the ``(case, reason)`` of every case of this hardware not used.
    """
    hw = load_hardware(hw_path)
    target = Path(hw_path).resolve()
    gemm: dict[str, list[tuple[str, float, float, float]]] = {}  # (case, t_peak, t_1, time)
    host: list[tuple[str, float, float]] = []  # out-of-box GEMMs: (case, untraced, traced)
    # out-of-box GEMMs' device times, by format: (case, t_peak, t_1, output write, time)
    auto: dict[str, list[tuple[str, float, float, float, float]]] = {}
    host_tuned: list[tuple[str, float, float]] = []  # tuned GEMMs timed both ways, the same
    dram: list[tuple[str, float]] = []  # (case, bank-adjacent read rate)
    interleaved: list[tuple[str, float]] = []  # (case, read rate at arbitrary places)
    host_read: list[tuple[str, float]] = []  # (case, the host's read rate of a device tensor)
    # (case, calls, steps, bytes a link direction, of them reduce-scattered, sources, time,
    # over a closed ring of chips, reduce-scatter steps)
    ccl: list[tuple[str, int, int, float, float, int, float, bool, int]] = []
    # (case, FLOP at peak, time), by chunk regime: large (False) and small (True) chunks
    attention: dict[bool, list[tuple[str, float, float]]] = {}
    # MeshGEMMs: (case, their terms (_mesh_gemm_terms), time)
    mesh_terms: list[tuple[str, list[int], float]] = []
    unused: list[tuple[str, str]] = []
    for i, case in enumerate(cases):
        if not isinstance(case, Mapping):  # named as palmsim validate names it
            unused.append((f"#{i}", f"got {value_repr(case)}; expected a mapping of case fields"))
            continue
        case_id = str(case.get("id", "?"))
        if not is_tile_case(case):
            continue
        try:
            case = _normalized(case)  # a section that is no mapping is named, as predict does
            if Path(_hardware_path(case)).resolve() != target:
                continue
            figures = case.get("measured")
            if not isinstance(figures, Mapping):
                raise CannotExpressError("no 'measured' figures")
            model, scenario = case.get("model") or {}, case.get("scenario") or {}
            phase = str(scenario.get("phase", "")).lower()
            # timed both ways: untraced (time_ns) and with trace (traced_time_ns)
            both = _untraced(scenario) and figures.get("traced_time_ns") is not None
            if all(d in model for d in ("M", "K", "N")) and _auto_config(scenario):
                if both:
                    traced_s = _measured(figures, "traced_time_ns") * 1e-9
                    host.append((case_id, _measured(figures, "time_ns") * 1e-9, traced_s))
                elif not _untraced(scenario) and figures.get("time_ns") is not None:
                    # a group gets a case only whole: a fit never sees an empty one
                    entry: tuple[str, float, float, float, float] = (
                        case_id,
                        *_gemm_terms(case, hw),
                        _auto_output_bytes(case) / _dram_bandwidth(hw),
                        _measured(figures, "time_ns") * 1e-9,
                    )
                    auto.setdefault(_format(scenario.get("dtype")), []).append(entry)
                else:
                    raise CannotExpressError(
                        "an out-of-box GEMM is fitted as a traced time_ns, or an untraced "
                        "time_ns with the same op's traced_time_ns"
                    )
            elif all(d in model for d in ("M", "K", "N")) and both:
                host_tuned.append(
                    (
                        case_id,
                        _measured(figures, "time_ns") * 1e-9,
                        _measured(figures, "traced_time_ns") * 1e-9,
                    )
                )
            elif all(d in model for d in ("M", "K", "N")) and (terms := _mesh_gemm_terms(case, hw)):
                flop = 2.0 * math.prod(positive_count(model[d], f"GEMM {d}") for d in "MKN")
                t_s = _measured_time_s(figures, "time_ns", 1e-9, _tflops_rate(flop))
                mesh_terms.append((case_id, terms, t_s))
            elif all(d in model for d in ("M", "K", "N")):
                peak_s, one_s = _gemm_terms(case, hw)
                flop = 2.0 * math.prod(positive_count(model[d], f"GEMM {d}") for d in "MKN")
                t_s = _measured_time_s(figures, "time_ns", 1e-9, _tflops_rate(flop))
                gemm.setdefault(_format(scenario.get("dtype")), []).append(
                    (case_id, peak_s, one_s, t_s)
                )
            elif "attention microbenchmark" in phase:
                flop, peak, _, split = _attention_terms(case, hw)
                t_s = _measured_time_s(figures, "time_ms", 1e-3, _tflops_rate(flop))
                work_s = flop * split / peak  # its busiest core's
                attention.setdefault(_small_chunks(case), []).append((case_id, work_s, t_s))
            elif "host read microbenchmark" in phase:
                host_read.append((case_id, _measured(figures, "GBps") * 1e9))
            elif "memory microbenchmark" in phase:
                # every figure of the case palmsim predicts, or none of them
                metrics = (*_DRAM_READ_ADJACENT, *_DRAM_READ_INTERLEAVED)
                read = [
                    (m, _measured(figures, m) * 1e9)
                    for m in figures
                    if m in metrics and figures[m] is not None
                ]
                _dram_read(case, hw)  # a chip with DRAM, a figure of it
                for metric, rate in read:
                    if metric in _DRAM_READ_INTERLEAVED:
                        interleaved.append((case_id, rate))
                    else:
                        dram.append((case_id, rate))
            elif "collective" in phase:
                n = positive_count(_system(case).get("chips"), "hardware.system.chips")
                if n < 2:
                    raise CannotExpressError("a collective over one chip uses no link")
                ring = "ring" in str(_system(case).get("topology", "")) and n > 2
                size = _positive(scenario.get("size_bytes"), "scenario.size_bytes")
                kind = _collective_kind(case)
                if kind == "alltoall":
                    raise CannotExpressError(
                        "an all-to-all is checked, not fitted: its busiest link's bytes depend "
                        "on the routes, and tt-metal's all-to-all keeps its own share of it"
                    )
                steps = RING_STEPS[kind](n)
                # bytes through one link a direction: the fitted bandwidth is a link's
                per_direction = steps / n * size / (2 if ring else 1) / _links_per_direction(case)
                reduced = {"reducescatter": 1.0, "allreduce": 0.5}.get(kind, 0.0) * per_direction
                assert hw.wafer is not None
                calls = 2 if kind == "allreduce" and hw.wafer.composite_all_reduce else 1
                t_s = _measured_time_s(figures, "time_us", 1e-6, _collective_rates(kind, n, size))
                # the steps whose latency it pays, and its reduce-scatter's
                hops, reduce_steps = collective_steps(kind, steps, ring_fabric=ring)
                # the pieces of n - 1 chips on its busiest flow: a line's end link, a ring's
                # every edge, either flow of two chips (RingShare.sources)
                ccl.append(
                    (
                        case_id,
                        calls,
                        hops,
                        per_direction,
                        reduced,
                        n - 1,
                        t_s,
                        ring,
                        reduce_steps,
                    )
                )
            elif "gemv" in phase:
                unused.append((case_id, "a GEMV: no parameter of it is fitted (spec rates)"))
            else:
                unused.append((case_id, "not a microbenchmark (end-to-end rows are never fitted)"))
        except (CannotExpressError, KeyError, TypeError, ValueError, ArithmeticError) as error:
            unused.append((case_id, str(error)))
    fits: list[TileFit] = []
    # A GEMM takes time = a + t_peak + t_1 * q: its math at the case's fidelity (t_peak),
    # then per tile product the time of unpacking and packing, the same at every fidelity:
    # q = (1 - e) / e times its math at one pass (t_1), e the format's efficiency at one
    # pass (TileSpec.efficiency_for). The op latency a: fitted with q over the GEMMs of one
    # format that has at least two of different sizes, the format with most cases; the
    # chip's other formats share it.
    latency_s, latency_format = 0.0, ""
    pairs = {d: r for d, r in gemm.items() if len({x[1] for x in r}) >= 2}
    if pairs:
        latency_format, rows_ = max(sorted(pairs.items()), key=lambda item: len(item[1]))
        latency_s = max(
            _fit_latency([r[1] for r in rows_], [r[2] for r in rows_], [r[3] for r in rows_]), 0.0
        )
    for dtype, rows_ in sorted(gemm.items()):
        ids = tuple(r[0] for r in rows_)
        t_peak = [r[1] for r in rows_]
        t_one = [r[2] for r in rows_]
        measured = [r[3] for r in rows_]
        q = _fit_inverse(t_one, [latency_s + tp for tp in t_peak], measured)
        errors = tuple(
            (latency_s + tp + t1 * q) / m - 1
            for tp, t1, m in zip(t_peak, t_one, measured, strict=True)
        )
        if dtype == latency_format:
            fits.append(TileFit("tile.op_latency", latency_s, "time", ids, errors))
        fits.append(TileFit(f"tile.format_efficiency.{dtype}", 1 / (1 + q), "ratio", ids, errors))
    # out-of-box GEMMs, the same model with the op latency above (else the config's), their
    # output's write after the math (_auto_output_bytes) and their own q: the efficiency
    # an auto-selected program config keeps
    a_s = latency_s if latency_format else hw.tile.op_latency_s
    for dtype, timed in sorted(auto.items()):
        known = [a_s + r[1] + r[3] for r in timed]
        t_one = [r[2] for r in timed]
        measured = [r[4] for r in timed]
        q = _fit_inverse(t_one, known, measured)
        errors = tuple(
            (k + t1 * q) / m - 1 for k, t1, m in zip(known, t_one, measured, strict=True)
        )
        ids = tuple(r[0] for r in timed)
        fits.append(
            TileFit(f"tile.auto_format_efficiency.{dtype}", 1 / (1 + q), "ratio", ids, errors)
        )
    for small, timed_ in sorted(attention.items()):
        # time = a + t_peak / e, a the op latency (fitted above, else the config's)
        a = latency_s if latency_format else hw.tile.op_latency_s
        t_peak = [t for _, t, _ in timed_]
        measured = [m for _, _, m in timed_]
        q = _fit_inverse(t_peak, [a] * len(timed_), measured)
        errors = tuple((a + tp * q) / m - 1 for tp, m in zip(t_peak, measured, strict=True))
        ids = tuple(c for c, _, _ in timed_)
        key = "tile.decode_attention_efficiency" if small else "tile.attention_efficiency"
        fits.append(TileFit(key, 1 / q, "ratio", ids, errors))
    if host:
        untraced = [u for _, u, _ in host]
        traced = [t for _, _, t in host]
        h = _fit_host_dispatch(untraced, traced)
        errors = tuple(max(h, t) / u - 1 for u, t in zip(untraced, traced, strict=True))
        fits.append(TileFit("tile.host_dispatch", h, "time", tuple(c for c, _, _ in host), errors))
    if host_tuned:
        untraced = [u for _, u, _ in host_tuned]
        traced = [t for _, _, t in host_tuned]
        h = _fit_host_dispatch(untraced, traced)
        errors = tuple(max(h, t) / u - 1 for u, t in zip(untraced, traced, strict=True))
        ids = tuple(c for c, _, _ in host_tuned)
        fits.append(TileFit("tile.host_dispatch_tuned", h, "time", ids, errors))
    if dram:
        rates = [r for _, r in dram]
        # The rate R minimising sum (R / r_i - 1)^2 over the measured read rates r_i.
        rate = sum(1 / r for r in rates) / sum(1 / r**2 for r in rates)
        # per channel of the file (a coarse unit merges the channels it holds)
        raw_dram = read_config_file(hw_path).get("dram") or {}
        channels = len(raw_dram.get("positions") or ()) or 1
        fits.append(
            TileFit(
                "dram.bandwidth",
                rate / channels,
                "bandwidth",
                tuple(c for c, _ in dram),
                tuple(rate / r - 1 for r in rates),
            )
        )
    if interleaved:
        # The share e of the bank-adjacent rate (fitted above, else the config's) minimising
        # sum (e R / r_i - 1)^2 over the rates r_i read at arbitrary places.
        adjacent = rate if dram else _dram_bandwidth(hw)
        measured_rates = [r for _, r in interleaved]
        e = sum(1 / r for r in measured_rates) / (adjacent * sum(1 / r**2 for r in measured_rates))
        fits.append(
            TileFit(
                "dram.interleaved_read_efficiency",
                e,
                "ratio",
                tuple(c for c, _ in interleaved),
                tuple(e * adjacent / r - 1 for r in measured_rates),
            )
        )
    if host_read:
        rates = [r for _, r in host_read]
        # the rate R minimising sum (R / r_i - 1)^2, as the DRAM bandwidth's
        h_rate = sum(1 / r for r in rates) / sum(1 / r**2 for r in rates)
        fits.append(
            TileFit(
                "tile.host_read_bandwidth",
                h_rate,
                "bandwidth",
                tuple(c for c, _ in host_read),
                tuple(h_rate / r - 1 for r in rates),
            )
        )
    if ccl:
        assert hw.wafer is not None
        fits += _fit_ccl(ccl, hw.wafer)
    if mesh_terms:
        fits += _fit_mesh_gemm(mesh_terms)
    kept = [f for f in fits if _physical(f)]
    unused += [
        (
            f.key,
            f"not fitted: its cases give {f.value:.4g}, outside {_RANGES[f.dimension][1]} "
            f"(a measurement faster than the config's peaks allow?): {', '.join(f.cases)}",
        )
        for f in fits
        if not _physical(f)
    ]
    return kept, unused


#: ``tile.mesh_gemm``'s costs in the order of :func:`_mesh_gemm_terms`' terms.
MESH_GEMM_KEYS = ("step", "per_k", "per_column", "per_mac")


def _fit_mesh_gemm(timed: list[tuple[str, list[int], float]]) -> list[TileFit]:
    """``tile.mesh_gemm``'s four costs from MeshGEMM microbenchmarks: the non-negative
    coefficients of their terms (:func:`_mesh_gemm_terms`) minimising the squared relative
    error of the time (:func:`_fit_collective`, a multiply-accumulate's always above zero);
    none where the cases cannot separate them."""
    columns = [[float(terms[j]) for _, terms, _ in timed] for j in range(len(MESH_GEMM_KEYS))]
    measured = [t for _, _, t in timed]
    solution = _fit_collective(columns, measured, rates=(len(MESH_GEMM_KEYS) - 1,))
    if solution is None:
        return []
    ids = tuple(c for c, _, _ in timed)
    errors = tuple(
        sum(c * x for c, x in zip(solution, terms, strict=True)) / t - 1 for _, terms, t in timed
    )
    return [
        TileFit(f"tile.mesh_gemm.{key}", value, "time", ids, errors)
        for key, value in zip(MESH_GEMM_KEYS, solution, strict=True)
    ]


#: The values a fitted number of each dimension can take, and their text: an efficiency is
#: a share of a peak, a rate is above zero and a time is not below it.
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "ratio": (lambda v: 0 < v <= 1, "(0, 1]"),
    "bandwidth": (lambda v: v > 0, "(0, inf)"),
    "time": (lambda v: v >= 0, "[0, inf)"),
}


def _physical(fit: TileFit) -> bool:
    """Whether ``fit.value`` is finite and in the range of its dimension (:data:`_RANGES`)."""
    check = _RANGES.get(fit.dimension, (lambda v: True, ""))[0]
    return math.isfinite(fit.value) and check(fit.value)


#: The smallest reduce-scatter step latency :func:`_fit_ccl` reports as fitted [s].
RS_STEP_ROUNDING_S = 1e-12


def _fit_ccl(
    ccl: list[tuple[str, int, int, float, float, int, float, bool, int]], wafer: WaferSpec
) -> list[TileFit]:
    """The chip-to-chip link's fits from collectives ``(case, calls, steps, bytes a link
    direction, of them reduce-scattered, sources, time, over a closed ring, reduce-scatter
    steps)`` (:func:`calibrate_tiles`).

    time = startup x calls + latency x steps + r x reduce-scatter steps + (bytes + stalls)
    / B, the step reductions and stalls those of
    :meth:`~palmsim.mapping.plan.Communicator.fixed_time_s` (an all-reduce's reduce-scatter
    half: half its steps and bytes): a reduce-scatter's bytes keep e of B, so the
    coefficient of the bytes it reduce-scatters is y = (1/e - 1) / B; the bytes it gathers,
    sent by ``sources`` chips each at i of B, take max(1, 1/(sources i)) / B; over a closed
    ring of chips every byte drains at f of B (ring fabric efficiency f: its bytes their own
    coefficient 1/(f B)), fitted where both rings and lines are among the cases and the
    rings run slower (else 1; the config's where the cases are all of one kind); so for each
    injection efficiency i on a grid of 0.001 the rest is linear; the best i is kept (1,
    none, unless a lower one fits better), where the cases tell the other parameters apart;
    else the config's (and r the config's where they cannot tell it)."""
    ids = tuple(c[0] for c in ccl)
    measured = [c[6] for c in ccl]
    calls = [float(c[1]) for c in ccl]
    steps = [float(c[2]) for c in ccl]
    reduced = [c[4] for c in ccl]
    # a reduce-scatter's steps: all of a reduce-scatter's, the first half of an all-reduce's
    rs_steps = [float(c[8]) for c in ccl]
    on_ring = [c[7] for c in ccl]
    stall = 1 / wafer.reduce_scatter_efficiency - 1  # the config's y B
    r_config = wafer.reduce_scatter_step_latency_s
    rs_offsets = [r_config * k for k in rs_steps]

    def drained(i: float) -> list[float]:
        """Each case's bytes a link direction, its gathered ones stretched at injection i."""
        return [r + (d - r) * max(1.0, 1 / (k * i)) for _, _, _, d, r, k, _, _, _ in ccl]

    def solve(split: bool, f: float) -> tuple[float, list[float], bool, bool, bool]:
        """(injection, [startup, step latency, reduce-scatter step, 1/B, 1/(f B), y],
        whether e, the latencies and r were fitted): rings at their own fitted rate where
        ``split``, else at ``f`` of the lines'."""

        def fit(i: float) -> tuple[list[float], bool, bool, bool]:
            d = drained(i)
            at_f = [v / f if g else v for v, g in zip(d, on_ring, strict=True)]
            if split:
                byte_columns = [
                    [0.0 if g else v for v, g in zip(d, on_ring, strict=True)],
                    [v if g else 0.0 for v, g in zip(d, on_ring, strict=True)],
                ]
            else:
                byte_columns = [at_f]
            rates = (3, 4) if split else (3,)
            # r with the rest, or the config's where the cases cannot tell it
            for with_r in (True, False):
                columns = [calls, steps, *([rs_steps] if with_r else []), *byte_columns, reduced]
                fitted = _fit_collective(
                    columns,
                    measured,
                    rates if with_r else tuple(j - 1 for j in rates),
                    None if with_r else rs_offsets,
                )
                if fitted is None:
                    continue
                if not with_r:
                    fitted.insert(2, r_config)
                if not split:
                    fitted.insert(4, fitted[3] / f)
                return fitted, True, True, with_r
            # the cases cannot tell a reduce-scatter's rate or steps (or a ring's): the
            # config's
            merged = [v + r * stall for v, r in zip(at_f, reduced, strict=True)]
            three = _fit_collective([calls, steps, merged], measured, offsets=rs_offsets)
            if three is not None:
                startup_s, step_s, x = three
                return [startup_s, step_s, r_config, x, x / f, x * stall], False, True, False
            # the bandwidth alone, with the config's latencies and stalls
            startup_s, step_s = wafer.collective_latency_s, wafer.inter_die.latency_s
            offsets = [
                startup_s * a + k * step_s + o
                for a, k, o in zip(calls, steps, rs_offsets, strict=True)
            ]
            x = _fit_inverse(merged, offsets, measured)
            return [startup_s, step_s, r_config, x, x / f, x * stall], False, False, False

        # the injection efficiency is fitted with the rest, where the cases tell all apart,
        # else it is the config's
        injection = wafer.injection_efficiency
        if fit(injection)[1]:
            best: tuple[float, float] | None = None
            for thousandths in range(1000, 49, -1):  # i = 1.000, 0.999, ..., 0.050
                i = thousandths / 1000
                coefficients, separated, _, _ = fit(i)
                residual = sum(e * e for e in errors_at(i, coefficients))
                # a lower cap must fit better by more than rounding: 1e-9 in the sum of
                # squared relative errors, an rms of 3e-5 over a case (measurements agree
                # far less)
                if separated and (best is None or residual < best[0] - 1e-9):
                    best = (residual, i)
            injection = best[1] if best else injection
        return (injection, *fit(injection))

    def errors_at(i: float, coefficients: list[float]) -> tuple[float, ...]:
        startup_s, latency_s, rs_s, x, x_ring, y = coefficients
        return tuple(
            (startup_s * a + k * latency_s + q * rs_s + d * (x_ring if g else x) + r * y) / m - 1
            for a, k, q, d, r, m, g in zip(
                calls, steps, rs_steps, drained(i), reduced, measured, on_ring, strict=True
            )
        )

    # f is fitted where rings and lines both are and the rings run slower; else the config's
    split = any(on_ring) and not all(on_ring)
    injection, coefficients, fits_efficiency, fitted_latencies, fitted_r = solve(
        split, wafer.ring_fabric_efficiency
    )
    if split and coefficients[3] / coefficients[4] >= 1 - 1e-6:
        injection, coefficients, fits_efficiency, fitted_latencies, fitted_r = solve(False, 1.0)
        split = False
    startup_s, latency_s, rs_s, x, x_ring, y = coefficients
    errors = errors_at(injection, coefficients)
    fits = []
    if fitted_latencies:
        fits.append(TileFit("system.collective_latency", startup_s, "time", ids, errors))
        fits.append(TileFit("system.link.latency", latency_s, "time", ids, errors))
    fits.append(TileFit("system.link.bandwidth", 1 / x, "bandwidth", ids, errors))
    if fits_efficiency:
        fits.append(TileFit("system.reduce_scatter_efficiency", x / (x + y), "ratio", ids, errors))
    # a step latency under a picosecond (a thousandth of these chips' clock cycles) is the
    # solver's rounding of none (6e-19 s seen with numpy 2.4), not a latency
    if fitted_r and rs_s > RS_STEP_ROUNDING_S:
        fits.append(TileFit("system.reduce_scatter_step_latency", rs_s, "time", ids, errors))
    if fits_efficiency and injection < 1:
        fits.append(TileFit("system.injection_efficiency", injection, "ratio", ids, errors))
    if fits_efficiency and split:
        fits.append(TileFit("system.ring_fabric_efficiency", x / x_ring, "ratio", ids, errors))
    return fits


def format_tile_calibration(fits: list[TileFit], unused: list[tuple[str, str]]) -> str:
    """The fitted numbers, each with its cases and errors, to paste into the config; numbers
    fitted together (the same cases and errors as the line before) say so instead of
    repeating them, and a fit to more than two cases gives its mean and largest |error|."""
    lines = []
    previous: tuple[tuple[str, ...], tuple[float, ...]] | None = None
    for fit in fits:
        value = (
            f"{fit.value:.4g}"
            if fit.dimension == "ratio"
            else format_quantity(fit.value, fit.dimension)
        )
        together = (tuple(fit.cases), tuple(fit.errors))
        if together == previous:
            lines.append(f"{fit.key}: {value}  # fitted with the line above")
            continue
        previous = together
        errors = ", ".join(
            f"{case} {100 * e:+.1f}%" for case, e in zip(fit.cases, fit.errors, strict=True)
        )
        summary = ""
        if len(fit.errors) > 2:
            worst = max(abs(e) for e in fit.errors)
            mean = sum(abs(e) for e in fit.errors) / len(fit.errors)
            summary = (
                f"{len(fit.errors)} cases, mean |error| {100 * mean:.1f}%, "
                f"largest {100 * worst:.1f}%: "
            )
        lines.append(f"{fit.key}: {value}  # fitted to {summary}{errors}")
    lines += [f"not used: {case}: {why}" for case, why in unused]
    return "\n".join(lines)

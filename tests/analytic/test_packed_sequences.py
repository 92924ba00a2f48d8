"""Sequence packing and low-precision optimizer state (issue 15) against hand-derived counts.

- Packing (the THD layout with ``cu_seqlens``): ``s/L`` documents of ``L`` tokens share a
  sequence and each attends only within itself, so a causal core computes
  ``(s/L)·L(L+1)/2 = s(L+1)/2`` query-key pairs instead of ``s(s+1)/2``.
- Optimizer state: Adam's two moments at ``m`` bytes each plus, in mixed precision, a master
  copy of ``p`` bytes: ``2m + p`` per parameter (ZeRO, Rajbhandari et al. SC20, Sec. 3.1, at
  m = p = 4: 12 B); NeMo's distributed Adam with ``optim.dtype: bf16`` and fp8 weights keeps
  both in bf16, 6 B.
"""

from __future__ import annotations

import pytest

from palmsim.config.loader import load_workload
from palmsim.config.specs import TrainingSpec
from palmsim.errors import MappingError
from palmsim.mapping.memory import optimizer_state_bytes_per_param
from palmsim.workload.builders import layer_blocks, model_flop_per_iteration
from palmsim.workload.ops import attended_pairs, fused_attention_cost


def _model(name):
    return load_workload(f"workloads/{name}.yaml")[0].model


def test_packed_documents_pairs_match_enumeration():
    """Queries see keys of their own document only (causal: at or before themselves)."""
    for s, doc in ((12, 4), (16, 16), (30, 5), (8, 1)):
        same = [(i, j) for i in range(s) for j in range(s) if i // doc == j // doc]
        causal = sum(1 for i, j in same if j <= i)
        assert attended_pairs(s, s, causal=True, document=doc) == causal == s * (doc + 1) / 2
        assert attended_pairs(s, s, causal=False, document=doc) == len(same) == s * doc
    # a document as long as the sequence (or longer) is the one-sequence case
    assert attended_pairs(16, 16, causal=True, document=64) == 16 * 17 / 2


def test_packed_documents_with_a_sliding_window():
    """A window inside each document: the band of one document, ``s/L`` times."""
    s, doc, w = 24, 8, 3
    enumerated = sum(
        1 for i in range(s) for j in range(s) if i // doc == j // doc and i - w < j <= i
    )
    assert attended_pairs(s, s, causal=True, window=w, document=doc) == enumerated


def test_packed_fused_core_flop_and_bytes():
    """Forward ``4·B·d·s(L+1)/2`` FLOP (QKᵀ and attention over V, d = d_v); the bytes are the
    unpacked kernel's, since every key and value is still read once."""
    s, doc, batch_heads, d = 4096, 128, 32, 128
    packed = fused_attention_cost(batch_heads, s, s, d, causal=True, document=doc, dtype_bytes=2)
    whole = fused_attention_cost(batch_heads, s, s, d, causal=True, dtype_bytes=2)
    assert packed.flop_fwd == pytest.approx(4 * batch_heads * d * s * (doc + 1) / 2, rel=1e-12)
    assert packed.flop_bwd == pytest.approx(2.5 * packed.flop_fwd, rel=1e-12)
    assert packed.bytes_fwd == whole.bytes_fwd and packed.bytes_bwd == whole.bytes_bwd


def test_a_packed_layer_attends_per_document():
    """Llama 2 7B (32 heads of 128) at s = 4096 packed with L = 120: the layer's fused core
    and its model FLOP count the documents' pairs, ``s(L+1)/2`` per head."""
    m = _model("llama2-7b")
    s, doc = 4096, 120
    training = TrainingSpec(
        seq_len=s, global_batch_size=4, attention_kernel="flash2", packed_document_tokens=doc
    )
    core = layer_blocks(m, training, 1, 1)[0].op("attention")
    pairs = s * (doc + 1) / 2
    assert core.flop_fwd == pytest.approx(4 * 32 * 128 * pairs, rel=1e-12)
    assert core.model_flop_fwd == pytest.approx(4 * 32 * 128 * pairs, rel=1e-12)
    # the model FLOP of an iteration: 3 x the forward, the core's full s x s products
    # (Narayanan et al. SC21's convention) replaced by the documents' pairs, in 32 layers
    batch = 4
    whole = TrainingSpec(seq_len=s, global_batch_size=batch, attention_kernel="flash2")
    saved = model_flop_per_iteration(m, whole) - model_flop_per_iteration(m, training)
    expected = 3 * batch * 32 * 4 * 32 * 128 * (s * s - pairs)
    assert saved == pytest.approx(expected, rel=1e-9)


def test_packing_needs_a_fused_kernel_and_no_context_parallelism():
    m = _model("llama2-7b")
    unfused = TrainingSpec(seq_len=4096, global_batch_size=1, packed_document_tokens=120)
    with pytest.raises(MappingError, match="fused attention kernel"):
        layer_blocks(m, unfused, 1, 1)
    fused = TrainingSpec(
        seq_len=4096, global_batch_size=1, attention_kernel="fused", packed_document_tokens=120
    )
    with pytest.raises(MappingError, match="context parallelism"):
        layer_blocks(m, fused, 1, 1, cp=2)


def test_a_document_as_long_as_the_sequence_is_the_whole_row():
    """One document per row (L = s, as MLPerf's packed GovReport rows) is ordinary causal
    attention: the same core as without packing, and context parallelism runs."""
    m = _model("llama2-7b")
    plain = TrainingSpec(seq_len=4096, global_batch_size=1, attention_kernel="fused")
    for doc in (4096, 8192):
        whole = TrainingSpec(
            seq_len=4096, global_batch_size=1, attention_kernel="fused", packed_document_tokens=doc
        )
        core = layer_blocks(m, whole, 1, 1, cp=2)[0].op("attention")
        assert core.flop_fwd == layer_blocks(m, plain, 1, 1, cp=2)[0].op("attention").flop_fwd


def test_optimizer_state_bytes_by_dtype():
    assert optimizer_state_bytes_per_param("adam", "bf16") == 2 * 4 + 4
    assert optimizer_state_bytes_per_param("adam", "fp8", "bf16", "bf16") == 2 * 2 + 2
    assert optimizer_state_bytes_per_param("adam", "bf16", "bf16", "none") == 2 * 2
    assert optimizer_state_bytes_per_param("adam", "bf16", "bf16", "fp32") == 2 * 2 + 4
    assert optimizer_state_bytes_per_param("sgd", "bf16", "fp16") == 2 + 4
    # full precision keeps no master copy whatever its dtype says
    assert optimizer_state_bytes_per_param("adam", "fp32", "fp32", "bf16") == 8


def test_the_new_training_keys_load(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: x\nmodel: {hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 2,\n"
        "  vocab_size: 10, max_position_embeddings: 32, hidden_act: silu}\n"
        "training: {seq_len: 32, global_batch_size: 1, packed_document_tokens: 8,\n"
        "  optimizer_state_dtype: bf16, master_weights_dtype: none}\n"
    )
    training = load_workload(path)[0].training
    assert training.packed_document_tokens == 8
    assert (training.optimizer_state_dtype, training.master_weights_dtype) == ("bf16", "none")

"""Lowering passes on their own: typed step identity and the compiled engine policy."""

from __future__ import annotations

from palmsim.config.specs import MappingSpec
from palmsim.mapping.lower import Unit, engine_policy, tp_collective
from palmsim.mapping.plan import CollectiveKind, GradReduce


def test_a_unit_builds_the_label_and_the_op_key_from_typed_identity() -> None:
    assert Unit("L3", 3, ()).ident("attn", "ar") == ("L3.attn.ar", "L.attn.ar")
    assert Unit("embed", -1, ()).ident("embed") == ("embed.embed", "embed.embed")
    assert Unit("L5", 5, (), "D7", "D").ident("kv") == ("D7.L5.kv", "D.L.kv")
    assert Unit("head", -1, (), "P", "P").ident() == ("P.head", "P.head")


def test_sequence_parallelism_turns_an_all_reduce_into_reduce_scatter_and_all_gather() -> None:
    """Each carries the all-reduce's S (Korthikanti et al. 2023, Sec. 4.2.2), the layer and
    block as fields; one rank or no bytes: no collective."""
    unit = Unit("L2", 2, ())
    rs, ag = tp_collective(CollectiveKind.ALLREDUCE, 8.0, unit, "mlp", tp=4, sequence_parallel=True)
    assert (rs.kind, ag.kind) == (CollectiveKind.REDUCESCATTER, CollectiveKind.ALLGATHER)
    assert (rs.label, ag.label, rs.op) == ("L2.mlp.rs", "L2.mlp.ag", "L.mlp.rs")
    assert (rs.size_bytes, rs.layer, rs.block) == (8.0, 2, "mlp")
    assert (
        tp_collective(CollectiveKind.ALLREDUCE, 8.0, unit, "mlp", tp=1, sequence_parallel=False)
        == ()
    )
    assert (
        tp_collective(CollectiveKind.ALLREDUCE, 0.0, unit, "mlp", tp=4, sequence_parallel=False)
        == ()
    )


def test_engine_policy_compiles_the_options() -> None:
    """p2p_overlap false: sends block; ZeRO-2/3 reduce every backward; else dp_overlap
    decides between reducing during the last backward and after it."""
    assert engine_policy(MappingSpec(), zero=0) == (False, GradReduce.OVERLAP_BACKWARD)
    assert engine_policy(MappingSpec(p2p_overlap=False, dp_overlap=False), zero=1) == (
        True,
        GradReduce.AFTER_BACKWARD,
    )
    assert engine_policy(MappingSpec(dp_overlap=False), zero=2) == (
        False,
        GradReduce.EVERY_BACKWARD,
    )
